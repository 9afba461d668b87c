"""prepare: prompt pools in, meta/train/eval prompt sets out.

    load_pool     read the source (the micro world, reasoning-gym tasks, a local
                  file, a `datasets` dataset) into one frame of raw rows; rows that cannot be used
                  as read (not UTF-8, bad JSON, a prompt that is not a string, a
                  bad id) are kept and marked with the reason
    prepare_pool  normalise, quarantine empty and over-long prompts, deduplicate
                  by a content hash, split by that hash into meta/train/eval, and
                  decontaminate: drop from meta/train every prompt that shares a
                  word n-gram with an eval prompt

Normalising keeps a prompt's lines: Unicode NFC, CRLF/CR -> LF, the prompt
stripped, trailing whitespace cut from each line, at most one blank line in a
row; indentation and inner spaces stay. Deduplication and the content-hash id
compare the whitespace-collapsed text (`collapse`), so "a  b" and "a\\nb" are one
prompt; of its copies the one with the smallest id is kept, whatever their order.
A row's id is the pool's own (`id_field`, a string or an integer) where it has
one, else the content hash.

Each row names its task family in `task` and keeps what the family's verifier
needs in `metadata` (`honing.tasks`): "micro" rows come from the micro world,
"reasoning_gym:<task>" rows from the gym (the item as JSON), and rows of files
and `datasets` are "reference" rows, checked against their answer.

The split is decided per prompt: u = sha256("<seed>:<content hash>") / 2**256
falls in meta, train or eval by the cumulative `split` fractions. Adding rows
never moves an existing row between splits, and as every split is written sorted
by id, reordering a pool changes no byte of meta/train/eval (the quarantine keeps
the pool's order: its reasons name lines). With `eval_source`, eval is that pool
and meta/train share the main pool by their renormalised fractions.

Every input row ends up in exactly one place, and the metrics say where:
    rows_in + eval_rows_in = quarantined + duplicates + decontaminated + meta + train + eval
(`eval_rows_in` only with `eval_source`). An empty pool, or one with no usable
row, is an error: nothing would be left to train or evaluate on.

Decontamination with `decontaminate_ngram: 0` matches exact prompts only. The
micro world needs that: its prompts come from a few templates and share 8-grams
by chance (with 1,000 eval prompts, 8-gram decontamination drops about 40 % of
meta and train), so its preset sets 0 explicitly.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from honing.artifacts.io import POOL_SUFFIXES, PoolRecord, pool_text, read_hf_pool, read_pool
from honing.artifacts.validation import ArtifactError, quarantine_frame, row_json, split_valid
from honing.tasks import micro, reasoning_gym

SPLITS = ("meta", "train", "eval")
PROMPT_COLUMNS = ["id", "prompt", "reference", "answer", "task", "metadata", "source", "split"]  # schemas.prompts

# load_pool's frame: one row per source record, usable or not
POOL_COLUMNS = {
    "pool": pl.String,  # "main", or "eval" for rows of `eval_source`
    "source": pl.String,  # provenance: "micro", a path, "hf:<name>:<split>"
    "where": pl.String,  # "line 7", "row 6", "problem 12": for people
    "id": pl.String,  # the pool's own id (`id_field`), else null
    "prompt": pl.String,
    "answer": pl.String,
    "reference": pl.String,
    "task": pl.String,  # the task family, e.g. "micro", "reasoning_gym:chain_sum"
    "metadata": pl.String,  # what its verifier needs, as JSON text, or null
    "row": pl.String,  # the record as JSON text (or its raw line)
    "problem": pl.String,  # why the row cannot be used (a metrics key), else null
    "reason": pl.String,  # ... in words
    "column": pl.String,  # ... and the field at fault
}


@dataclass(frozen=True)
class PrepareConfig:
    """How to build the prompt sets (params.yaml `prepare:`).

    source: "micro" (generate the micro world), "reasoning_gym" (the tasks of the
        `reasoning_gym` block, mixed by weight) or "reasoning_gym:<task>" (one),
        a local .jsonl/.json/.parquet/.csv file, or "hf:<name>[:<split>]" /
        "hf:<name>:<config>:<split>" for `datasets` (a Hub name; a local folder of
        data files, or one written by `save_to_disk`; a local data file).
    prompt_field / answer_field / reference_field: the source's field names.
        The prompt must be a string; answer and reference may be absent (null),
        and numbers there become their text (GSM8K-style int answers).
    id_field: the source's id field; where a row has it, it is the row's id (a
        string, or an integer as its decimal text), and ids must be unique.
    seed: salts the split hash (and generates the micro world).
    split: fractions of prompts per split {meta, train, eval}; each >= 0, summing
        to 1. Which split a prompt goes to depends on its content and the seed only.
    micro_problems: how many distinct problems the micro world generates.
    max_prompt_chars: longer prompts (after normalising) are quarantined.
    eval_source: a separate evaluation pool (same forms as source); then
        eval is all of it and meta/train split the source.
    decontaminate_ngram: n for word n-gram decontamination against eval;
        0 matches exact (normalised, case-folded) prompts only.
    min_steps / max_steps: micro-world problem length.
    reasoning_gym: {size: items drawn, tasks: {<task>: {weight: w, <the task's
        config fields>...}}}; items are seeded by `seed` (the eval pool's by seed + 1).
    """

    source: str = "micro"
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    reference_field: str = "reference"
    id_field: str = "id"
    seed: int = 0
    split: Mapping[str, float] = field(default_factory=lambda: {"meta": 0.25, "train": 0.5, "eval": 0.25})
    micro_problems: int = 4000
    max_prompt_chars: int = 8000
    eval_source: str | None = None
    decontaminate_ngram: int = 8
    min_steps: int = 2
    max_steps: int = 4
    reasoning_gym: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name, low in (("micro_problems", 1), ("max_prompt_chars", 1), ("decontaminate_ngram", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        object.__setattr__(self, "split", _fractions(self.split, self.eval_source is not None))
        gym = self.reasoning_gym
        if not isinstance(gym, Mapping) or set(gym) - {"size", "tasks"}:
            raise ValueError(f"reasoning_gym must be a block with keys size and tasks, got {gym!r}")
        if not isinstance(gym.get("tasks") or {}, Mapping):
            raise ValueError(f"reasoning_gym.tasks must map task names to options, got {gym['tasks']!r}")


def _fractions(split: Any, eval_source: bool) -> dict[str, float]:
    """`split` checked and completed: every split named, a missing one is 0."""
    if not isinstance(split, Mapping):
        raise ValueError(f"split must map meta, train and eval to fractions, got {split!r}")
    unknown = sorted(map(str, set(split) - set(SPLITS)))
    if unknown:
        raise ValueError(f"split: unknown split(s) {', '.join(unknown)}; expected meta, train, eval")
    out = {}
    for name in SPLITS:
        value = split.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"split.{name} must be a fraction >= 0, got {value!r}")
        out[name] = float(value)
    if abs(sum(out.values()) - 1) > 1e-6:
        shown = ", ".join(f"{k} {v:g}" for k, v in out.items())
        raise ValueError(f"split fractions must sum to 1, got {sum(out.values()):g} ({shown})")
    if eval_source and out["meta"] + out["train"] == 0:
        raise ValueError("split: with eval_source, meta + train must be above 0 (eval is all of eval_source)")
    return out


@dataclass
class Prepared:
    meta: pl.DataFrame
    train: pl.DataFrame
    eval: pl.DataFrame
    quarantine: pl.DataFrame  # schemas.quarantine.Quarantine rows
    metrics: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- text


def normalize(text: str) -> str:
    """NFC, LF line breaks, stripped, no trailing spaces on a line, at most one blank
    line in a row. Indentation and spaces inside a line are kept."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n")).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def collapse(text: str) -> str:
    """Every run of whitespace (line breaks too) as one space: what deduplication compares."""
    return " ".join(text.split())


