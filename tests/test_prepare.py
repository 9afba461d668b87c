"""prepare: every source form, quarantine, dedupe, split, decontamination, the stage."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import copy_project

from honing.artifacts.io import read_artifact, write_jsonl
from honing.artifacts.prepare import (
    PrepareConfig,
    decontaminate,
    load_pool,
    normalize,
    prepare,
    stable_id,
)
from honing.artifacts.validation import ArtifactError, validate
from honing.micro import world
from schemas.registry import Prompts, Quarantine

ROOT = Path(__file__).resolve().parents[1]


def check_frames(result) -> None:
    """Every output matches its schema; splits are disjoint; ids are the prompt hashes."""
    for split in ("meta", "train", "eval"):
        df = validate(getattr(result, split), Prompts, path=split)
        assert set(df["split"]) <= {split}
        assert df["id"].to_list() == [stable_id(p) for p in df["prompt"]]
    validate(result.quarantine, Quarantine, path="quarantine", id_column="row_id")
    ids = [set(getattr(result, s)["id"]) for s in ("meta", "train", "eval")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def balanced(m: dict) -> bool:
    """Every input row is accounted for exactly once."""
    rows_in = m["rows_in"] + m.get("eval_rows_in", 0)
    out = m["meta"] + m["train"] + m["eval"]
    return rows_in == m["quarantined"] + m["duplicates"] + m["decontaminated"] + m["unused"] + out


def small(**kw) -> PrepareConfig:
    return PrepareConfig(**({"n_meta": 2, "n_train": 3, "n_eval": 2, "decontaminate_ngram": 0} | kw))


# ---------------------------------------------------------------- text


def test_normalize_and_stable_id():
    assert normalize("  Ann  has\n3\tcoins .  ") == "Ann has 3 coins ."
    assert stable_id("Ann has 3 coins .") == stable_id("  Ann  has\n3 coins . ")
    assert stable_id("Ann has 3 coins .") == hashlib.sha256(b"Ann has 3 coins .").hexdigest()[:16]
    assert len(stable_id("x")) == 16 and stable_id("x") != stable_id("X")


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_train must be an integer >= 0"):
        PrepareConfig(n_train=-1)
    with pytest.raises(ValueError, match="min_steps <= max_steps"):
        PrepareConfig(min_steps=4, max_steps=2)


# ---------------------------------------------------------------- the micro world


def test_micro_world():
    cfg = PrepareConfig(n_meta=50, n_train=120, n_eval=40, decontaminate_ngram=0, seed=3)
    result = prepare(cfg, Prompts)
    check_frames(result)
    m = result.metrics
    assert (m["meta"], m["train"], m["eval"]) == (50, 120, 40)
    assert (m["rows_in"], m["quarantined"], m["duplicates"], m["decontaminated"]) == (210, 0, 0, 0)
    assert result.quarantine.height == 0
    for row in result.train.iter_rows(named=True):
        assert world.final_answer(row["reference"]) == int(row["answer"])
        assert world.parse_problem(row["prompt"]).answer == int(row["answer"])
        assert 2 <= len(world.parse_solution(row["reference"]).steps) <= 4
        assert row["source"] == "micro"
    # seeded: the same config gives the same frames, another seed others
    again = prepare(cfg, Prompts)
    assert again.train.equals(result.train) and again.eval.equals(result.eval)
    assert not prepare(PrepareConfig(**{**cfg.__dict__, "seed": 4}), Prompts).train.equals(result.train)


def test_micro_steps_follow_the_config():
    result = prepare(small(min_steps=3, max_steps=3), Prompts)
    assert {len(world.parse_problem(p).ops) for p in result.meta["prompt"]} == {3}


def test_micro_ngram_decontamination_is_what_exact_mode_avoids():
    cfg = small(n_meta=100, n_train=200, n_eval=200)
    exact = prepare(cfg, Prompts).metrics
    ngram = prepare(PrepareConfig(**{**cfg.__dict__, "decontaminate_ngram": 8}), Prompts).metrics
    assert exact["decontaminated"] == 0 and exact["meta"] + exact["train"] == 300
    assert ngram["decontaminated"] > 0 and ngram["meta"] + ngram["train"] < 300
    assert balanced(exact) and balanced(ngram)


# ---------------------------------------------------------------- files


RECORDS = [
    {"prompt": "What is 2 + 2 ?", "answer": 4, "reference": "2 + 2 = 4"},
    {"prompt": "  What is 2  +  2 ?\n", "answer": "4"},  # duplicate after normalising
    {"prompt": "What is 3 + 3 ?", "answer": "6"},
    {"prompt": "", "answer": "0"},  # empty
    {"prompt": "   \n ", "answer": "0"},  # empty after normalising
    {"answer": "9"},  # no prompt field
    {"prompt": None},  # null prompt
    {"prompt": ["a", "list"]},  # not text
    {"prompt": "What is 4 + 4 ?", "answer": "  ", "reference": ""},  # blank answer: absent
    {"prompt": "What is 5 + 5 ?", "answer": "10"},
    {"prompt": "What is 6 + 6 ?", "answer": "12"},
    {"prompt": "What is 3 + 3 ?", "answer": "6"},  # exact duplicate
]


def test_jsonl_pool_quarantine_and_dedupe(tmp_path):
    path = tmp_path / "pool.jsonl"
    write_jsonl(RECORDS, path)
    with open(path, "a") as f:
        f.write("{not json\n")
    result = prepare(small(source=str(path)), Prompts)
    check_frames(result)
    m = result.metrics
    assert m["rows_in"] == 13
    assert m["duplicates"] == 2
    assert m["quarantined"] == 6
    assert m["quarantined_by_reason"] == {"empty_prompt": 2, "invalid_json": 1, "missing_field": 1,
                                          "missing_prompt": 1, "not_text": 1}
    assert m["meta"] + m["train"] + m["eval"] == 5
    assert balanced(m)

    q = {r["reason"]: r for r in result.quarantine.to_dicts()}
    assert set(q) == {
        "empty prompt after normalising (line 4); found ''",
        "empty prompt after normalising (line 5); found '   \\n '",
        "missing field 'prompt' (line 6)",
        "'prompt' is null (line 7)",
        "'prompt' is not text: list (line 8)",
        "invalid JSON (Expecting property name enclosed in double quotes) (line 13)",
    }
    missing = q["missing field 'prompt' (line 6)"]
    assert missing["source_file"] == str(path) and missing["column"] == "prompt"
    assert json.loads(missing["row"]) == {"answer": "9"}
    assert q["invalid JSON (Expecting property name enclosed in double quotes) (line 13)"]["row"] == "{not json"

    rows = {r["prompt"]: r for s in ("meta", "train", "eval") for r in getattr(result, s).to_dicts()}
    assert rows["What is 2 + 2 ?"]["answer"] == "4"  # the first copy is kept, int answer as text
    assert rows["What is 2 + 2 ?"]["reference"] == "2 + 2 = 4"
    assert rows["What is 4 + 4 ?"]["answer"] is None and rows["What is 4 + 4 ?"]["reference"] is None
    assert {r["source"] for r in rows.values()} == {str(path)}


def test_csv_pool_with_other_field_names(tmp_path):
    path = tmp_path / "pool.csv"
    pl.DataFrame({
        "question": ["Q one ?", "Q two ?", "", "Q one ?", "Q three ?"],
        "final": ["1", "2", "0", "1", ""],
        "solution": ["s1", None, None, None, None],
    }).write_csv(path)
    cfg = small(source=str(path), prompt_field="question", answer_field="final", reference_field="solution")
    result = prepare(cfg, Prompts)
    check_frames(result)
    m = result.metrics
    assert (m["rows_in"], m["duplicates"], m["quarantined"]) == (5, 1, 1)
    assert result.quarantine["reason"][0] == "empty prompt after normalising (line 4); found ''"
    rows = {r["prompt"]: r for s in ("meta", "train", "eval") for r in getattr(result, s).to_dicts()}
    assert rows["Q one ?"]["reference"] == "s1" and rows["Q three ?"]["answer"] is None


def test_parquet_and_json_pools(tmp_path):
    records = [{"prompt": f"Problem number {i} .", "answer": str(i)} for i in range(12)]
    pl.DataFrame(records).write_parquet(tmp_path / "pool.parquet")
    (tmp_path / "pool.json").write_text(json.dumps(records))
    a = prepare(small(source=str(tmp_path / "pool.parquet")), Prompts)
    b = prepare(small(source=str(tmp_path / "pool.json")), Prompts)
    check_frames(a)
    assert a.metrics["rows_in"] == 12 and a.metrics["unused"] == 5
    assert a.train.drop("source").equals(b.train.drop("source"))  # same rows, same seeded split


def test_a_pool_without_the_prompt_field_is_an_error(tmp_path):
    write_jsonl([{"question": "a"}, {"question": "b"}], tmp_path / "p.jsonl")
    with pytest.raises(ArtifactError, match=r"no field 'prompt' in any row \(fields: question\); "
                                            r"set prepare.prompt_field"):
        prepare(small(source=str(tmp_path / "p.jsonl")), Prompts)


def test_unknown_source_is_an_error():
    with pytest.raises(ArtifactError, match="unknown prompt source"):
        load_pool(small(source="prompts.txt"))


# ---------------------------------------------------------------- datasets (the hf: path)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    datasets.disable_progress_bars()
    return datasets


def test_hf_local_folder_of_parquet_files(tmp_path, hf_cache):
    folder = tmp_path / "gsm"
    folder.mkdir()
    pl.DataFrame({"question": [f"How many {i} ?" for i in range(8)], "answer": [str(i) for i in range(8)]}
                 ).write_parquet(folder / "train-00000-of-00001.parquet")
    pl.DataFrame({"question": ["How many 100 ?", "How many 0 ?"], "answer": ["100", "0"]}
                 ).write_parquet(folder / "test-00000-of-00001.parquet")
    cfg = small(source=f"hf:{folder}", eval_source=f"hf:{folder}:test", prompt_field="question",
                n_meta=3, n_train=4, n_eval=2)
    result = prepare(cfg, Prompts)
    check_frames(result)
    m = result.metrics
    assert (m["rows_in"], m["eval_rows_in"]) == (8, 2)
    assert sorted(result.eval["prompt"]) == ["How many 0 ?", "How many 100 ?"]
    assert m["decontaminated"] == 1  # "How many 0 ?" is in both pools
    assert (m["meta"], m["train"]) == (3, 4) and balanced(m)
    assert set(result.eval["source"]) == {f"hf:{folder}:test"}


def test_hf_save_to_disk_and_data_file(tmp_path, hf_cache):
    records = {"prompt": ["a b c", "d e f", "g h i"], "answer": [1, 2, 3]}
    hf_cache.Dataset.from_dict(records).save_to_disk(str(tmp_path / "disk"))
    hf_cache.DatasetDict({"train": hf_cache.Dataset.from_dict(records)}).save_to_disk(str(tmp_path / "dict"))
    pl.DataFrame(records).write_parquet(tmp_path / "file.parquet")
    frames = []
    for spec in (f"hf:{tmp_path / 'disk'}", f"hf:{tmp_path / 'dict'}:train", f"hf:{tmp_path / 'file.parquet'}"):
        result = prepare(small(source=spec, n_meta=1, n_train=1, n_eval=1), Prompts)
        check_frames(result)
        assert result.metrics["rows_in"] == 3
        frames.append(pl.concat([result.meta, result.train, result.eval]).drop("source"))
    assert frames[0].equals(frames[1]) and frames[0].equals(frames[2])
    assert sorted(frames[0]["answer"]) == ["1", "2", "3"]


def test_hf_errors_are_one_clear_line(tmp_path, hf_cache):
    hf_cache.DatasetDict({"train": hf_cache.Dataset.from_dict({"prompt": ["x"]})}).save_to_disk(
        str(tmp_path / "dict"))
    with pytest.raises(ArtifactError, match=r"no split 'test' \(have train\)"):
        load_pool(small(source=f"hf:{tmp_path / 'dict'}:test"))
    with pytest.raises(ArtifactError, match="name a folder or a data file"):
        load_pool(small(source="hf:parquet"))
    with pytest.raises(ArtifactError, match="could not load the dataset"):
        load_pool(small(source=f"hf:{tmp_path / 'nothing-here'}"))


# ---------------------------------------------------------------- split and decontamination


def test_decontamination_by_ngram_and_exact():
    evals = ["Ann has 34 coins and gets 7 more today", "Short one"]
    rows = [{"prompt": p} for p in [
        "Ben has 34 coins and gets 7 more today too",  # shares a 6-gram with eval 0
        "ann HAS 34 coins , and gets 7 more today",  # same words, case and punctuation aside
        "Short one",  # exact
        "Short one please",  # shares no 6-gram (too short to have one), not exact
        "Something else entirely with many words in it",
    ]]
    clean, dropped = decontaminate(rows, evals, 6)
    assert dropped == 3
    assert [r["prompt"] for r in clean] == ["Short one please", "Something else entirely with many words in it"]
    clean, dropped = decontaminate(rows, evals, 0)  # exact only
    assert dropped == 2
    assert [r["prompt"] for r in clean] == [rows[0]["prompt"], rows[3]["prompt"], rows[4]["prompt"]]


def test_eval_source_and_decontamination_counts(tmp_path):
    main = [{"prompt": f"Main prompt number {i} about apples and pears"} for i in range(20)]
    main += [{"prompt": "Held out question one about the sea and the sky"},  # exact copy of eval
             {"prompt": "Another phrasing : question one about the sea and the sky"}]  # shares 8-grams
    evals = [{"prompt": "Held out question one about the sea and the sky", "answer": "blue"},
             {"prompt": "Held out question two", "answer": "x"},
             {"prompt": "Held out question two", "answer": "y"}]  # duplicate in the eval pool
    write_jsonl(main, tmp_path / "main.jsonl")
    write_jsonl(evals, tmp_path / "eval.jsonl")
    cfg = PrepareConfig(source=str(tmp_path / "main.jsonl"), eval_source=str(tmp_path / "eval.jsonl"),
                        n_meta=5, n_train=10, n_eval=5, decontaminate_ngram=8)
    result = prepare(cfg, Prompts)
    check_frames(result)
    m = result.metrics
    assert (m["rows_in"], m["eval_rows_in"], m["duplicates"], m["decontaminated"]) == (22, 3, 1, 2)
    assert (m["meta"], m["train"], m["eval"], m["unused"]) == (5, 10, 2, 5)
    assert balanced(m)
    assert sorted(result.eval["answer"]) == ["blue", "x"]
    kept = set(result.meta["prompt"]) | set(result.train["prompt"])
    assert not any("sea and the sky" in p for p in kept)

    exact = prepare(PrepareConfig(**{**cfg.__dict__, "decontaminate_ngram": 0}), Prompts).metrics
    assert exact["decontaminated"] == 1


def test_small_pool_scales_the_splits_down(tmp_path):
    write_jsonl([{"prompt": f"Prompt {i}"} for i in range(10)], tmp_path / "p.jsonl")
    m = prepare(PrepareConfig(source=str(tmp_path / "p.jsonl"), n_meta=10, n_train=30, n_eval=10,
                              decontaminate_ngram=0), Prompts).metrics
    assert (m["eval"], m["meta"], m["train"], m["unused"]) == (2, 2, 6, 0)
    assert balanced(m)


# ---------------------------------------------------------------- the stage script


def stage_dir(tmp_path: Path, params: str) -> Path:
    """A copy of the project whose params.yaml holds only `params`."""
    root = copy_project(tmp_path / "project")
    (root / "params.yaml").write_text(params)
    return root


def run_stage(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.prepare"], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})


def test_stage_writes_validated_outputs_and_metrics(tmp_path):
    root = stage_dir(tmp_path, "prepare:\n  source: pool.jsonl\n  n_meta: 2\n  n_train: 3\n  n_eval: 2\n"
                               "  decontaminate_ngram: 0\n")
    write_jsonl(RECORDS, root / "pool.jsonl")
    done = run_stage(root)
    assert done.returncode == 0, done.stderr
    out = root / "data" / "prepare"
    sizes = {s: read_artifact(out / f"{s}.parquet", Prompts).height for s in ("meta", "train", "eval")}
    quarantine = read_artifact(out / "quarantine.parquet", Quarantine, id_column="row_id")
    metrics = json.loads((root / "metrics" / "prepare.json").read_text())
    assert sizes == {s: metrics[s] for s in sizes}
    assert quarantine.height == metrics["quarantined"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["eval.parquet", "meta.parquet", "quarantine.parquet",
                                                      "train.parquet"]


@pytest.mark.parametrize("params, error", [
    ("prepare:\n  source: missing.jsonl\n", "error: missing.jsonl: no such file"),
    ("prepare:\n  n_eval: -5\n", "error: params.yaml `prepare`: n_eval must be an integer >= 0, got -5"),
    ("prepare:\n  n_evals: 5\n", "error: params.yaml `prepare`: unknown key(s) n_evals; expected some of"),
])
def test_stage_failure_is_one_line_and_writes_nothing(tmp_path, params, error):
    root = stage_dir(tmp_path, params)
    done = run_stage(root)
    assert done.returncode == 1
    assert done.stderr.startswith(error), done.stderr
    assert "Traceback" not in done.stderr
    assert not (root / "data").exists() and not (root / "metrics").exists()
