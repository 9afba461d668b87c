"""One failing test per schema constraint, with the message it must give.

Each case takes a valid row of an artifact, breaks one column, and checks that
validation names the file, the row id, the column and what is wrong.
"""

from __future__ import annotations

import math

import polars as pl
import pytest

from honing.artifacts.io import read_artifact, write_artifact
from honing.artifacts import validation
from honing.artifacts.validation import ArtifactError, validate
from schemas import registry
from schemas.registry import (
    Candidates,
    EvaluationRows,
    Feedback,
    Filtered,
    Judgements,
    MetaCorpus,
    PreferencePairs,
    Prompts,
    Quarantine,
    Refinements,
    SFTRecords,
)

PATH = "data/it1/artifact.parquet"


def msg(role: str, content: str | None) -> list[dict]:
    return [{"role": role, "content": content}]


VALID = {
    Prompts: {"id": "p1", "prompt": "Ann has 3 coins .", "reference": "Step 1 : ...", "answer": "3",
              "task": "micro", "metadata": None, "source": "micro", "split": "train"},
    MetaCorpus: {"id": "m1", "prompt_id": "p1", "prompt": "q", "response": "r", "response_source": "gold",
                 "feedback": "f", "verdict": "correct", "score": 9, "weaknesses": "", "suggestions": "",
                 "refinement": "r", "critic": "oracle", "policy": "base", "iteration": "meta"},
    Candidates: {"id": "c1", "prompt_id": "p1", "prompt": "q", "sample_index": 0, "response": "",
                 "finish_reason": "length", "model": "it0", "iteration": "it1"},
    Feedback: {"id": "c1", "prompt_id": "p1", "response": "r", "feedback": "Verdict : correct",
               "verdict": "correct", "score": 7, "weaknesses": None, "suggestions": None,
               "parse_error": None, "refinement": None, "flagged_step": None, "quoted": None, "recomputed": None,
               "critic": "it0", "iteration": "it1"},
    Refinements: {"id": "r1", "candidate_id": "c1", "prompt_id": "p1", "prompt": "q", "round": 0,
                  "response": "r", "feedback": "f", "verdict": "incorrect", "score": None, "weaknesses": None,
                  "suggestions": None, "parse_error": None, "refinement": None, "flagged_step": 2,
                  "quoted": "42 - 5", "recomputed": 37, "model": "it0", "iteration": "it1"},
    Filtered: {"id": "c1", "prompt_id": "p1", "prompt": "q", "response": "r", "rounds": 1,
               "verdict": "correct", "score": 8, "correct": None, "final_answer": "7", "majority": "7",
               "agreement": 1.0, "reward": None, "kept": True, "reason": None, "iteration": "it1"},
    SFTRecords: {"id": "s1", "prompt": msg("user", "q"), "completion": msg("assistant", "a"),
                 "kind": "answer", "source_id": "c1", "iteration": "it1"},
    PreferencePairs: {"id": "d1", "prompt_id": "p1", "prompt": msg("user", "q"),
                      "chosen": msg("assistant", "good"), "rejected": msg("assistant", "bad"),
                      "chosen_score": 9.0, "rejected_score": 2.0, "margin": 7.0, "iteration": "it1"},
    EvaluationRows: {"id": "e1", "prompt_id": "p1", "round": 0, "response": "r", "verdict": "correct",
                     "score": 9, "correct": True, "model": "it1", "iteration": "it1"},
    Judgements: {"id": "p1@0", "prompt_id": "p1", "round": 0, "answer": "a", "reference": "b",
                 "answer_first": "answer", "reference_first": "answer", "outcome": "win", "tie_cause": None,
                 "parse_error": None, "judge": "gpt", "iteration": "it1"},
    Quarantine: {"source_file": "in.jsonl", "row_id": None, "column": None, "reason": "empty prompt",
                 "row": "{}"},
}
ID_COLUMN = {Quarantine: "row_id"}