def stable_id(text: str) -> str:
    """A prompt's content hash: sha256 of its NFC, whitespace-collapsed text, 16 hex chars."""
    return hashlib.sha256(collapse(unicodedata.normalize("NFC", text)).encode("utf-8")).hexdigest()[:16]


def split_of(content_hash: str, seed: int, fractions: Mapping[str, float]) -> str:
    """The split of a prompt: its hash with the seed as a number in [0, 1), placed
    against the cumulative fractions (only splits with a share above 0 count)."""
    u = int(hashlib.sha256(f"{seed}:{content_hash}".encode()).hexdigest(), 16) / 2**256
    names = [name for name, share in fractions.items() if share > 0]
    total, edge = sum(fractions[name] for name in names), 0.0
    for name in names[:-1]:
        edge += fractions[name] / total
        if u < edge:
            return name
    return names[-1]


def words(text: str) -> tuple[str, ...]:
    """Case-folded word tokens, punctuation dropped: what decontamination compares."""
    return tuple(re.findall(r"\w+", text.lower()))


def ngrams(tokens: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    return {tokens[i : i + n] for i in range(len(tokens) - n + 1)}


# ---------------------------------------------------------------- loading


def load_pool(cfg: PrepareConfig) -> pl.DataFrame:
    """The source's rows (pool "main") and, with `eval_source`, the evaluation pool's
    (pool "eval"), with columns POOL_COLUMNS. Prompts are raw text here; rows that
    cannot be used as read carry `problem`/`reason`/`column`."""
    rows = _load_source(cfg.source, cfg, "main")
    if cfg.eval_source:
        rows += _load_source(cfg.eval_source, cfg, "eval")
    return pl.DataFrame(rows, schema=POOL_COLUMNS)


def _load_source(source: str, cfg: PrepareConfig, pool: str) -> list[dict[str, Any]]:
    if source == "micro":
        return _micro_rows(cfg, pool)
    if source.partition(":")[0] == "reasoning_gym":
        return _gym_rows(source, cfg, pool)
    if source.startswith("hf:"):
        records = read_hf_pool(source)
    elif Path(source).suffix.lower() in POOL_SUFFIXES:
        records = read_pool(source)
    else:
        raise ArtifactError(f"{source}: unknown prompt source (expected 'micro', 'reasoning_gym[:<task>]', "
                            f"a file ending in {', '.join(POOL_SUFFIXES)}, or 'hf:<name>[:<split>]')")
    if not records:
        raise ArtifactError(f"{source}: the prompt pool is empty (0 rows read)")
    readable = [r.record for r in records if r.record is not None]
    if readable and not any(cfg.prompt_field in r for r in readable):
        fields = sorted({k for r in readable for k in r})
        raise ArtifactError(f"{source}: no field {cfg.prompt_field!r} in any row (fields: "
                            f"{', '.join(fields)}); set prepare.prompt_field")
    return [_pool_row(r, cfg, pool, source) for r in records]


def _pool_row(rec: PoolRecord, cfg: PrepareConfig, pool: str, source: str) -> dict[str, Any]:
    row = {"pool": pool, "source": source, "where": rec.where, "row": rec.raw, "id": None, "prompt": None,
           "answer": None, "reference": None, "task": "reference", "metadata": None, "problem": None,
           "reason": None, "column": None}
    if rec.record is None:
        return row | {"problem": rec.problem, "reason": f"{rec.error} ({rec.where})"}

    def bad(code: str, column: str, reason: str) -> dict[str, Any]:
        return row | {"problem": code, "column": column, "reason": f"{reason} ({rec.where})"}

    record = rec.record
    if cfg.id_field in record:
        value, name = record[cfg.id_field], cfg.id_field
        if isinstance(value, int) and not isinstance(value, bool):
            row["id"] = str(value)
        elif not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            return bad("bad_id", name, f"{name!r} is not a string or an integer: {kind}")
        elif not value.strip():
            return bad("bad_id", name, f"{name!r} is empty; found {value!r}")
        else:
            row["id"], problem = pool_text(value, name)
            if problem is not None:
                return bad(problem[0], name, problem[1])
    if cfg.prompt_field not in record:
        return bad("missing_field", cfg.prompt_field, f"missing field {cfg.prompt_field!r}")
    fields = {"prompt": cfg.prompt_field, "answer": cfg.answer_field, "reference": cfg.reference_field}
    for column, name in fields.items():
        value = record.get(name)
        if value is None:
            if column == "prompt":
                return bad("missing_prompt", name, f"{name!r} is null")
            continue
        # The prompt must be text as given; an answer or reference may be a number (72 -> "72").
        if column != "prompt" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        row[column], problem = pool_text(value, name)
        if problem is not None:
            return bad(problem[0], name, problem[1])
    return row


def _micro_rows(cfg: PrepareConfig, pool: str) -> list[dict[str, Any]]:
    """`micro_problems` distinct micro-world problems with their gold solution and
    answer. A larger count keeps the smaller count's problems (the same seeded draws)."""
    rng = random.Random(cfg.seed if pool == "main" else f"eval-{cfg.seed}")
    return [{"pool": pool, "source": "micro", "where": f"problem {k}", "id": None, **record,
             "task": "micro", "metadata": None, "row": row_json(record), "problem": None, "reason": None,
             "column": None}
            for k, record in enumerate(micro.problems(cfg.micro_problems, rng, cfg.min_steps, cfg.max_steps))]


def _gym_rows(source: str, cfg: PrepareConfig, pool: str) -> list[dict[str, Any]]:
    """`reasoning_gym.size` gym items: of the one task `source` names, or of every task in
    the `reasoning_gym` block, mixed by weight. Each keeps its entry in `metadata`."""
    block = cfg.reasoning_gym
    options = dict(block.get("tasks") or {})
    task = source.partition(":")[2]
    if task:
        reasoning_gym.check_task(task, f"prepare.source {source!r}")
        options = {task: options.get(task) or {}}
    seed = cfg.seed if pool == "main" else cfg.seed + 1  # the eval pool draws other items
    items = reasoning_gym.items(options, block.get("size", 1000), seed, where="prepare.reasoning_gym")
    return [{"pool": pool, "source": source, "where": f"item {k}", "id": None, **item, "reference": None,
             "row": item["metadata"], "problem": None, "reason": None, "column": None}
            for k, item in enumerate(items)]


# ---------------------------------------------------------------- preparing


def prepare(cfg: PrepareConfig, schema) -> Prepared:
    """load_pool, then prepare_pool; `schema` checks the finished prompt rows."""
    return prepare_pool(load_pool(cfg), cfg, schema)


def prepare_pool(pool: pl.DataFrame, cfg: PrepareConfig, schema) -> Prepared:
    """Normalise, quarantine, deduplicate, split, decontaminate (see the module doc)."""
    _check_unique_ids(pool.filter(pl.col("id").is_not_null()).iter_rows(named=True))
    reasons: dict[str, Counter[str]] = {"main": Counter(), "eval": Counter()}
    first_reason: dict[str, str] = {}
    quarantined: list[dict[str, Any]] = []

    def quarantine(row: dict[str, Any], code: str, reason: str, column: str | None) -> None:
        reasons[row["pool"]][code] += 1
        first_reason.setdefault(row["pool"], reason)
        quarantined.append({"source_file": row["source"], "row_id": row["id"], "column": column,
                            "reason": reason, "row": row["row"]})

    usable: dict[str, list[dict[str, Any]]] = {"main": [], "eval": []}
    for row in pool.iter_rows(named=True):
        if row["problem"] is not None:
            quarantine(row, row["problem"], row["reason"], row["column"])
            continue
        prompt = normalize(row["prompt"])
        if not prompt:
            quarantine(row, "empty_prompt", f"empty prompt after normalising ({row['where']}); "
                                            f"found {row['prompt']!r}", cfg.prompt_field)
            continue
        if len(prompt) > cfg.max_prompt_chars:
            quarantine(row, "prompt_too_long", f"prompt too long: {len(prompt)} characters after normalising, "
                                               f"limit max_prompt_chars {cfg.max_prompt_chars} ({row['where']})",
                       cfg.prompt_field)
            continue
        content = stable_id(prompt)
        usable[row["pool"]].append({
            "id": row["id"] or content, "hash": content, "prompt": prompt,
            "reference": _optional(row["reference"]), "answer": _optional(row["answer"]),
            "task": row["task"], "metadata": row["metadata"], "source": row["source"], "where": row["where"],
        })
    for name, source in (("main", cfg.source), ("eval", cfg.eval_source)):
        if source and not usable[name]:
            _no_usable_prompt(source, pool.filter(pl.col("pool") == name).height, reasons[name],
                              first_reason.get(name))

    main, main_duplicates = _dedupe(usable["main"])
    evals, eval_duplicates = _dedupe(usable["eval"])
    chosen: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    shares = {s: f for s, f in cfg.split.items() if s != "eval"} if cfg.eval_source else cfg.split
    for row in main:
        chosen[split_of(row["hash"], cfg.seed, shares)].append(row)
    chosen["eval"] += evals
    eval_prompts = [r["prompt"] for r in chosen["eval"]]
    chosen["meta"], dropped_meta = decontaminate(chosen["meta"], eval_prompts, cfg.decontaminate_ngram)
    chosen["train"], dropped_train = decontaminate(chosen["train"], eval_prompts, cfg.decontaminate_ngram)
    _check_unique_ids(r for s in SPLITS for r in chosen[s])  # a pool id equal to another row's hash

    frames, guard = {}, []
    for split in SPLITS:
        rows = sorted(chosen[split], key=lambda r: r["id"])  # the order of the pool leaves no trace
        frame = pl.DataFrame([{c: r.get(c) for c in PROMPT_COLUMNS} | {"split": split} for r in rows],
                             schema={c: pl.String for c in PROMPT_COLUMNS})
        frames[split], bad = split_valid(frame, schema, path=cfg.source)
        guard.append(bad)
    all_reasons = reasons["main"] + reasons["eval"]
    if sum(len(b) for b in guard):
        all_reasons["schema"] += sum(len(b) for b in guard)

    quarantine_df = pl.concat([quarantine_frame(quarantined), *guard])
    rows_in = pool.filter(pl.col("pool") == "main").height
    metrics: dict[str, Any] = {
        "rows_in": rows_in,
        "quarantined": quarantine_df.height,
        "quarantined_by_reason": dict(sorted(all_reasons.items())),
        "duplicates": main_duplicates + eval_duplicates,
        "decontaminated": dropped_meta + dropped_train,
        "decontaminate_ngram": cfg.decontaminate_ngram,
        **{split: frames[split].height for split in SPLITS},
    }
    if cfg.eval_source:
        metrics["eval_rows_in"] = pool.height - rows_in
    return Prepared(frames["meta"], frames["train"], frames["eval"], quarantine_df, metrics)


def _check_unique_ids(rows) -> None:
    """ArtifactError naming both rows of the first id that two rows share."""
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        other = first.setdefault(row["id"], row)
        if other is row:
            continue
        if other["source"] == row["source"]:
            raise ArtifactError(f"{row['source']}: duplicate id {row['id']!r} at {other['where']} and {row['where']}")
        raise ArtifactError(f"{row['source']}: duplicate id {row['id']!r} at {row['where']}, "
                            f"and at {other['where']} of {other['source']}")


def _no_usable_prompt(source: str, n: int, reasons: Counter[str], first: str | None) -> None:
    """Every row of a pool was quarantined (or there were none): say how many and why."""
    if not n:
        raise ArtifactError(f"{source}: the prompt pool is empty (0 rows read)")
    counts = ", ".join(f"{code} {k}" for code, k in sorted(reasons.items()))
    raise ArtifactError(f"{source}: no usable prompt: {n} row{'s' * (n != 1)} read, {n} quarantined "
                        f"({counts}); the first: {first}")


def _dedupe(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """(one row per content hash, how many copies were dropped). The copy kept is the
    one with the smallest id, then the one with an answer and a reference, then the
    smallest text: the choice does not depend on the order of the pool."""

    def rank(row: dict[str, Any]) -> tuple:
        return (row["id"], row["answer"] is None, row["reference"] is None,
                row["prompt"], row["answer"] or "", row["reference"] or "", row["task"], row["metadata"] or "")

    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["hash"] not in best or rank(row) < rank(best[row["hash"]]):
            best[row["hash"]] = row
    return list(best.values()), len(rows) - len(best)


def _optional(text: str | None) -> str | None:
    """Answers and references: stripped; blank is absent."""
    return text.strip() or None if text is not None else None


def decontaminate(rows: list[dict[str, Any]], eval_prompts: list[str], n: int) -> tuple[list[dict[str, Any]], int]:
    """(rows without eval overlap, how many were dropped). A row overlaps when its
    word tokens equal an eval prompt's or, for n > 0, share a word n-gram with one."""
    if not eval_prompts:
        return rows, 0
    exact = {words(p) for p in eval_prompts}
    grams: set[tuple[str, ...]] = set()
    if n > 0:
        for p in eval_prompts:
            grams |= ngrams(words(p), n)
    clean = []
    for row in rows:
        tokens = words(row["prompt"])
        if tokens in exact or (n > 0 and not grams.isdisjoint(ngrams(tokens, n))):
            continue
        clean.append(row)
    return clean, len(rows) - len(clean)
