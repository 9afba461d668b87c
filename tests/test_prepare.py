"""prepare: every source form, each kind of bad pool, dedupe, the hash split,
decontamination, the stage."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import copy_project

from honing.artifacts.io import read_artifact, write_jsonl
from honing.artifacts.prepare import (
    PrepareConfig,
    decontaminate,
    load_pool,
    normalize,
    prepare,
    split_of,
    stable_id,
)
from honing.artifacts.validation import ArtifactError, validate
from honing.micro import world
from schemas.registry import Prompts, Quarantine

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("meta", "train", "eval")


def check_frames(result) -> None:
    """Every output matches its schema; splits are disjoint and sorted by id; a row
    without a pool id has its content hash as id."""
    for split in SPLITS:
        df = validate(getattr(result, split), Prompts, path=split)
        assert set(df["split"]) <= {split}
        assert df["id"].to_list() == sorted(df["id"])
    validate(result.quarantine, Quarantine, path="quarantine", id_column="row_id")
    ids = [set(getattr(result, s)["id"]) for s in SPLITS]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def hashed_ids(result) -> None:
    for split in SPLITS:
        df = getattr(result, split)
        assert df["id"].to_list() == [stable_id(p) for p in df["prompt"]]


def balanced(m: dict) -> bool:
    """Every input row is accounted for exactly once."""
    rows_in = m["rows_in"] + m.get("eval_rows_in", 0)
    return rows_in == m["quarantined"] + m["duplicates"] + m["decontaminated"] + m["meta"] + m["train"] + m["eval"]


def small(**kw) -> PrepareConfig:
    return PrepareConfig(**({"micro_problems": 8, "decontaminate_ngram": 0} | kw))


def rows_of(result) -> dict[str, dict]:
    return {r["prompt"]: r for s in SPLITS for r in getattr(result, s).to_dicts()}


def reasons(result) -> list[str]:
    return result.quarantine["reason"].to_list()


def jsonl(tmp_path: Path, lines: list, name: str = "pool.jsonl") -> str:
    """A pool file from records (dicts) and raw lines (bytes, written as they are)."""
    path = tmp_path / name
    path.write_bytes(b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return str(path)


# ---------------------------------------------------------------- text


def test_normalize_keeps_line_breaks_and_indentation():
    text = "  Line one  \r\n\r\n\r\n\n    indented  code\t\rlast line \n\n"
    assert normalize(text) == "Line one\n\n    indented  code\nlast line"
    assert normalize("a\n\nb\n\n\nc") == "a\n\nb\n\nc"  # at most one blank line in a row
    assert normalize("cafe\u0301") == "caf\u00e9"  # NFC
    assert normalize(" \n\t ") == ""


def test_stable_id_is_the_hash_of_the_collapsed_text():
    assert stable_id("Ann has 3 coins .") == hashlib.sha256(b"Ann has 3 coins .").hexdigest()[:16]
    assert stable_id("Ann has 3 coins .") == stable_id("  Ann  has\n3\tcoins . ")
    assert stable_id("caf\u00e9") == stable_id("cafe\u0301")
    assert len(stable_id("x")) == 16 and stable_id("x") != stable_id("X")


def test_split_of_follows_the_fractions_and_the_seed():
    hashes = [stable_id(str(i)) for i in range(20_000)]
    fractions = {"meta": 0.25, "train": 0.5, "eval": 0.25}
    counts = {s: 0 for s in SPLITS}
    for h in hashes:
        counts[split_of(h, 0, fractions)] += 1
    assert all(abs(counts[s] / len(hashes) - fractions[s]) < 0.015 for s in SPLITS), counts
    assert [split_of(h, 0, fractions) for h in hashes[:50]] != [split_of(h, 1, fractions) for h in hashes[:50]]
    assert {split_of(h, 0, {"meta": 0.0, "train": 1.0, "eval": 0.0}) for h in hashes} == {"train"}
    assert {split_of(h, 0, {"meta": 0.5, "train": 0.5}) for h in hashes} == {"meta", "train"}


@pytest.mark.parametrize("kw, error", [
    ({"split": {"meta": 0.5, "train": 0.6, "eval": 0}}, "split fractions must sum to 1, got 1.1 "
                                                       "(meta 0.5, train 0.6, eval 0)"),
    ({"split": {"meta": -0.5, "train": 1.5}}, "split.meta must be a fraction >= 0, got -0.5"),
    ({"split": {"meta": 1, "test": 0}}, "split: unknown split(s) test; expected meta, train, eval"),
    ({"split": {"meta": True}}, "split.meta must be a fraction >= 0, got True"),
    ({"split": [0.5, 0.5]}, "split must map meta, train and eval to fractions, got [0.5, 0.5]"),
    ({"split": {"eval": 1}, "eval_source": "e.jsonl"}, "split: with eval_source, meta + train must be above 0"),
    ({"micro_problems": 0}, "micro_problems must be an integer >= 1, got 0"),
    ({"max_prompt_chars": 0}, "max_prompt_chars must be an integer >= 1, got 0"),
    ({"decontaminate_ngram": -1}, "decontaminate_ngram must be an integer >= 0, got -1"),
    ({"min_steps": 4, "max_steps": 2}, "need 1 <= min_steps <= max_steps, got 4, 2"),
])
def test_config_rejects_bad_values(kw, error):
    with pytest.raises(ValueError) as err:
        PrepareConfig(**kw)
    assert str(err.value).startswith(error), err.value


def test_config_completes_the_split():
    assert PrepareConfig(split={"meta": 0.5, "train": 0.5}).split == {"meta": 0.5, "train": 0.5, "eval": 0.0}


# ---------------------------------------------------------------- the micro world


def test_micro_world():
    cfg = PrepareConfig(micro_problems=210, decontaminate_ngram=0, seed=3)
    result = prepare(cfg, Prompts)
    check_frames(result)
    hashed_ids(result)
    m = result.metrics
    assert m["meta"] + m["train"] + m["eval"] == 210 and min(m["meta"], m["train"], m["eval"]) > 30
    assert (m["rows_in"], m["quarantined"], m["duplicates"], m["decontaminated"]) == (210, 0, 0, 0)
    assert result.quarantine.height == 0
    for row in result.train.iter_rows(named=True):
        assert world.final_answer(row["reference"]) == int(row["answer"])
        assert world.parse_problem(row["prompt"]).answer == int(row["answer"])
        assert 2 <= len(world.parse_solution(row["reference"]).steps) <= 4
        assert row["source"] == "micro"
        assert row["id"] == hashlib.sha256(" ".join(row["prompt"].split()).encode()).hexdigest()[:16]
    # seeded: the same config gives the same frames, another seed others
    again = prepare(cfg, Prompts)
    assert again.train.equals(result.train) and again.eval.equals(result.eval)
    assert not prepare(PrepareConfig(**{**cfg.__dict__, "seed": 4}), Prompts).train.equals(result.train)


def test_more_micro_problems_keep_every_problem_in_its_split():
    before = prepare(PrepareConfig(micro_problems=200, decontaminate_ngram=0), Prompts)
    after = prepare(PrepareConfig(micro_problems=220, decontaminate_ngram=0), Prompts)
    for split in SPLITS:
        old = set(getattr(before, split)["id"])
        assert old <= set(getattr(after, split)["id"])


def test_micro_steps_follow_the_config():
    result = prepare(small(micro_problems=30, min_steps=3, max_steps=3), Prompts)
    assert {len(world.parse_problem(p).ops) for s in SPLITS for p in getattr(result, s)["prompt"]} == {3}


def test_micro_ngram_decontamination_is_what_exact_mode_avoids():
    cfg = small(micro_problems=500, split={"meta": 0.2, "train": 0.4, "eval": 0.4})
    exact = prepare(cfg, Prompts).metrics
    ngram = prepare(PrepareConfig(**{**cfg.__dict__, "decontaminate_ngram": 8}), Prompts).metrics
    assert exact["decontaminated"] == 0 and exact["meta"] + exact["train"] + exact["eval"] == 500
    assert ngram["decontaminated"] > 0 and ngram["eval"] == exact["eval"]
    assert ngram["meta"] + ngram["train"] < exact["meta"] + exact["train"]
    assert balanced(exact) and balanced(ngram)


# ---------------------------------------------------------------- files


RECORDS = [
    {"prompt": "What is 2 + 2 ?", "answer": 4, "reference": "2 + 2 = 4"},
    {"prompt": "  What is 2  +  2 ?\n", "answer": "4"},  # duplicate after collapsing whitespace
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
    path = jsonl(tmp_path, [*RECORDS, b"{not json"])
    result = prepare(small(source=path), Prompts)
    check_frames(result)
    hashed_ids(result)
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
    assert missing["source_file"] == path and missing["column"] == "prompt"
    assert json.loads(missing["row"]) == {"answer": "9"}
    assert q["invalid JSON (Expecting property name enclosed in double quotes) (line 13)"]["row"] == "{not json"

    rows = rows_of(result)
    assert rows["What is 2 + 2 ?"]["answer"] == "4"  # the copy with a reference is kept, int answer as text
    assert rows["What is 2 + 2 ?"]["reference"] == "2 + 2 = 4"
    assert rows["What is 4 + 4 ?"]["answer"] is None and rows["What is 4 + 4 ?"]["reference"] is None
    assert {r["source"] for r in rows.values()} == {path}


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
    assert reasons(result) == ["empty prompt after normalising (line 4); found ''"]
    rows = rows_of(result)
    assert rows["Q one ?"]["reference"] == "s1" and rows["Q three ?"]["answer"] is None


def test_parquet_and_json_pools(tmp_path):
    records = [{"prompt": f"Problem number {i} .", "answer": str(i)} for i in range(12)]
    pl.DataFrame(records).write_parquet(tmp_path / "pool.parquet")
    (tmp_path / "pool.json").write_text(json.dumps(records))
    a = prepare(small(source=str(tmp_path / "pool.parquet")), Prompts)
    b = prepare(small(source=str(tmp_path / "pool.json")), Prompts)
    check_frames(a)
    assert a.metrics["rows_in"] == 12 and balanced(a.metrics)
    for split in SPLITS:  # same rows, same split
        assert getattr(a, split).drop("source").equals(getattr(b, split).drop("source"))


def test_a_pool_without_the_prompt_field_is_an_error(tmp_path):
    path = jsonl(tmp_path, [{"question": "a"}, {"question": "b"}])
    with pytest.raises(ArtifactError, match=r"no field 'prompt' in any row \(fields: question\); "
                                            r"set prepare.prompt_field"):
        prepare(small(source=path), Prompts)


def test_unknown_source_is_an_error():
    with pytest.raises(ArtifactError, match="unknown prompt source"):
        load_pool(small(source="prompts.txt"))


# ---------------------------------------------------------------- bad pools, one kind each


def write_empty(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    if name.endswith(".parquet"):
        pl.DataFrame({"prompt": pl.Series([], dtype=pl.String)}).write_parquet(path)
    else:
        path.write_text({"empty.jsonl": "", "blank.jsonl": "\n\n  \n", "header.csv": "prompt,answer\n",
                         "empty.csv": "", "empty.json": "[]"}[name])
    return path


@pytest.mark.parametrize("name", ["empty.jsonl", "blank.jsonl", "header.csv", "empty.csv", "empty.parquet",
                                  "empty.json"])
def test_an_empty_pool_is_an_error(tmp_path, name):
    path = write_empty(tmp_path, name)
    with pytest.raises(ArtifactError) as err:
        prepare(small(source=str(path)), Prompts)
    assert str(err.value) == f"{path}: the prompt pool is empty (0 rows read)"


def test_an_empty_eval_pool_is_an_error(tmp_path):
    path = write_empty(tmp_path, "empty.jsonl")
    with pytest.raises(ArtifactError, match=r"empty\.jsonl: the prompt pool is empty \(0 rows read\)"):
        prepare(small(eval_source=str(path)), Prompts)


def test_a_pool_with_no_usable_row_is_an_error(tmp_path):
    path = jsonl(tmp_path, [{"prompt": "  "}, {"prompt": 42}, b"{oops", {"prompt": 7}])
    with pytest.raises(ArtifactError) as err:
        prepare(small(source=path), Prompts)
    assert str(err.value) == (f"{path}: no usable prompt: 4 rows read, 4 quarantined (empty_prompt 1, "
                              "invalid_json 1, not_text 2); the first: empty prompt after normalising (line 1); "
                              "found '  '")


def test_a_number_prompt_is_quarantined_not_coerced(tmp_path):
    path = jsonl(tmp_path, [{"prompt": "Fine ?"}, {"prompt": 42}, {"prompt": 4.5}, {"prompt": True},
                            {"prompt": {"text": "x"}}])
    result = prepare(small(source=path), Prompts)
    assert reasons(result) == ["'prompt' is not text: int (line 2)", "'prompt' is not text: float (line 3)",
                               "'prompt' is not text: bool (line 4)", "'prompt' is not text: dict (line 5)"]
    assert set(result.quarantine["column"]) == {"prompt"}
    assert json.loads(result.quarantine["row"][0]) == {"prompt": 42}
    assert list(rows_of(result)) == ["Fine ?"]


def test_an_int_parquet_prompt_column_is_not_text(tmp_path):
    path = tmp_path / "pool.parquet"
    pl.DataFrame({"prompt": [1, 2]}).write_parquet(path)
    with pytest.raises(ArtifactError) as err:
        prepare(small(source=str(path)), Prompts)
    assert str(err.value) == (f"{path}: no usable prompt: 2 rows read, 2 quarantined (not_text 2); "
                              "the first: 'prompt' is not text: int (row 0)")


def test_answers_may_be_numbers_but_not_other_values(tmp_path):
    path = jsonl(tmp_path, [{"prompt": "A ?", "answer": 72}, {"prompt": "B ?", "answer": 2.5},
                            {"prompt": "C ?", "answer": True}, {"prompt": "D ?", "reference": ["x"]},
                            {"prompt": "E ?", "answer": {"v": 1}}])
    result = prepare(small(source=path), Prompts)
    assert {p: r["answer"] for p, r in rows_of(result).items()} == {"A ?": "72", "B ?": "2.5"}
    assert reasons(result) == ["'answer' is not text: bool (line 3)", "'reference' is not text: list (line 4)",
                               "'answer' is not text: dict (line 5)"]
    assert result.quarantine["column"].to_list() == ["answer", "reference", "answer"]


def test_invalid_utf8_in_jsonl_quarantines_the_line(tmp_path):
    path = jsonl(tmp_path, [{"prompt": "Good ?"}, b'{"prompt": "caf\xe9 ?"}', {"prompt": "Also good ?"}])
    result = prepare(small(source=path), Prompts)
    assert reasons(result) == ["invalid UTF-8 (byte 0xe9 at offset 15) (line 2)"]
    assert result.quarantine["row"][0] == '{"prompt": "caf\\xe9 ?"}'  # the bytes shown, never U+FFFD
    assert result.metrics["quarantined_by_reason"] == {"invalid_utf8": 1}
    assert sorted(rows_of(result)) == ["Also good ?", "Good ?"]
    assert not any("\ufffd" in p for p in rows_of(result))


def test_a_lone_surrogate_is_quarantined(tmp_path):
    path = jsonl(tmp_path, [{"prompt": "Good ?"}, b'{"prompt": "bad \\ud800 ?"}'])
    result = prepare(small(source=path), Prompts)
    assert reasons(result) == ["'prompt' is not valid Unicode (lone surrogate at offset 4) (line 2)"]
    assert result.quarantine["row"][0] == '{"prompt": "bad \\ud800 ?"}'  # as JSON escapes it


def test_invalid_utf8_in_a_binary_parquet_column_is_quarantined(tmp_path):
    path = tmp_path / "pool.parquet"  # a binary column (as old writers store strings) is text where it is UTF-8
    pq.write_table(pa.table({"prompt": pa.array([b"Fine ?", b"caf\xe9", "ok \u00e9".encode()], pa.binary())}), path)
    result = prepare(small(source=str(path)), Prompts)
    assert reasons(result) == ["'prompt' is not valid UTF-8 (byte 0xe9 at offset 3) (row 1)"]
    assert result.quarantine["row"][0] == '{"prompt": "b\'caf\\\\xe9\'"}'
    assert sorted(rows_of(result)) == ["Fine ?", "ok \u00e9"]


def test_invalid_utf8_in_csv_or_json_is_an_error_naming_the_line(tmp_path):
    (tmp_path / "pool.csv").write_bytes(b"prompt,answer\nfine,1\n\"two\nlines\",2\ncaf\xe9,3\n")
    with pytest.raises(ArtifactError) as err:
        prepare(small(source=str(tmp_path / "pool.csv")), Prompts)
    assert str(err.value) == (f"{tmp_path / 'pool.csv'}: invalid UTF-8 at line 5, column 'prompt' (byte 0xe9); "
                              "the file must be UTF-8")
    (tmp_path / "pool.json").write_bytes(b'[{"prompt": "fine"},\n {"prompt": "caf\xe9"}]')
    with pytest.raises(ArtifactError) as err:
        prepare(small(source=str(tmp_path / "pool.json")), Prompts)
    assert str(err.value) == (f"{tmp_path / 'pool.json'}: invalid UTF-8 at line 2 (byte 0xe9 at offset 16 of the "
                              "line); the file must be UTF-8")


@pytest.mark.parametrize("name, content", [
    ("pool.jsonl", b'\xef\xbb\xbf{"prompt": "First ?"}\n{"prompt": "Second ?"}\n'),
    ("pool.json", b'\xef\xbb\xbf[{"prompt": "First ?"}, {"prompt": "Second ?"}]'),
    ("pool.csv", b"\xef\xbb\xbfprompt\nFirst ?\nSecond ?\n"),
])
def test_a_byte_order_mark_is_accepted(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    result = prepare(small(source=str(tmp_path / name)), Prompts)
    assert result.quarantine.height == 0
    assert sorted(rows_of(result)) == ["First ?", "Second ?"]


def test_a_long_prompt_is_quarantined(tmp_path):
    path = jsonl(tmp_path, [{"prompt": "Short ?"}, {"prompt": "x" * 2**20}, {"prompt": "y" * 8000}])
    result = prepare(small(source=path), Prompts)
    assert reasons(result) == ["prompt too long: 1048576 characters after normalising, limit max_prompt_chars "
                               "8000 (line 2)"]
    assert result.quarantine["column"].to_list() == ["prompt"]
    assert result.metrics["quarantined_by_reason"] == {"prompt_too_long": 1}
    assert len(rows_of(result)) == 2  # 8,000 characters is within the limit
    tight = prepare(small(source=path, max_prompt_chars=7), Prompts)
    assert reasons(tight)[0] == "prompt too long: 1048576 characters after normalising, limit max_prompt_chars " \
                                "7 (line 2)"
    assert list(rows_of(tight)) == ["Short ?"]


def test_line_breaks_are_kept_and_dedupe_compares_collapsed_text(tmp_path):
    text = "Read the code:\r\n\r\n\r\n    x = 1  \n    y = 2\n\nWhat is x + y ?  \n"
    path = jsonl(tmp_path, [{"prompt": text}, {"prompt": "Read the code: x = 1 y = 2 What is x + y ?"}])
    result = prepare(small(source=path), Prompts)
    kept = rows_of(result)
    assert list(kept) == ["Read the code:\n\n    x = 1\n    y = 2\n\nWhat is x + y ?"]  # the smaller text wins
    assert result.metrics["duplicates"] == 1
    hashed_ids(result)


def test_the_pool_id_is_kept(tmp_path):
    path = jsonl(tmp_path, [{"id": "q1", "prompt": "One ?"}, {"id": 7, "prompt": "Two ?"}, {"prompt": "Three ?"}])
    result = prepare(small(source=path), Prompts)
    check_frames(result)
    ids = {p: r["id"] for p, r in rows_of(result).items()}
    assert ids == {"One ?": "q1", "Two ?": "7", "Three ?": stable_id("Three ?")}
    other = prepare(small(source=path, id_field="key"), Prompts)  # no such field: content hashes
    hashed_ids(other)


def test_a_bad_pool_id_is_quarantined(tmp_path):
    path = jsonl(tmp_path, [{"id": "q1", "prompt": "One ?"}, {"id": 2.0, "prompt": "Two ?"},
                            {"id": None, "prompt": "Three ?"}, {"id": " ", "prompt": "Four ?"},
                            {"id": True, "prompt": "Five ?"}, {"id": "q6", "prompt": 6}])
    result = prepare(small(source=path), Prompts)
    assert reasons(result) == ["'id' is not a string or an integer: float (line 2)",
                               "'id' is not a string or an integer: null (line 3)",
                               "'id' is empty; found ' ' (line 4)",
                               "'id' is not a string or an integer: bool (line 5)",
                               "'prompt' is not text: int (line 6)"]
    assert result.quarantine["column"].to_list() == ["id"] * 4 + ["prompt"]
    assert result.quarantine["row_id"].to_list() == [None] * 4 + ["q6"]  # a good id names its row
    assert result.metrics["quarantined_by_reason"] == {"bad_id": 4, "not_text": 1}


def test_duplicate_pool_ids_name_both_rows(tmp_path):
    records = [{"id": f"p{i}", "prompt": f"Prompt {i} ?"} for i in range(1, 10)]
    records[8]["id"] = "q7"  # line 9
    records[2]["id"] = "q7"  # line 3
    path = jsonl(tmp_path, records)
    with pytest.raises(ArtifactError) as err:
        prepare(small(source=path), Prompts)
    assert str(err.value) == f"{path}: duplicate id 'q7' at line 3 and line 9"

    main = jsonl(tmp_path, [{"id": "a", "prompt": "Main ?"}, {"id": "e", "prompt": "Main two ?"}], "main.jsonl")
    evals = jsonl(tmp_path, [{"id": "e", "prompt": "Eval ?"}], "eval.jsonl")
    with pytest.raises(ArtifactError) as err:
        prepare(small(source=main, eval_source=evals), Prompts)
    assert str(err.value) == f"{evals}: duplicate id 'e' at line 1, and at line 2 of {main}"


def test_of_copies_the_smallest_id_is_kept_in_any_order(tmp_path):
    records = [{"id": "b", "prompt": "Same ?", "answer": "1"}, {"id": "a", "prompt": "Same  ?", "answer": "2"},
               {"id": "c", "prompt": "Other ?"}]
    for order in (records, records[::-1]):
        result = prepare(small(source=jsonl(tmp_path, order)), Prompts)
        kept = {r["id"]: r for s in SPLITS for r in getattr(result, s).to_dicts()}
        assert sorted(kept) == ["a", "c"] and kept["a"]["answer"] == "2"
        assert result.metrics["duplicates"] == 1


# ---------------------------------------------------------------- the split


def pool_records(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"Question number {i} : how many apples ?", "answer": str(i)} for i in range(start, n)]


def test_growing_a_pool_moves_no_row_and_reordering_changes_nothing(tmp_path):
    records = pool_records(300)
    before = prepare(small(source=jsonl(tmp_path, records, "a.jsonl")), Prompts)
    grown = prepare(small(source=jsonl(tmp_path, records + pool_records(310, 300), "b.jsonl")), Prompts)
    for split in SPLITS:
        assert set(getattr(before, split)["id"]) <= set(getattr(grown, split)["id"])
    assert sum(grown.metrics[s] for s in SPLITS) == 310

    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    again = prepare(small(source=jsonl(tmp_path, shuffled, "c.jsonl")), Prompts)
    for split in SPLITS:
        assert getattr(again, split).drop("source").equals(getattr(before, split).drop("source"))
    assert again.metrics == before.metrics


def test_eval_source_and_decontamination_counts(tmp_path):
    main = [{"prompt": f"Main prompt number {i} about apples and pears"} for i in range(20)]
    main += [{"prompt": "Held out question one about the sea and the sky"},  # exact copy of eval
             {"prompt": "Another phrasing : question one about the sea and the sky"}]  # shares 8-grams
    evals = [{"prompt": "Held out question one about the sea and the sky", "answer": "blue"},
             {"prompt": "Held out question two", "answer": "x"},
             {"prompt": "Held out question two", "answer": "y"}]  # duplicate in the eval pool
    cfg = PrepareConfig(source=jsonl(tmp_path, main, "main.jsonl"), eval_source=jsonl(tmp_path, evals, "eval.jsonl"),
                        decontaminate_ngram=8)
    result = prepare(cfg, Prompts)
    check_frames(result)
    m = result.metrics
    assert (m["rows_in"], m["eval_rows_in"], m["duplicates"], m["decontaminated"]) == (22, 3, 1, 2)
    assert (m["meta"] + m["train"], m["eval"]) == (20, 2) and m["meta"] > 0 and m["train"] > 0
    assert balanced(m)
    assert sorted(result.eval["answer"]) == ["blue", "x"]
    kept = set(result.meta["prompt"]) | set(result.train["prompt"])
    assert not any("sea and the sky" in p for p in kept)

    exact = prepare(PrepareConfig(**{**cfg.__dict__, "decontaminate_ngram": 0}), Prompts).metrics
    assert exact["decontaminated"] == 1
    only_train = prepare(PrepareConfig(**{**cfg.__dict__, "split": {"train": 0.5, "eval": 0.5}}), Prompts)
    assert (only_train.metrics["meta"], only_train.metrics["train"]) == (0, 20)  # renormalised: all of main


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
    cfg = small(source=f"hf:{folder}", eval_source=f"hf:{folder}:test", prompt_field="question")
    result = prepare(cfg, Prompts)
    check_frames(result)
    m = result.metrics
    assert (m["rows_in"], m["eval_rows_in"]) == (8, 2)
    assert sorted(result.eval["prompt"]) == ["How many 0 ?", "How many 100 ?"]
    assert m["decontaminated"] == 1  # "How many 0 ?" is in both pools
    assert m["meta"] + m["train"] == 7 and balanced(m)
    assert set(result.eval["source"]) == {f"hf:{folder}:test"}


def test_hf_save_to_disk_and_data_file(tmp_path, hf_cache):
    records = {"prompt": ["a b c", "d e f", "g h i"], "answer": [1, 2, 3]}
    hf_cache.Dataset.from_dict(records).save_to_disk(str(tmp_path / "disk"))
    hf_cache.DatasetDict({"train": hf_cache.Dataset.from_dict(records)}).save_to_disk(str(tmp_path / "dict"))
    pl.DataFrame(records).write_parquet(tmp_path / "file.parquet")
    frames = []
    for spec in (f"hf:{tmp_path / 'disk'}", f"hf:{tmp_path / 'dict'}:train", f"hf:{tmp_path / 'file.parquet'}"):
        result = prepare(small(source=spec), Prompts)
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


# ---------------------------------------------------------------- decontamination


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
    root = stage_dir(tmp_path, "prepare:\n  source: pool.jsonl\n  split: {meta: 0.3, train: 0.4, eval: 0.3}\n"
                               "  decontaminate_ngram: 0\n")
    write_jsonl(RECORDS, root / "pool.jsonl")
    done = run_stage(root)
    assert done.returncode == 0, done.stderr
    out = root / "data" / "prepare"
    sizes = {s: read_artifact(out / f"{s}.parquet", Prompts).height for s in SPLITS}
    quarantine = read_artifact(out / "quarantine.parquet", Quarantine, id_column="row_id")
    metrics = json.loads((root / "metrics" / "prepare.json").read_text())
    assert sizes == {s: metrics[s] for s in sizes} and sum(sizes.values()) == 5
    assert quarantine.height == metrics["quarantined"] == 5
    assert balanced(metrics)
    assert sorted(p.name for p in out.iterdir()) == ["eval.parquet", "meta.parquet", "quarantine.parquet",
                                                      "train.parquet"]


DUPLICATE_IDS = '{"id": "q1", "prompt": "a"}\n{"id": "q1", "prompt": "b"}\n'


@pytest.mark.parametrize("params, pool, error", [
    ("prepare:\n  source: missing.jsonl\n", None, "error: missing.jsonl: no such file"),
    ("prepare:\n  source: pool.jsonl\n", "", "error: pool.jsonl: the prompt pool is empty (0 rows read)"),
    ("prepare:\n  source: pool.jsonl\n", '{"prompt": 42}\n',
     "error: pool.jsonl: no usable prompt: 1 row read, 1 quarantined (not_text 1); "
     "the first: 'prompt' is not text: int (line 1)"),
    ("prepare:\n  source: pool.jsonl\n", DUPLICATE_IDS, "error: pool.jsonl: duplicate id 'q1' at line 1 and line 2"),
    ("prepare:\n  split: {meta: 0.5, train: 0.6, eval: 0}\n", None,
     "error: params.yaml `prepare`: split fractions must sum to 1, got 1.1 (meta 0.5, train 0.6, eval 0)"),
    ("prepare:\n  n_eval: 5\n", None, "error: params.yaml `prepare`: unknown key(s) n_eval; expected some of"),
])
def test_stage_failure_is_one_line_and_writes_nothing(tmp_path, params, pool, error):
    root = stage_dir(tmp_path, params)
    if pool is not None:
        (root / "pool.jsonl").write_text(pool)
    metrics = root / "metrics" / "prepare.json"  # the default run's, committed
    committed = metrics.read_bytes() if metrics.exists() else None
    done = run_stage(root)
    assert done.returncode == 1
    assert done.stderr.startswith(error), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    # data/ and metrics/ hold tracked files (.gitignore files, the default run's metrics): none written
    assert not (root / "data" / "prepare").exists()
    assert (metrics.read_bytes() if metrics.exists() else None) == committed