def frame(schema, **changes) -> pl.DataFrame:
    """A one-row frame of a valid row with `changes`; messages get their list type."""
    row = VALID[schema] | changes
    overrides = {name: col.dtype.type for name, col in schema.to_schema().columns.items()
                 if isinstance(col.dtype.type, pl.List)}
    return pl.DataFrame([row], schema_overrides=overrides)


def failure(schema, **changes) -> str:
    with pytest.raises(ArtifactError) as err:
        validate(frame(schema, **changes), schema, path=PATH, id_column=ID_COLUMN.get(schema, "id"))
    return str(err.value)


def test_every_artifact_has_a_schema_module():
    assert set(registry.ARTIFACTS.values()) == set(VALID)


@pytest.mark.parametrize("schema", list(VALID), ids=lambda s: s.__name__)
def test_valid_row_passes_and_round_trips(schema, tmp_path):
    id_column = ID_COLUMN.get(schema, "id")
    df = validate(frame(schema), schema, path=PATH, id_column=id_column)
    path = tmp_path / "a.parquet"
    write_artifact(df, path, schema, id_column=id_column)
    assert read_artifact(path, schema, id_column=id_column).to_dicts() == df.to_dicts()


@pytest.mark.parametrize("schema", list(VALID), ids=lambda s: s.__name__)
def test_a_valid_frame_takes_the_one_query_check_and_pandera_agrees(schema, monkeypatch):
    """The one-query check (`_passes`) passes every valid artifact, so pandera's slower
    per-check run is left for frames with a problem; pandera finds none either. The
    failing cases below go through both: each must still be reported."""
    model = validation._model(schema)
    valid = validate(frame(schema), schema, path=PATH, id_column=ID_COLUMN.get(schema, "id"))
    assert validation._passes(valid, model)
    monkeypatch.setattr(validation, "_passes", lambda df, model: False)
    assert validation._pandera_failures(valid, model) == []


@pytest.mark.parametrize("schema", [s for s in VALID if s is not Quarantine], ids=lambda s: s.__name__)
def test_every_row_needs_a_unique_non_empty_id(schema):
    two = pl.concat([frame(schema), frame(schema)])
    with pytest.raises(ArtifactError) as err:
        validate(two, schema, path=PATH)
    assert f"{PATH}: row id '{VALID[schema]['id']}' column 'id': duplicate id (check unique)" in str(err.value)
    assert "in rows 0, 1" in str(err.value)
    assert f"{PATH}: row 0 column 'id': missing id" in failure(schema, id=None)
    assert "column 'id': empty id (check str_length >= 1)" in failure(schema, id="")


@pytest.mark.parametrize("schema", list(VALID), ids=lambda s: s.__name__)
def test_schema_is_strict_and_complete(schema):
    extra = frame(schema).with_columns(extra=pl.lit(1))
    with pytest.raises(ArtifactError, match=f"{PATH}: column 'extra': column not in the schema"):
        validate(extra, schema, path=PATH)
    first = next(iter(VALID[schema]))
    with pytest.raises(ArtifactError, match=f"{PATH}: column '{first}': missing column"):
        validate(frame(schema).drop(first), schema, path=PATH)


