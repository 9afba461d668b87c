"""The streaming path (`read_batches`, `write_batches`, and filter, build_sft and
build_pairs as `dvc repro` runs them) on artifacts of many batches.

Real pools reach it past BATCH_ROWS rows; here batches are a few dozen rows, so that
a few hundred rows cross many batch and row-group boundaries. Streamed, each stage
must write the bytes it writes when everything fits in one batch; a bad row or a
repeated id in a later batch must be an error naming it, with nothing written.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pytest
import yaml

import stages.build_pairs
import stages.build_sft
import stages.filter
from honing.artifacts import io
from honing.artifacts.validation import ArtifactError
from schemas.prompts import Prompts
from schemas.refinements import Refinements

ROOT = Path(__file__).resolve().parents[1]
IT = "it1"
ROW_GROUP = 16
SMALL = 64  # rows per batch: four row groups


@pytest.fixture
def batches(monkeypatch):
    """set(rows): batches of `rows` rows from here on (row groups of ROW_GROUP)."""
    monkeypatch.setattr(io, "ROW_GROUP_SIZE", ROW_GROUP)

    def set_rows(rows: int) -> None:
        monkeypatch.setattr(io, "BATCH_ROWS", rows)

    set_rows(SMALL)
    return set_rows


def prompts(n: int) -> pl.DataFrame:
    ids = [f"p{i:04d}" for i in range(n)]
    return pl.DataFrame({
        "id": ids, "prompt": [f"What is {i} + {i}?" for i in range(n)], "reference": [None] * n,
        "answer": [None if i % 17 == 5 else str(2 * i) for i in range(n)],  # some without a reference
        "task": ["reference"] * n, "metadata": [None] * n, "source": ["test"] * n, "split": ["train"] * n,
    }, schema_overrides={"reference": pl.String, "metadata": pl.String})


def refinements(pool: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """Sorted as refine writes them (prompt, candidate, round): 3 candidates a prompt,
    1-3 rounds each, right and wrong answers, repeats, unparsed replies, every score."""
    rng = random.Random(seed)
    rows = []
    for prompt_id, prompt, answer in pool.select("id", "prompt", "answer").iter_rows():
        right = int(prompt_id[1:]) * 2
        for k in range(3):
            for r in range(rng.choice([1, 1, 2, 3])):
                value = right if rng.random() < 0.6 else right + rng.choice([1, 10])
                unparsed = rng.random() < 0.1
                verdict = "unparsed" if unparsed else rng.choice(["correct", "incorrect"])
                rows.append({
                    "id": f"{prompt_id}:{k}@{r}", "candidate_id": f"{prompt_id}:{k}", "prompt_id": prompt_id,
                    "prompt": prompt, "round": r, "response": f"{right // 2} + {right // 2} ; Answer : {value}",
                    "feedback": "no verdict" if unparsed else f"Verdict : {verdict}", "verdict": verdict,
                    "score": None if unparsed else rng.randint(1, 10), "weaknesses": None, "suggestions": None,
                    "parse_error": "no verdict line" if unparsed else None, "refinement": None,
                    "flagged_step": None, "quoted": None, "recomputed": None, "model": "policy", "iteration": IT})
    text = ("id", "candidate_id", "prompt_id", "prompt", "response", "feedback", "verdict", "weaknesses",
            "suggestions", "parse_error", "refinement", "quoted", "model", "iteration")
    schema = {name: pl.String if name in text else pl.Int64 for name in rows[0]}
    return pl.DataFrame(rows, schema=schema)


# ---- read_batches and write_batches ---------------------------------------------------------


def test_write_batches_writes_the_bytes_write_artifact_writes(tmp_path, batches):
    pool = prompts(300)
    cuts = [0, 7, 7, 70, 71, 200, 300]  # uneven frames, an empty one among them
    frames = [pool.slice(a, b - a) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert io.write_batches(iter(frames), tmp_path / "streamed.parquet", Prompts) == 300
    io.write_artifact(pool, tmp_path / "whole.parquet", Prompts)
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pl.read_parquet(tmp_path / "streamed.parquet").equals(pool)


def test_read_batches_gives_every_row_a_batch_at_a_time(tmp_path, batches):
    pool = prompts(300)
    io.write_artifact(pool, tmp_path / "p.parquet", Prompts)
    where = pl.col("answer").is_not_null()
    got = list(io.read_batches(tmp_path / "p.parquet", Prompts, columns=["id", "answer"], where=where))
    assert len(got) == 5 and max(b.height for b in got) <= SMALL
    assert pl.concat(got).equals(pool.filter(where).select("id", "answer"))
    nothing = list(io.read_batches(tmp_path / "p.parquet", Prompts, columns=["id"], where=pl.col("id") == "x"))
    assert [b.height for b in nothing] == [0] and nothing[0].columns == ["id"]  # the columns, still


@pytest.mark.parametrize("spill", [None, 40], ids=["one-run", "hashes-spilled-in-runs-of-40"])
def test_a_repeated_id_in_a_later_batch_is_an_error_naming_both_rows_and_writes_nothing(tmp_path, batches, spill,
                                                                                       monkeypatch):
    if spill:  # the id check's hashes go to disk in several sorted runs, the repeat in another run
        monkeypatch.setattr(io._Distinct, "SPILL", spill)
    pool = prompts(300)
    repeated = pool.with_columns(pl.when(pl.int_range(pl.len()) == 250).then(pl.lit("p0003"))
                                 .otherwise(pl.col("id")).alias("id"))
    frames = [repeated.slice(a, 50) for a in range(0, 300, 50)]
    with pytest.raises(ArtifactError, match=r"(?s)duplicate id.*rows 3, 250"):
        io.write_batches(iter(frames), tmp_path / "out.parquet", Prompts)
    assert list(tmp_path.iterdir()) == []
    repeated.write_parquet(tmp_path / "bad.parquet")  # past the schema: as a foreign file would be
    with pytest.raises(ArtifactError, match=r"(?s)bad.parquet.*duplicate id.*rows 3, 250"):
        list(io.read_batches(tmp_path / "bad.parquet", Prompts))


def test_a_bad_value_in_a_later_batch_names_its_row_id_and_column(tmp_path, batches):
    pool = prompts(300).with_columns(pl.when(pl.col("id") == "p0233").then(pl.lit("nowhere"))
                                     .otherwise(pl.col("split")).alias("split"))
    frames = [pool.slice(a, 100) for a in range(0, 300, 100)]
    with pytest.raises(ArtifactError, match=r"row id 'p0233' column 'split'"):
        io.write_batches(iter(frames), tmp_path / "out.parquet", Prompts)
    assert list(tmp_path.iterdir()) == []
    pool.write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ArtifactError, match=r"bad.parquet: row id 'p0233' column 'split'"):
        list(io.read_batches(tmp_path / "bad.parquet", Prompts))


# ---- the three stages -----------------------------------------------------------------------


OUTPUTS = [f"data/{IT}/filter/filtered.parquet", f"data/{IT}/build_sft/sft.parquet",
           f"data/{IT}/build_pairs/pairs.parquet", f"metrics/{IT}/filter.json", f"metrics/{IT}/build_sft.json",
           f"metrics/{IT}/build_pairs.json"]


def run_stages(folder: Path, monkeypatch) -> dict[str, bytes]:
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    blocks = {"templates": str(ROOT / full["templates"]), "iterations": {IT: {}},
              **{stage: full[stage] for stage in ("filter", "build_sft", "build_pairs")}}
    monkeypatch.chdir(folder)
    for stage in (stages.filter, stages.build_sft, stages.build_pairs):
        monkeypatch.setattr(stage, "load_params", lambda name, key: blocks)
        stage.run([IT])
    return {name: (folder / name).read_bytes() for name in OUTPUTS}


def test_filter_sft_and_pairs_stream_the_bytes_they_write_in_one_batch(tmp_path, batches, monkeypatch):
    pool = prompts(120)
    rows = refinements(pool)
    assert rows.height > 5 * SMALL
    for name in ("streamed", "whole"):
        io.write_artifact(pool, tmp_path / name / "data/prepare/train.parquet", Prompts)
        io.write_artifact(rows, tmp_path / name / f"data/{IT}/refine/refinements.parquet", Refinements)
    streamed = run_stages(tmp_path / "streamed", monkeypatch)
    batches(10**9)
    whole = run_stages(tmp_path / "whole", monkeypatch)
    assert streamed == whole
    filtered = pl.read_parquet(tmp_path / "whole" / OUTPUTS[0])
    assert filtered.height == rows.get_column("candidate_id").n_unique()  # every candidate, kept or not
    assert set(filtered.get_column("reason").drop_nulls().str.extract(r"^(\w+)")) == {"incorrect", "duplicate"}
    assert json.loads(streamed[OUTPUTS[5]])["pairs"] > 0
