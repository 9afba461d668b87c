"""prepare: prompt pools in, meta/train/eval prompt sets out.

    load_pool     read the source (the micro world, a local file, a `datasets`
                  dataset) into one frame of raw rows; rows that cannot be read
                  are kept and marked with the reason
    prepare_pool  normalise (strip, collapse whitespace), quarantine empty or
                  missing prompts, deduplicate by a stable content hash, split
                  with a seed into meta/train/eval, and decontaminate: drop
                  from meta/train every prompt that shares a word n-gram with
                  an eval prompt

Every input row ends up in exactly one place, and the metrics say where:
    rows_in = quarantined + duplicates + decontaminated + meta + train + eval + unused
(`unused`: rows the requested split sizes did not need).

Decontamination with `decontaminate_ngram: 0` matches exact prompts only. The
micro world needs that: its prompts come from a few templates and share 8-grams
by chance (with the default 1,000 eval prompts, 8-gram decontamination drops
about 40 % of meta and train), so its preset sets 0 explicitly.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from honing.artifacts.io import POOL_SUFFIXES, PoolRecord, read_pool
from honing.artifacts.validation import (
    ArtifactError,
    quarantine_frame,
    row_json,
    split_valid,
)
from honing.micro import world

SPLITS = ("meta", "train", "eval")
PROMPT_COLUMNS = ["id", "prompt", "reference", "answer", "source", "split"]  # schemas.prompts.Prompts

# load_pool's frame: one row per source record, readable or not
POOL_COLUMNS = {
    "pool": pl.String,  # "main", or "eval" for rows of `eval_source`
    "source": pl.String,  # provenance: "micro", a path, "hf:<name>:<split>"
    "where": pl.String,  # "line 7", "row 6", "problem 12": for people
    "prompt": pl.String,
    "answer": pl.String,
    "reference": pl.String,
    "row": pl.String,  # the record as JSON text (or its raw line)
    "problem": pl.String,  # why the row cannot be used (a metrics key), else null
    "reason": pl.String,  # ... in words
    "column": pl.String,  # ... and the field at fault
}


@dataclass(frozen=True)
class PrepareConfig:
    """How to build the prompt sets (params.yaml `prepare:`).

    source: "micro" (generate the micro world), a local .jsonl/.json/.parquet/.csv
        file, or "hf:<name>[:<split>]" / "hf:<name>:<config>:<split>" for
        `datasets` (a Hub name; a local folder of data files, or one written by
        `save_to_disk`; a local data file).
    prompt_field / answer_field / reference_field: the source's field names.
        Answer and reference may be absent (null); the prompt may not.
    seed: shuffles the split (and generates the micro world).
    n_meta / n_train / n_eval: rows wanted per split; scaled down in proportion
        when the pool is smaller.
    eval_source: a separate evaluation pool (same forms as source); then
        eval comes only from it and meta/train only from source.
    decontaminate_ngram: n for word n-gram decontamination against eval;
        0 matches exact (normalised, case-folded) prompts only.
    min_steps / max_steps: micro-world problem length.
    """

    source: str = "micro"
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    reference_field: str = "reference"
    seed: int = 0
    n_meta: int = 1000
    n_train: int = 3000
    n_eval: int = 1000
    eval_source: str | None = None
    decontaminate_ngram: int = 8
    min_steps: int = 2
    max_steps: int = 4

    def __post_init__(self):
        for name in ("n_meta", "n_train", "n_eval", "decontaminate_ngram"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")


@dataclass
class Prepared:
    meta: pl.DataFrame
    train: pl.DataFrame
    eval: pl.DataFrame
    quarantine: pl.DataFrame  # schemas.quarantine.Quarantine rows
    metrics: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- text


def normalize(text: str) -> str:
    """Strip and collapse every run of whitespace (newlines too) to one space."""
    return " ".join(text.split())


def stable_id(text: str) -> str:
    """The row id of a prompt: sha256 of its normalised text, 16 hex chars."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()[:16]


def words(text: str) -> tuple[str, ...]:
    """Case-folded word tokens, punctuation dropped: what decontamination compares."""
    return tuple(re.findall(r"\w+", text.lower()))


def ngrams(tokens: tuple[str, ...], n: int) -> set[tuple[str, ...]]:
    return {tokens[i : i + n] for i in range(len(tokens) - n + 1)}


# ---------------------------------------------------------------- loading


def load_pool(cfg: PrepareConfig) -> pl.DataFrame:
    """The source's rows (pool "main") and, with `eval_source`, the evaluation pool's
    (pool "eval"), with columns POOL_COLUMNS. Prompts are raw text here; rows that
    could not be read or lack a prompt carry `problem`/`reason`/`column`."""
    main_n = cfg.n_meta + cfg.n_train + (0 if cfg.eval_source else cfg.n_eval)
    rows = _load_source(cfg.source, cfg, "main", main_n)
    if cfg.eval_source:
        rows += _load_source(cfg.eval_source, cfg, "eval", cfg.n_eval)
    return pl.DataFrame(rows, schema=POOL_COLUMNS)