# (schema, changes, column, words the message must hold)
BROKEN = [
    # prompts
    (Prompts, {"prompt": "   "}, "prompt", "empty prompt (check not blank after stripping whitespace); found '   '"),
    (Prompts, {"prompt": None}, "prompt", "missing prompt (check not null)"),
    (Prompts, {"split": "test"}, "split", "unknown split (check one of 'meta', 'train', 'eval'); found 'test'"),
    (Prompts, {"source": ""}, "source", "empty source"),
    (Prompts, {"task": None}, "task", "missing task"),
    (Prompts, {"task": "Reasoning Gym"}, "task", "task failed str_matches"),
    # meta corpus
    (MetaCorpus, {"response_source": "human"}, "response_source", "unknown response_source"),
    (MetaCorpus, {"verdict": "unparsed"}, "verdict", "unknown verdict (check one of 'correct', 'incorrect')"),
    (MetaCorpus, {"score": 0}, "score", "score below 1 (check score >= 1); found 0"),
    (MetaCorpus, {"score": 11}, "score", "score above 10 (check score <= 10); found 11"),
    (MetaCorpus, {"score": None}, "score", "missing score"),
    (MetaCorpus, {"prompt_id": ""}, "prompt_id", "empty prompt_id"),
    (MetaCorpus, {"critic": " "}, "critic", "empty critic"),
    (MetaCorpus, {"policy": ""}, "policy", "empty policy"),
    (MetaCorpus, {"iteration": None}, "iteration", "missing iteration"),
    (MetaCorpus, {"refinement": None}, "refinement", "missing refinement"),
    # candidates
    (Candidates, {"sample_index": -1}, "sample_index", "sample_index below 0 (check sample_index >= 0); found -1"),
    (Candidates, {"response": None}, "response", "missing response"),
    (Candidates, {"model": ""}, "model", "empty model"),
    # feedback
    (Feedback, {"verdict": "maybe"}, "verdict", "unknown verdict (check one of 'correct', 'incorrect', 'unparsed')"),
    (Feedback, {"score": 12}, "score", "score above 10"),
    (Feedback, {"verdict": "unparsed"}, "parse_error",
     "parse_error must be set exactly when verdict is 'unparsed' (check parse_error_iff_unparsed); found None"),
    (Feedback, {"parse_error": "no verdict line"}, "parse_error",
     "parse_error must be set exactly when verdict is 'unparsed'"),
    (Feedback, {"critic": ""}, "critic", "empty critic"),
    (Feedback, {"flagged_step": 0}, "flagged_step", "flagged_step below 1 (check flagged_step >= 1); found 0"),
    # refinements
    (Refinements, {"round": -1}, "round", "round below 0"),
    (Refinements, {"candidate_id": ""}, "candidate_id", "empty candidate_id"),
    (Refinements, {"prompt": ""}, "prompt", "empty prompt"),
    (Refinements, {"verdict": "fine"}, "verdict", "unknown verdict"),
    (Refinements, {"score": 0}, "score", "score below 1"),
    (Refinements, {"flagged_step": -1}, "flagged_step", "flagged_step below 1"),
    (Refinements, {"verdict": "unparsed"}, "parse_error",
     "parse_error must be set exactly when verdict is 'unparsed' (check parse_error_iff_unparsed); found None"),
    # filtered
    (Filtered, {"rounds": -2}, "rounds", "rounds below 0"),
    (Filtered, {"kept": None}, "kept", "missing kept"),
    (Filtered, {"kept": False}, "reason", "reason must be set when kept is false (check reason_when_dropped)"),
    (Filtered, {"kept": False, "reason": "  "}, "reason", "reason must be set when kept is false"),
    (Filtered, {"score": 11}, "score", "score above 10"),
    (Filtered, {"agreement": 1.5}, "agreement", "agreement above 1"),
    # sft records
    (SFTRecords, {"prompt": []}, "prompt", "prompt must be a non-empty list of messages"),
    (SFTRecords, {"prompt": msg("bot", "q")}, "prompt",
     "prompt must be a non-empty list of messages with roles in ['system', 'user', 'assistant']"),
    (SFTRecords, {"completion": msg("user", "a")}, "completion",
     "completion must be a non-empty list of assistant messages"),
    (SFTRecords, {"completion": msg("assistant", None)}, "completion",
     "completion must be a non-empty list of assistant messages with content set"),
    (SFTRecords, {"kind": "pair"}, "kind", "unknown kind (check one of 'answer', 'feedback', 'refinement')"),
    (SFTRecords, {"source_id": ""}, "source_id", "empty source_id"),
    # preference pairs
    (PreferencePairs, {"margin": 0.0}, "margin", "margin not above 0 (check margin > 0); found 0.0"),
    (PreferencePairs, {"margin": math.nan}, "margin", "margin is NaN"),
    (PreferencePairs, {"chosen_score": math.nan}, "chosen_score", "chosen_score is NaN"),
    (PreferencePairs, {"rejected": []}, "rejected", "rejected must be a non-empty list of assistant messages"),
    (PreferencePairs, {"chosen": msg("user", "x")}, "chosen", "chosen must be a non-empty list of assistant messages"),
    (PreferencePairs, {"prompt": []}, "prompt", "prompt must be a non-empty list of messages"),
    # evaluation rows
    (EvaluationRows, {"round": -1}, "round", "round below 0"),
    (EvaluationRows, {"correct": None}, "correct", "missing correct"),
    (EvaluationRows, {"verdict": "?"}, "verdict", "unknown verdict"),
    # judgements
    (Judgements, {"outcome": "draw"}, "outcome", "unknown outcome (check one of 'win', 'loss', 'tie')"),
    (Judgements, {"answer_first": "A"}, "answer_first", "unknown answer_first"),
    (Judgements, {"tie_cause": "orders_disagree"}, "tie_cause",
     "tie_cause must be set exactly when the outcome is a tie"),
    (Judgements, {"outcome": "tie"}, "tie_cause", "tie_cause must be set exactly when the outcome is a tie"),
    # quarantine
    (Quarantine, {"reason": ""}, "reason", "empty reason"),
    (Quarantine, {"source_file": None}, "source_file", "missing source_file"),
    (Quarantine, {"row": None}, "row", "missing row"),
]


