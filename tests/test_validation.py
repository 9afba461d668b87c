"""validate / split_valid: messages for people, and what goes to quarantine."""

from __future__ import annotations

import json

import polars as pl
import pytest

from honing.artifacts.validation import MAX_LINES, ArtifactError, split_valid, validate
from schemas.registry import Candidates, Prompts, Quarantine

PATH = "data/prepare/train.parquet"


def prompts(n: int = 3, **columns) -> pl.DataFrame:
    base = {
        "id": [f"id{i}" for i in range(n)],
        "prompt": [f"prompt {i}" for i in range(n)],
        "reference": [None] * n,
        "answer": [str(i) for i in range(n)],
        "task": ["reference"] * n,
        "metadata": [None] * n,
        "source": ["test"] * n,
        "split": ["train"] * n,
    }
    return pl.DataFrame(base | columns)


def error(df: pl.DataFrame, schema=Prompts, **kw) -> ArtifactError:
    with pytest.raises(ArtifactError) as err:
        validate(df, schema, path=PATH, **kw)
    return err.value


def test_valid_frame_comes_back_coerced():
    df = prompts(answer=[1, 2, 3])
    out = validate(df, Prompts, path=PATH)
    assert out["answer"].to_list() == ["1", "2", "3"]
    assert out.columns == df.columns


def test_message_names_file_row_id_column_check_and_value():
    e = error(prompts(prompt=["fine", "", "ok"]))
    lines = str(e).splitlines()
    assert lines[0] == f"{PATH}: 1 problem against schema Prompts"
    assert lines[1] == (f"{PATH}: row id 'id1' column 'prompt': empty prompt "
                        "(check not blank after stripping whitespace); found ''")
    (f,) = e.failures
    assert (f.row, f.row_id, f.column) == (1, "id1", "prompt")


def test_missing_column():
    e = error(prompts().drop("split"))
    assert f"{PATH}: column 'split': missing column (expected String)" in str(e)


def test_extra_column_in_a_strict_schema():
    e = error(prompts(score=[1, 2, 3]))
    assert f"{PATH}: column 'score': column not in the schema" in str(e)


def test_missing_column_does_not_hide_others_and_does_not_crash_pandera():
    e = error(prompts().drop("split", "source"))
    assert "column 'split': missing column" in str(e) and "column 'source': missing column" in str(e)


def test_wrong_type_that_cannot_be_coerced_names_row_and_column():
    df = pl.DataFrame({"id": ["c1", "c2"], "prompt_id": ["p", "p"], "prompt": ["q", "q"],
                       "sample_index": ["0", "two"], "response": ["", ""], "finish_reason": ["stop"] * 2,
                       "model": ["m"] * 2, "iteration": ["it1"] * 2})
    e = error(df, Candidates)
    assert (f"{PATH}: row id 'c2' column 'sample_index': not a valid Int64 (check dtype Int64); "
            "found 'two'") in str(e)
    # a whole column of the wrong type is one line, at its first value
    e = error(df.with_columns(sample_index=pl.lit("x")), Candidates)
    assert (f"{PATH}: row id 'c1' column 'sample_index': wrong type (expected Int64); found 'x' "
            "(String; no value in the column converts)") in str(e)
    assert len(str(e).splitlines()) == 2


def test_lossy_float_to_int_is_not_a_conversion():
    df = pl.DataFrame({"id": ["c1", "c2"], "prompt_id": ["p", "p"], "prompt": ["q", "q"],
                       "sample_index": [1.0, 1.5], "response": ["", ""], "finish_reason": ["stop"] * 2,
                       "model": ["m"] * 2, "iteration": ["it1"] * 2})
    e = error(df, Candidates)
    assert "row id 'c2' column 'sample_index': not a valid Int64 (check dtype Int64); found 1.5" in str(e)
    assert "'c1'" not in str(e)


def test_duplicate_ids_name_every_row_holding_them():
    e = error(prompts(id=["a", "b", "a", "b", "a"], prompt=list("vwxyz"), answer=list("12345"),
                      reference=[None] * 5, task=["reference"] * 5, metadata=[None] * 5, source=["s"] * 5,
                      split=["eval"] * 5))
    text = str(e)
    assert f"{PATH}: row id 'a' column 'id': duplicate id (check unique); found 'a' in rows 0, 2, 4" in text
    assert f"{PATH}: row id 'b' column 'id': duplicate id (check unique); found 'b' in rows 1, 3" in text
    assert text.splitlines()[0] == f"{PATH}: 2 problems against schema Prompts"


def test_null_id_is_named_by_row_position():
    e = error(prompts(id=["a", None, "c"]))
    assert f"{PATH}: row 1 column 'id': missing id (check not null); found None" in str(e)


def test_message_is_capped():
    n = MAX_LINES + 7
    e = error(prompts(n, split=["nope"] * n))
    lines = str(e).splitlines()
    assert lines[0] == f"{PATH}: {n} problems against schema Prompts"
    assert len(lines) == 1 + MAX_LINES + 1
    assert lines[-1] == "... and 7 more"
    assert len(e.failures) == n