def _load_source(source: str, cfg: PrepareConfig, pool: str, n_micro: int) -> list[dict[str, Any]]:
    if source == "micro":
        return _micro_rows(cfg, pool, n_micro)
    if source.startswith("hf:"):
        records = _hf_records(source)
    elif Path(source).suffix.lower() in POOL_SUFFIXES:
        records = read_pool(source)
    else:
        raise ArtifactError(f"{source}: unknown prompt source (expected 'micro', a file ending in "
                            f"{', '.join(POOL_SUFFIXES)}, or 'hf:<name>[:<split>]')")
    readable = [r.record for r in records if r.record is not None]
    if readable and not any(cfg.prompt_field in r for r in readable):
        fields = sorted({k for r in readable for k in r})
        raise ArtifactError(f"{source}: no field {cfg.prompt_field!r} in any row (fields: "
                            f"{', '.join(fields)}); set prepare.prompt_field")
    return [_pool_row(r, cfg, pool, source) for r in records]


def _pool_row(rec: PoolRecord, cfg: PrepareConfig, pool: str, source: str) -> dict[str, Any]:
    row = {"pool": pool, "source": source, "where": rec.where, "row": rec.raw,
           "prompt": None, "answer": None, "reference": None,
           "problem": None, "reason": None, "column": None}
    if rec.record is None:
        code = "invalid_json" if rec.error and rec.error.startswith("invalid JSON") else "not_an_object"
        return row | {"problem": code, "reason": f"{rec.error} ({rec.where})"}
    fields = {"prompt": cfg.prompt_field, "answer": cfg.answer_field, "reference": cfg.reference_field}
    for column, name in fields.items():
        value = rec.record.get(name)
        if column == "prompt" and name not in rec.record:
            return row | {"problem": "missing_field", "column": name,
                          "reason": f"missing field {name!r} ({rec.where})"}
        if column == "prompt" and value is None:
            return row | {"problem": "missing_prompt", "column": name,
                          "reason": f"{name!r} is null ({rec.where})"}
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
            return row | {"problem": "not_text", "column": name,
                          "reason": f"{name!r} is not text: {type(value).__name__} ({rec.where})"}
        row[column] = None if value is None else str(value)
    return row


def _micro_rows(cfg: PrepareConfig, pool: str, n: int) -> list[dict[str, Any]]:
    """n distinct micro-world problems with their gold solution and answer."""
    rng = random.Random(cfg.seed if pool == "main" else f"eval-{cfg.seed}")
    seen, rows = set(), []
    for _ in range(50 * n + 1000):  # the world holds far more than any n asked of it
        if len(rows) == n:
            break
        problem = world.make_problem(rng, cfg.min_steps, cfg.max_steps)
        if problem.text in seen:
            continue
        seen.add(problem.text)
        record = {"prompt": problem.text, "answer": str(problem.answer),
                  "reference": world.gold_solution(problem)}
        rows.append({"pool": pool, "source": "micro", "where": f"problem {len(rows)}",
                     **record, "row": row_json(record), "problem": None, "reason": None, "column": None})
    return rows


