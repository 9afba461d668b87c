"""EVOLVE's generation strategies as training data, on known inputs.

- refine_rounds under each strategy (`refine.strategy`): parallel sampling (no
  rounds), self-refinement (only while the critic says incorrect) and the chain of
  self-refinement (every answer, every round, until a fixed point or the last round),
  in rewrite, critic and continue mode; evaluation with a chain.
- build_sft from chains: the last verified answer of each chain, and refine-template
  records of the steps that fixed a wrong answer.
- build_pairs across rounds: refined vs original where the rule check says the
  refinement is right and the original wrong, beside best vs worst.
"""

from __future__ import annotations

import polars as pl
import pytest
from scripted import MICRO, SRT, ScriptedCritic, ScriptedPolicy, policy_role, round0, rounds_of, srt

from honing.method.critique import RuleCritic, feedback_frame
from honing.method.evaluate import EvaluateConfig, evaluate
from honing.method.pairs import PairsConfig, build_pairs
from honing.method.refine import RefineConfig, refine_rounds
from honing.method.sft import BuildSFTConfig, iteration_records
from honing.micro import world
from honing.tasks import micro
from honing.tasks.families import load_tasks
from schemas.pairs import PreferencePairs
from schemas.refinements import Refinements
from schemas.sft import SFTRecords
from stages._params import StageError, to_config

# ---------------------------------------------------------------- refine_rounds per strategy

# c0 is fixed in round 1; c1 is judged right but a chain rewrites it (wrong, then right
# again); c2's feedback does not parse; c3 stays wrong for all three rounds. A rewrite
# that gives its answer back (A1, B2, D1) is a fixed point.
CRITIC = {"A0": srt("incorrect", 3), "A1": srt("correct", 9), "B0": srt("correct", 8), "B1": srt("incorrect", 4),
          "B2": srt("correct", 9), "D0": "Fine, I think.", "D1": srt("correct", 9), "C0": srt("incorrect", 2),
          "C1": srt("incorrect", 2), "C2": srt("incorrect", 3), "C3": srt("incorrect", 3)}
REWRITES = {"A0": "A1", "A1": "A1", "B0": "B1", "B1": "B2", "B2": "B2", "D0": "D1", "D1": "D1",
            "C0": "C1", "C1": "C2", "C2": "C3"}
ANSWERS = {"q0": "A0", "q1": "B0", "q2": "D0", "q3": "C0"}


def run_strategy(strategy: str, rounds: int = 3):
    policy, critic = ScriptedPolicy(rewrites=REWRITES), ScriptedCritic(CRITIC)
    cfg = RefineConfig(rounds=rounds, mode="rewrite", strategy=strategy)
    out = refine_rounds(round0(ANSWERS, critic), policy_role(policy), critic, SRT, cfg, "it1")
    Refinements.validate(out)
    return out, policy, critic


def asked(policy: ScriptedPolicy) -> list[str]:
    """The previous answers the policy was asked to rewrite, in order."""
    return [r.messages[0]["content"].split("Your previous answer:\n", 1)[1].split("\n", 1)[0]
            for r in policy.requests]


def test_parallel_sampling_keeps_the_answers_and_refines_nothing():
    out, policy, critic = run_strategy("parallel")
    assert rounds_of(out) == {"c0": ["A0"], "c1": ["B0"], "c2": ["D0"], "c3": ["C0"]}
    assert policy.requests == [] and len(critic.asked) == 1  # round 0's critique only


def test_self_refine_refines_only_answers_judged_incorrect():
    out, policy, _ = run_strategy("self_refine")
    assert rounds_of(out) == {"c0": ["A0", "A1"], "c1": ["B0"], "c2": ["D0"], "c3": ["C0", "C1", "C2", "C3"]}
    assert asked(policy) == ["A0", "C0", "C1", "C2"]