def test_lazy_frames_get_value_checks_too():
    with pytest.raises(ArtifactError, match="empty prompt"):
        validate(prompts(prompt=["a", " ", "c"]).lazy(), Prompts, path=PATH)


def test_id_column_can_be_another_column_or_none():
    df = pl.DataFrame({"source_file": ["f"], "row_id": ["r7"], "column": [None], "reason": [""], "row": ["{}"]})
    assert "row id 'r7' column 'reason': empty reason" in str(error(df, Quarantine, id_column="row_id"))
    assert "row 0 column 'reason': empty reason" in str(error(df, Quarantine, id_column=None))


def test_split_valid_quarantines_bad_rows_with_reasons():
    df = prompts(5, prompt=["a", " ", "c", "d", "e"], split=["train", "train", "test", "eval", "meta"])
    valid, quarantine = split_valid(df, Prompts, path=PATH)
    assert valid["id"].to_list() == ["id0", "id3", "id4"]
    validate(valid, Prompts, path=PATH)
    validate(quarantine, Quarantine, path="quarantine.parquet", id_column="row_id")
    rows = quarantine.to_dicts()
    assert [r["row_id"] for r in rows] == ["id1", "id2"]
    assert rows[0]["source_file"] == PATH
    assert rows[0]["column"] == "prompt"
    assert rows[0]["reason"] == "empty prompt (check not blank after stripping whitespace); found ' '"
    assert rows[1]["reason"].startswith("unknown split (check one of 'meta', 'train', 'eval'); found 'test'")
    assert json.loads(rows[1]["row"]) == df.row(2, named=True)


def test_split_valid_keeps_the_first_of_duplicate_ids():
    df = prompts(4, id=["a", "b", "a", "a"])
    valid, quarantine = split_valid(df, Prompts, path=PATH)
    assert valid["prompt"].to_list() == ["prompt 0", "prompt 1"]
    assert quarantine["row_id"].to_list() == ["a", "a"]
    assert json.loads(quarantine["row"][0])["prompt"] == "prompt 2"
    assert "duplicate id" in quarantine["reason"][0]


def test_split_valid_combines_a_rows_failures_into_one_quarantine_row():
    df = prompts(2, prompt=["", "x"], split=["bad", "train"])
    _, quarantine = split_valid(df, Prompts, path=PATH)
    assert quarantine.height == 1
    assert quarantine["column"][0] == "prompt, split"
    assert "empty prompt" in quarantine["reason"][0] and "unknown split" in quarantine["reason"][0]


def test_split_valid_quarantines_values_that_do_not_convert():
    df = pl.DataFrame({"id": ["c1", "c2"], "prompt_id": ["p", "p"], "prompt": ["q", "q"],
                       "sample_index": ["0", "two"], "response": ["", ""], "finish_reason": ["stop"] * 2,
                       "model": ["m"] * 2, "iteration": ["it1"] * 2})
    valid, quarantine = split_valid(df, Candidates, path=PATH)
    assert valid["sample_index"].to_list() == [0] and valid["sample_index"].dtype == pl.Int64
    assert quarantine["reason"].to_list() == ["not a valid Int64 (check dtype Int64); found 'two'"]
    assert json.loads(quarantine["row"][0])["sample_index"] == "two"


@pytest.mark.parametrize("broken", [
    lambda df: df.drop("prompt"),
    lambda df: df.with_columns(extra=pl.lit(0)),
    lambda df: df.with_columns(prompt=pl.Series([["a"], ["b"], ["c"]])),
])
def test_split_valid_still_raises_when_the_frame_itself_is_wrong(broken):
    with pytest.raises(ArtifactError, match=PATH):
        split_valid(broken(prompts()), Prompts, path=PATH)


def test_split_valid_of_a_clean_frame_has_an_empty_quarantine_with_its_columns():
    valid, quarantine = split_valid(prompts(), Prompts, path=PATH)
    assert valid.height == 3
    assert quarantine.height == 0
    assert quarantine.columns == ["source_file", "row_id", "column", "reason", "row"]
    validate(quarantine, Quarantine, path="q", id_column="row_id")


def test_a_schema_built_before_its_checks_have_polars_functions_still_validates():
    """A model whose schema was built before pandera registered its polars check functions
    (a test that validated with pandera first) holds checks without them: validate must
    then let pandera decide, not raise KeyError."""
    import subprocess
    import sys

    script = """
import polars as pl
from schemas.pairs import PreferencePairs
PreferencePairs.to_schema()  # its checks are made now, before the polars functions exist
from honing.artifacts.validation import ArtifactError, validate
question, answer = [{"role": "user", "content": "q"}], [{"role": "assistant", "content": "a"}]
row = {"id": "a>b", "prompt_id": "p", "prompt": question, "chosen": answer, "rejected": answer,
       "chosen_score": 1.0, "rejected_score": 0.0, "margin": 1.0, "iteration": "it1"}
print(validate(pl.DataFrame([row]), PreferencePairs, path="pairs.parquet").height)
try:
    validate(pl.DataFrame([{**row, "id": ""}]), PreferencePairs, path="pairs.parquet")
except ArtifactError as e:
    print("refused", "id" in str(e))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.stdout.split() == ["1", "refused", "True"], done.stderr[-2000:]