@pytest.mark.parametrize("schema, changes, column, words", BROKEN,
                         ids=[f"{s.__name__}-{c}-{i}" for i, (s, _, c, _) in enumerate(BROKEN)])
def test_constraint_failure_names_file_row_and_column(schema, changes, column, words):
    text = failure(schema, **changes)
    row_id = VALID[schema].get("id") or VALID[schema].get("row_id")
    where = f"row id {row_id!r}" if row_id is not None else "row 0"
    assert f"{PATH}: {where} column {column!r}: {words}" in text, text


@pytest.mark.parametrize("schema, changes", [
    (Prompts, {"reference": None, "answer": None}),
    (Prompts, {"task": "reasoning_gym:chain_sum", "metadata": '{"answer": "3"}'}),
    (Candidates, {"response": ""}),
    (Feedback, {"verdict": "unparsed", "parse_error": "no verdict", "score": None}),
    (Filtered, {"correct": False, "kept": False, "reason": "wrong answer"}),
    (Filtered, {"kept": True, "reason": None, "correct": None}),
    (Refinements, {"score": None, "verdict": "unparsed", "parse_error": "no verdict", "flagged_step": None,
                   "quoted": None, "recomputed": None}),
    (Feedback, {"verdict": "incorrect", "refinement": "Answer : 7", "flagged_step": 3, "quoted": None,
                "recomputed": 7}),
    (SFTRecords, {"prompt": msg("system", "s") + msg("user", "q") + msg("assistant", "a") + msg("user", "f")}),
    (Quarantine, {"row_id": "x", "column": "prompt"}),
    (Judgements, {"outcome": "tie", "tie_cause": "orders_disagree", "reference_first": "reference"}),
], ids=lambda v: v.__name__ if isinstance(v, type) else "")
def test_allowed_values_pass(schema, changes):
    validate(frame(schema, **changes), schema, path=PATH, id_column=ID_COLUMN.get(schema, "id"))


def test_integers_from_text_are_coerced_and_bad_text_is_named():
    df = validate(frame(MetaCorpus, score="7"), MetaCorpus, path=PATH)
    assert df["score"].dtype == pl.Int64 and df["score"][0] == 7
    assert f"{PATH}: row id 'm1' column 'score': wrong type (expected Int64); found 'seven'" in failure(
        MetaCorpus, score="seven")
    assert "row id 'c1' column 'sample_index': wrong type (expected Int64); found 1.5" in failure(
        Candidates, sample_index=1.5)