def test_chain_refines_every_answer_whatever_the_verdict_until_a_fixed_point():
    out, policy, critic = run_strategy("chain")
    assert rounds_of(out) == {"c0": ["A0", "A1"], "c1": ["B0", "B1", "B2"], "c2": ["D0", "D1"],
                              "c3": ["C0", "C1", "C2", "C3"]}
    # round 1 rewrites all four (B0 was judged correct, D0 unparsed); round 2 the four
    # round-1 answers, two of which come back unchanged (A1, D1: their chains end, no row);
    # round 3 B2 (a fixed point) and C2
    assert asked(policy) == ["A0", "B0", "D0", "C0", "A1", "B1", "D1", "C1", "B2", "C2"]
    assert critic.asked[1:] == [["A1", "B1", "D1", "C1"], ["B2", "C2"], ["C3"]]
    # every round is recorded with its own feedback
    c1 = out.filter(pl.col("candidate_id") == "c1").sort("round")
    assert c1["verdict"].to_list() == ["correct", "incorrect", "correct"] and c1["score"].to_list() == [8, 4, 9]


def test_chain_stops_at_the_last_round():
    out, _, _ = run_strategy("chain", rounds=1)
    assert rounds_of(out) == {"c0": ["A0", "A1"], "c1": ["B0", "B1"], "c2": ["D0", "D1"], "c3": ["C0", "C1"]}


def test_chain_in_critic_mode_takes_a_refinement_of_a_correct_answer_too():
    critic = ScriptedCritic({"A0": srt("incorrect", 3, refinement="A1"), "A1": srt("correct", 8, refinement="A1+"),
                             "A1+": srt("correct", 10, refinement="A1+"), "C0": srt("incorrect", 2)})
    feedback = round0({"q0": "A0", "q1": "C0"}, critic)
    outs = {strategy: refine_rounds(feedback, policy_role(ScriptedPolicy()), critic, SRT,
                                    RefineConfig(rounds=4, mode="critic", strategy=strategy), "it1")
            for strategy in ("self_refine", "chain")}
    assert rounds_of(outs["self_refine"]) == {"c0": ["A0", "A1"], "c1": ["C0"]}
    # the chain takes A1's polish A1+ though A1 was judged correct, then stops: A1+ refines to itself
    assert rounds_of(outs["chain"]) == {"c0": ["A0", "A1", "A1+"], "c1": ["C0"]}


def test_chain_in_continue_mode_ends_where_no_step_is_flagged():
    """The micro world: a right answer has no flagged step to splice, so its chain ends;
    a chain then gives what self-refinement gives."""
    p = world.Problem(39, (("+", 3), ("-", 5), ("+", 4)),
                      "Ann has 39 coins . Ann gets 3 more . Ann loses 5 . Ann finds 4 more . How many coins now ?")
    wrong = "Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 47 ; Step 3 : 47 + 4 = 51 ; Answer : 51"
    critic = RuleCritic(micro.check)
    candidates = pl.DataFrame({"id": ["c0", "c1"], "prompt_id": ["p", "p"], "prompt": [p.text] * 2,
                               "response": [wrong, world.gold_solution(p)]})
    feedback = feedback_frame(candidates, critic, "it1").with_columns(prompt=candidates["prompt"])
    outs = {}
    for strategy in ("self_refine", "chain"):
        policy = ScriptedPolicy(continuations={"Step 1 : 39 + 3 = 42 ; Step 2 : 42 - 5 = 37":
                                               "; Step 3 : 37 + 4 = 41 ; Answer : 41"})
        outs[strategy] = refine_rounds(feedback, policy_role(policy), critic, MICRO,
                                       RefineConfig(rounds=3, strategy=strategy), "it1", splice=micro.splice)
        assert len(policy.requests) == 1
    assert outs["chain"].equals(outs["self_refine"])
    assert rounds_of(outs["chain"])["c0"][-1] == world.gold_solution(p)


def test_the_params_blocks_pick_the_strategy_and_the_pair_rules():
    assert to_config(RefineConfig, {"rounds": 2, "strategy": "chain"}, "refine").strategy == "chain"
    pairs_cfg = to_config(PairsConfig, {"pairs": ["best_worst", "refined_original"]}, "build_pairs")
    assert pairs_cfg.pairs == ("best_worst", "refined_original")
    # an unknown strategy stops when the params are read, before any model is loaded
    with pytest.raises(StageError, match="params.yaml `refine`: strategy must be one of parallel, self_refine, "
                                         "chain, found 'chian'"):
        to_config(RefineConfig, {"strategy": "chian"}, "refine")


