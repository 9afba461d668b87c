"""The self-critic's training records in each iteration: right feedback, balanced.

SELF keeps the meta-skill alive during self-evolution by training on feedback as
well as answers. Trained only on its own unchecked feedback, the critic falls
behind its policy: as answers get better, almost every record says "correct",
and what it says about the few wrong answers may itself be wrong. So, for the
answers an iteration produced (round 0 of refine, samples and greedy alike):

- right feedback only. `source: checker` takes the feedback of the task family's
  step checker (the strong critic, e.g. the micro world's rule oracle), right by
  construction; `source: verified` keeps the self-feedback whose verdict the rule
  check confirms (for families without a step checker), and where a checker
  exists, only self-feedback equal to the checker's;
- right and wrong answers in balanced proportion: every record of the rarer
  kind, and at most `balance` times as many of the other (chosen by a seeded
  hash of the answer's id, so the choice does not depend on row order);
- `noise_critiques` checks of balanced-noise answers (each step wrong with
  probability `noise_p_wrong`, independent of carries), as in the meta corpus,
  so the check itself stays sharp where the policy's own mistakes are rare.

`feedback_examples` does the first over a frame (the rule check as the family's
vectorized rule, the step checker once per distinct answer); `example_stream` all
three over a stream of frames, in flat memory (balancing spills to disk).
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from honing.artifacts.ahead import ordered_map
from honing.method.prompts import PromptSet
from honing.tasks.base import aligned

if TYPE_CHECKING:
    from honing.tasks.base import Tasks

SOURCES = ("verified", "checker")


@dataclass(frozen=True)
class CriticRecordsConfig:
    source: str = "verified"
    balance: float = 0.0  # at most this many records of the commoner kind per rarer one; 0: no balancing
    noise_critiques: int = 0
    noise_p_wrong: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"feedback source must be one of {', '.join(SOURCES)}, found {self.source!r}")
        if self.balance < 0 or self.noise_critiques < 0:
            raise ValueError("balance and noise_critiques must be >= 0")


@dataclass(frozen=True)
class FeedbackExample:
    """One (prompt, answer) -> feedback record, with whether the answer is right."""

    id: str
    prompt: str
    response: str
    feedback: str
    right_answer: bool


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


EXAMPLES = {"id": pl.String, "prompt": pl.String, "response": pl.String, "feedback": pl.String,
            "right_answer": pl.Boolean}


def feedback_examples(rows: pl.DataFrame, prompts: pl.DataFrame, cfg: CriticRecordsConfig, *,
                      tasks: Tasks) -> pl.DataFrame:
    """Right feedback on the iteration's own answers (`rows`: refine's round 0; `prompts`:
    their prompt rows), one row per FeedbackExample, in row order. The rule check is the
    family's vectorized rule; a family's step checker runs once per distinct answer."""
    read = tasks.rule_check(rows.get_column("response"), rows.get_column("prompt_id"), prompts)
    frame = rows.select("id", "prompt", "response", "feedback", "verdict").with_columns(
        right_answer=read.get_column("correct"), _family=read.get_column("family"))
    frame = frame.filter(pl.col("right_answer").is_not_null() & (pl.col("verdict") != "unparsed"))
    checked = [name for name in frame.get_column("_family").unique().sort().to_list()
               if tasks.families[name].check is not None]
    strong = pl.Series("_strong", [None] * frame.height, dtype=pl.String)
    for name in checked:  # a strong critic exists: right feedback is its feedback
        here = (frame.get_column("_family") == name).arg_true()
        pairs = frame[here].select("prompt", "response")
        distinct = pairs.unique(maintain_order=True)
        check = tasks.families[name].check
        texts = [check(prompt, response)[0] for prompt, response in distinct.iter_rows()]
        written = pairs.join(distinct.with_columns(_strong=pl.Series(texts, dtype=pl.String)),
                             on=["prompt", "response"], how="left", maintain_order="left")
        strong = strong.scatter(here, written.get_column("_strong"))
    frame = frame.with_columns(strong)
    by_checker = pl.col("_family").is_in(checked)
    agrees = pl.when(by_checker).then(pl.lit(cfg.source != "verified") | (pl.col("feedback") == pl.col("_strong")))
    agrees = agrees.otherwise((pl.col("verdict") == "correct") == pl.col("right_answer"))
    return frame.filter(agrees).select(
        "id", "prompt", "response",
        pl.when(by_checker).then(pl.col("_strong")).otherwise(pl.col("feedback")).alias("feedback"),
        "right_answer").cast(EXAMPLES)


def answer_feedback(rows: pl.DataFrame, prompts: Mapping[str, Mapping[str, Any]], cfg: CriticRecordsConfig,
                    *, tasks: Tasks) -> list[FeedbackExample]:
    """Right feedback on the iteration's own answers (`rows`: refine's round 0)."""
    frame = feedback_examples(rows, pl.DataFrame(list(prompts.values())), cfg, tasks=tasks)
    return [FeedbackExample(**row) for row in frame.iter_rows(named=True)]


def balanced(examples: list[FeedbackExample], balance: float, seed: int) -> list[FeedbackExample]:
    """All of the rarer kind (right or wrong answers), at most `balance` x as many of
    the other, picked by a seeded hash of the id; order as given."""
    if not balance:
        return examples
    right = [e for e in examples if e.right_answer]
    wrong = [e for e in examples if not e.right_answer]
    rare, common = (right, wrong) if len(right) <= len(wrong) else (wrong, right)
    keep = int(balance * len(rare))
    chosen = {e.id for e in sorted(common, key=lambda e: _rank(seed, e.id))[:keep]}
    return [e for e in examples if e in rare or e.id in chosen]


def noise_feedback(prompts: list[Mapping[str, Any]], cfg: CriticRecordsConfig, *,
                   tasks: Tasks) -> list[FeedbackExample]:
    """Checks of balanced-noise answers to the prompts (families with a checker and a
    noise writer), round-robin over the prompts."""
    usable = [p for p in prompts if _usable(p, tasks)]
    return _noise(usable, len(usable), cfg, tasks=tasks)


def _usable(prompt: Mapping[str, Any], tasks: Tasks) -> bool:
    return tasks.family(prompt).check is not None and tasks.noisy_answer(prompt) is not None


def _noise(usable: list[Mapping[str, Any]], count: int, cfg: CriticRecordsConfig, *,
           tasks: Tasks) -> list[FeedbackExample]:
    """`noise_feedback` from the first usable prompts (at least noise_critiques of
    them, or all) and how many there are in all."""
    if not count or not cfg.noise_critiques:
        return []
    rng = random.Random(cfg.seed)
    out = []
    for k in range(cfg.noise_critiques):
        p = usable[k % count]
        response = tasks.noisy_answer(p)(rng, cfg.noise_p_wrong)
        text, parsed = tasks.family(p).check(p["prompt"], response)
        out.append(FeedbackExample(f"{p['id']}:noise{k // count}", p["prompt"], response, text,
                                   parsed.verdict == "correct"))
    return out


def example_stream(chunks: Iterable[tuple[pl.DataFrame, pl.DataFrame]], cfg: CriticRecordsConfig, *,
                   tasks: Tasks) -> Iterator[pl.DataFrame]:
    """The self-critic's examples (EXAMPLES frames) over a stream of (round 0 rows of
    whole prompts, their prompt rows): right feedback on the answers, balanced, then
    the noise checks; what `critic_records` gives, a frame at a time. With `balance`,
    the examples wait in a spill folder until the count of each kind is known."""
    usable: list[Mapping[str, Any]] = []
    count = 0
    # `_usable` is a property of the family: its prompts are picked by task name, not row by row
    noisy = pl.Series([name for name, f in tasks.families.items() if f.check is not None and f.noisy_answer is not None],
                      dtype=pl.String)

    def noted() -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
        nonlocal count
        for round0, prompts in chunks:
            if cfg.noise_critiques and noisy.len():  # the prompts answered, in order, that noise checks can use
                answered = aligned(round0.get_column("prompt_id").unique(maintain_order=True), prompts)
                here = answered.filter(pl.col("task").str.extract(r"^([^:]*)", 1).is_in(noisy.implode()))
                count += here.height
                usable.extend(here.head(max(cfg.noise_critiques - len(usable), 0)).iter_rows(named=True))
            yield round0, prompts

    def examples() -> Iterator[pl.DataFrame]:  # two frames at a time (honing.artifacts.ahead), in order
        return ordered_map(lambda chunk: feedback_examples(*chunk, cfg, tasks=tasks), noted())

    yield from (_balanced_stream(examples(), cfg) if cfg.balance else examples())
    noise = _noise(usable, count, cfg, tasks=tasks)
    if noise:
        yield pl.DataFrame([vars(e) for e in noise], schema=EXAMPLES)


_BUCKET_BITS = 16  # a rank's top bits: the spill counts examples per bucket to find the keep-th smallest


def _buckets(seed: int, ids: pl.Series) -> np.ndarray:
    """Each id's rank bucket: the first _BUCKET_BITS bits of its `_rank` digest (the
    digests' first 2 bytes, read big-endian by numpy, not each hex digest parsed).
    hashlib holds the GIL: polars-hash's sha256 was faster but leaked its inputs
    (3 MB per 60 k ids with polars 2.2), and the peak grew with the pool."""
    assert _BUCKET_BITS <= 16  # the digest's first 2 bytes hold the bucket
    keys = pl.select(pl.concat_str(pl.lit(f"{seed}:"), pl.lit(ids, pl.String)).cast(pl.Binary)).to_series()
    sha256 = hashlib.sha256  # the keys as bytes from polars: no str to encode, no prefix to add, per id
    heads = b"".join([sha256(key).digest()[:2] for key in keys.to_list()])
    return (np.frombuffer(heads, dtype=">u2") >> (16 - _BUCKET_BITS)).astype(np.int64)


def _balanced_stream(frames: Iterable[pl.DataFrame], cfg: CriticRecordsConfig) -> Iterator[pl.DataFrame]:
    """`balanced` over a stream, in bounded memory: the examples are spilled (Arrow IPC,
    uncompressed: about 160 bytes per example here, in the system's temp folder;
    lz4 took a tenth of build_sft's CPU) while each kind is counted. Then only the
    commoner kind is ranked, file by file, and none of it when all of it is kept
    (hashlib holds the GIL: ranking every example as it came slowed the threads that
    make them): each rank's bucket (its first 16 bits) is counted and kept beside the
    spill, the bucket that holds the keep-th smallest rank follows from the counts,
    one look into it finds the rest, and the spill is read back in order."""
    with tempfile.TemporaryDirectory(prefix="honing-balance-") as folder:
        files, kinds = [], {True: 0, False: 0}
        for k, frame in enumerate(frames):
            right = int(frame.get_column("right_answer").sum())
            kinds[True] += right
            kinds[False] += frame.height - right
            files.append(Path(folder) / f"{k:08d}.arrow")
            frame.write_ipc(files[-1], compression="uncompressed")
        rare = kinds[True] <= kinds[False]  # the rarer kind: right answers on a tie
        keep = int(cfg.balance * kinds[rare])
        if keep >= kinds[not rare]:  # every example is kept
            for f in files:
                yield pl.read_ipc(f)
            return

        def common_ids(f: Path) -> pl.Series:
            return pl.read_ipc(f, columns=["id", "right_answer"]).filter(pl.col("right_answer") != rare).get_column("id")

        counts = np.zeros(1 << _BUCKET_BITS, dtype=np.int64)
        for f in files:
            buckets = _buckets(cfg.seed, common_ids(f))
            counts += np.bincount(buckets, minlength=1 << _BUCKET_BITS)
            np.save(f.with_suffix(".npy"), buckets.astype(np.uint16))
        below = np.cumsum(counts)
        cut = int(np.searchsorted(below, keep, side="right"))  # the bucket holding the keep-th smallest
        wanted = keep - (int(below[cut - 1]) if cut else 0)
        edge: set[str] = set()
        if wanted:
            # as Python strings file by file: a filtered frame's ids would keep each file's
            # whole id buffer mapped until the last file is read
            at_cut = [i for f in files for i in common_ids(f).filter(pl.Series(np.load(f.with_suffix(".npy")) == cut))
                      .to_list()]
            edge = set(sorted(at_cut, key=lambda i: _rank(cfg.seed, i))[:wanted])
        at_edge = pl.Series(sorted(edge), dtype=pl.String).implode()
        for f in files:
            frame = pl.read_ipc(f)
            common = (frame.get_column("right_answer") != rare).to_numpy()
            below_cut = np.zeros(frame.height, dtype=bool)
            below_cut[common] = np.load(f.with_suffix(".npy")) < cut
            yield frame.filter(~pl.Series(common) | pl.Series(below_cut) | pl.col("id").is_in(at_edge))


def critic_records(round0: pl.DataFrame, prompts: pl.DataFrame, templates: PromptSet, cfg: CriticRecordsConfig,
                   *, tasks: Tasks) -> list[tuple[str, str, str, str]]:
    """(record id, feedback prompt, feedback, source id) for the self-critic's SFT records."""
    out = []
    for frame in example_stream([(round0, prompts)], cfg, tasks=tasks):
        for e in frame.iter_rows(named=True):
            out.append((f"{e['id']}/feedback", templates.feedback(e["prompt"], e["response"]), e["feedback"],
                        e["id"]))
    return out