HF_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _hf_records(spec: str) -> list[PoolRecord]:
    """Rows of a `datasets` dataset: "hf:<name>[:<split>]" or "hf:<name>:<config>:<split>".

    <name> is a Hub dataset, a local folder of data files (splits from file
    names, e.g. train-*.parquet), a folder written by `save_to_disk` (read with
    `load_from_disk`), or one local data file (loaded as `data_files`)."""
    import datasets  # slow to import: only when asked for

    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 3:
        raise ArtifactError(f"{spec}: expected 'hf:<name>[:<split>]' or 'hf:<name>:<config>:<split>'")
    name = parts[0]
    config = parts[1] if len(parts) == 3 else None
    split = parts[-1] if len(parts) > 1 else "train"
    if name in set(HF_BUILDERS.values()) | {"text", "arrow"}:
        # load_dataset("parquet") without data_files would read whatever is in the cwd
        raise ArtifactError(f"{spec}: name a folder or a data file, e.g. 'hf:data/pool.{name}'")
    local = Path(name)
    try:
        if local.is_dir() and any((local / f).exists() for f in ("state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ArtifactError(f"{spec}: no split {split!r} (have {', '.join(ds)})")
                ds = ds[split]
        elif local.is_file() and local.suffix.lower() in HF_BUILDERS:
            ds = datasets.load_dataset(HF_BUILDERS[local.suffix.lower()], data_files={split: str(local)},
                                       split=split)
        else:
            ds = datasets.load_dataset(name, config, split=split)
    except ArtifactError:
        raise
    except Exception as e:  # datasets raises many kinds; the stage should say one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{spec}: could not load the dataset ({type(e).__name__}: {first})") from e
    return [PoolRecord(f"row {i}", rec, row_json(rec)) for i, rec in enumerate(ds.to_list())]


# ---------------------------------------------------------------- preparing


def prepare(cfg: PrepareConfig, schema) -> Prepared:
    """load_pool, then prepare_pool; `schema` checks the finished prompt rows."""
    return prepare_pool(load_pool(cfg), cfg, schema)


def prepare_pool(pool: pl.DataFrame, cfg: PrepareConfig, schema) -> Prepared:
    """Normalise, quarantine, deduplicate, split, decontaminate (see the module doc)."""
    reasons: Counter[str] = Counter()
    quarantined: list[dict[str, Any]] = []

    def quarantine(row: dict[str, Any], code: str, reason: str, column: str | None) -> None:
        reasons[code] += 1
        quarantined.append({"source_file": row["source"], "row_id": None, "column": column,
                            "reason": reason, "row": row["row"]})

    kept: dict[str, list[dict[str, Any]]] = {"main": [], "eval": []}
    duplicates: Counter[str] = Counter()
    seen: dict[str, set[str]] = {"main": set(), "eval": set()}
    for row in pool.iter_rows(named=True):
        if row["problem"] is not None:
            quarantine(row, row["problem"], row["reason"], row["column"])
            continue
        prompt = normalize(row["prompt"])
        if not prompt:
            where = f" ({row['where']})" if row["where"] else ""
            quarantine(row, "empty_prompt", f"empty prompt after normalising{where}; "
                                            f"found {row['prompt']!r}", cfg.prompt_field)
            continue
        row_id = stable_id(prompt)
        if row_id in seen[row["pool"]]:
            duplicates[row["pool"]] += 1  # the first copy is kept
            continue
        seen[row["pool"]].add(row_id)
        kept[row["pool"]].append({
            "id": row_id,
            "prompt": prompt,
            "reference": _optional(row["reference"]),
            "answer": _optional(row["answer"]),
            "source": row["source"],
        })

    main, evals = kept["main"], kept["eval"]
    random.Random(cfg.seed).shuffle(main)
    random.Random(f"eval-{cfg.seed}").shuffle(evals)
    if cfg.eval_source:
        eval_rows, rest = evals[: cfg.n_eval], main
        unused = len(evals) - len(eval_rows)
    else:
        wanted = cfg.n_meta + cfg.n_train + cfg.n_eval
        n_eval = cfg.n_eval if len(main) >= wanted else cfg.n_eval * len(main) // max(wanted, 1)
        eval_rows, rest = main[:n_eval], main[n_eval:]
        unused = 0

    clean, dropped = decontaminate(rest, [r["prompt"] for r in eval_rows], cfg.decontaminate_ngram)
    n_meta, n_train = _sizes(len(clean), cfg.n_meta, cfg.n_train)
    meta_rows, train_rows = clean[:n_meta], clean[n_meta : n_meta + n_train]
    unused += len(clean) - n_meta - n_train

    frames = {}
    guard = []
    for split, rows in (("meta", meta_rows), ("train", train_rows), ("eval", eval_rows)):
        frame = pl.DataFrame([r | {"split": split} for r in rows],
                             schema={c: pl.String for c in PROMPT_COLUMNS})
        frames[split], bad = split_valid(frame, schema, path=cfg.source)
        guard.append(bad)
    if sum(len(b) for b in guard):
        reasons["schema"] += sum(len(b) for b in guard)

    quarantine_df = pl.concat([quarantine_frame(quarantined), *guard])
    rows_in = pool.filter(pl.col("pool") == "main").height
    metrics: dict[str, Any] = {
        "rows_in": rows_in,
        "quarantined": quarantine_df.height,
        "quarantined_by_reason": dict(sorted(reasons.items())),
        "duplicates": duplicates["main"] + duplicates["eval"],
        "decontaminated": dropped,
        "decontaminate_ngram": cfg.decontaminate_ngram,
        "unused": unused,
        **{split: frames[split].height for split in SPLITS},
    }
    if cfg.eval_source:
        metrics["eval_rows_in"] = pool.height - rows_in
    return Prepared(frames["meta"], frames["train"], frames["eval"], quarantine_df, metrics)


def _optional(text: str | None) -> str | None:
    """Answers and references: stripped; blank is absent."""
    return text.strip() or None if text is not None else None


def _sizes(available: int, n_meta: int, n_train: int) -> tuple[int, int]:
    """(meta, train) sizes: as asked, or scaled down in proportion when short."""
    if available >= n_meta + n_train:
        return n_meta, n_train
    meta = min(n_meta, round(available * n_meta / max(n_meta + n_train, 1)))
    return meta, min(n_train, available - meta)


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