def test_evaluation_with_a_chain_refines_answers_judged_correct():
    prompts = pl.DataFrame({"id": ["e0", "e1"], "prompt": ["q0", "q1"], "answer": ["10", "11"],
                            "task": ["reference"] * 2, "metadata": [None] * 2})
    answers = {"q0": "q0: Answer: 10", "q1": "q1: Answer: 12"}
    rewrites = {"q0: Answer: 10": "q0 again: Answer: 9", "q0 again: Answer: 9": "q0 again: Answer: 9",
                "q1: Answer: 12": "q1 again: Answer: 11", "q1 again: Answer: 11": "q1 again: Answer: 11"}
    critic = {"q0: Answer: 10": srt("correct", 9), "q1: Answer: 12": srt("incorrect", 3),
              "q0 again: Answer: 9": srt("correct", 9), "q1 again: Answer: 11": srt("correct", 9)}
    metrics = {}
    for strategy in ("self_refine", "chain"):
        cfg = EvaluateConfig(refine=RefineConfig(rounds=2, mode="rewrite", strategy=strategy))
        _, metrics[strategy] = evaluate(prompts, policy_role(ScriptedPolicy(answers, rewrites)),
                                        ScriptedCritic(critic), SRT, cfg, "ck", tasks=load_tasks(["reference"]))
    assert (metrics["self_refine"]["fixed"], metrics["self_refine"]["broken"]) == (1, 0)
    # the chain rewrote q0's right answer, judged correct, into a wrong one
    assert (metrics["chain"]["fixed"], metrics["chain"]["broken"]) == (1, 1)
    assert metrics["chain"]["accuracy_per_round"] == [0.5, 0.5, 0.5]


# ---------------------------------------------------------------- SFT records and pairs from chains

PROMPTS = pl.DataFrame({"id": ["p1", "p2", "p3"], "prompt": ["q1", "q2", "q3"], "answer": ["7", "5", "3"],
                        "task": ["micro"] * 3, "metadata": [None] * 3})
TASKS = load_tasks(["micro"])
# candidate -> its chain of answers, round by round (right answers: p1 7, p2 5, p3 3)
CHAINS = {
    "p1:0": ["8", "7", "9"],  # fixed in round 1, broken again in round 2
    "p1:1": ["7"],            # right from the start
    "p2:0": ["4", "6", "5"],  # fixed in round 2
    "p2:1": ["4", "5"],       # the same original, fixed in round 1 into the same answer
    "p3:0": ["2", "1"],       # never right
}


def chain_rows() -> pl.DataFrame:
    rows = []
    for cid, answers in CHAINS.items():
        pid = cid.split(":")[0]
        for rnd, answer in enumerate(answers):
            rows.append({"id": f"{cid}@{rnd}", "candidate_id": cid, "prompt_id": pid, "prompt": f"q{pid[1]}",
                         "round": rnd, "response": f"Answer : {answer}", "feedback": f"feedback on {cid}@{rnd}",
                         "verdict": "incorrect", "score": 3})
    return pl.DataFrame(rows)


def filtered_rows() -> pl.DataFrame:
    """The filter's decision on the final answers: right and not a duplicate."""
    finals = {cid: answers[-1] for cid, answers in CHAINS.items()}
    kept = {"p1:1", "p2:0"}  # p1:0 ends wrong, p2:1 repeats p2:0's answer, p3:0 is wrong
    return pl.DataFrame({"id": list(finals), "prompt_id": [c.split(":")[0] for c in finals],
                         "prompt": [f"q{c[1]}" for c in finals], "response": [f"Answer : {a}" for a in finals.values()],
                         "kept": [c in kept for c in finals]})


def records(**cfg) -> pl.DataFrame:
    out = iteration_records(filtered_rows(), chain_rows(), PROMPTS, SRT,
                            BuildSFTConfig(feedback_records=False, **cfg), "it1", tasks=TASKS)
    SFTRecords.validate(out)
    return out


def test_answer_records_kept_are_the_filters_final_answers():
    out = records()
    assert out["source_id"].to_list() == ["p1:1", "p2:0"] and set(out["kind"]) == {"answer"}


def test_answer_records_last_verified_recover_what_a_later_round_broke():
    out = records(answers="last_verified", max_answers_per_prompt=2)
    # p1:0's chain was right in round 1, then broken: its round-1 answer counts; p1:1 and
    # p2:1 repeat an answer already taken; p3:0 was never right
    assert out["source_id"].to_list() == ["p1:0@1", "p2:0@2"]
    assert out["id"].to_list() == ["p1:0/answer", "p2:0/answer"]
    assert [c[0]["content"] for c in out["completion"]] == ["Answer : 7", "Answer : 5"]


def test_refinement_records_are_the_steps_that_fixed_a_wrong_answer():
    out = records(refinement_records="rewrite").filter(pl.col("kind") == "refinement")
    # p1:0 8->7, p2:0 6->5, p2:1 4->5; not p1:0 7->9 (broke it) nor p2:0 4->6 or p3:0 2->1 (still wrong)
    assert out["source_id"].to_list() == ["p1:0@1", "p2:0@2", "p2:1@1"]
    first = out.row(0, named=True)
    assert first["prompt"][0]["content"] == SRT.refine("q1", "Answer : 8", "feedback on p1:0@0")
    assert first["completion"] == [{"role": "assistant", "content": "Answer : 7"}]


def test_refinement_records_need_a_refine_template():
    with pytest.raises(ValueError, match="refinement_records rewrite renders the refine template, which "
                                         ".*prompts/micro does not have"):
        iteration_records(filtered_rows(), chain_rows(), PROMPTS, MICRO,
                          BuildSFTConfig(refinement_records="rewrite"), "it1", tasks=TASKS)
    with pytest.raises(ValueError, match="answers must be one of kept, last_verified, found 'best'"):
        BuildSFTConfig(answers="best")


def pairs(**cfg) -> pl.DataFrame:
    out = build_pairs(chain_rows(), PROMPTS, SRT, PairsConfig(**cfg), "it1", tasks=TASKS)
    PreferencePairs.validate(out)
    return out


def test_refined_original_pairs_a_verified_refinement_with_its_wrong_original():
    out = pairs(pairs=("refined_original",), max_pairs_per_prompt=2)
    # p1:0: its last right round (1) against round 0; p2:0: round 2 against round 0; p2:1
    # would pair the same two answers again (5 over 4); p1:1 was right from the start and
    # p3:0 never became right
    assert out["id"].to_list() == ["p1:0@1>p1:0@0", "p2:0@2>p2:0@0"]
    assert [(c[0]["content"], r[0]["content"]) for c, r in zip(out["chosen"], out["rejected"], strict=True)] == [
        ("Answer : 7", "Answer : 8"), ("Answer : 5", "Answer : 4")]
    assert out.select("chosen_score", "rejected_score", "margin").rows() == [(1.0, 0.0, 1.0)] * 2
    assert out["prompt"][0].to_list() == [{"role": "user", "content": SRT.answer("q1")}]


def test_both_rules_together_never_pair_the_same_answers_twice():
    best_worst = pairs()
    both = pairs(pairs=("best_worst", "refined_original"))
    assert both.head(best_worst.height).equals(best_worst)  # best_worst first, unchanged
    answers = [(r["prompt_id"], r["chosen"][0]["content"], r["rejected"][0]["content"])
               for r in both.iter_rows(named=True)]
    assert len(answers) == len(set(answers))
    # best_worst already paired p2's 5 over 4; refined_original adds p1's 7 over 8 only
    extra = both.tail(both.height - best_worst.height)
    assert extra["id"].to_list() == ["p1:0@1>p1:0@0"]


def test_unknown_pair_rules_are_refused():
    with pytest.raises(ValueError, match=r"build_pairs.pairs must list some of best_worst, refined_original, "
                                         r"found \['refined'\]"):
        pairs(pairs=("refined",))
