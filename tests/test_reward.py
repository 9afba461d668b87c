"""The reward model: a tiny LlamaForSequenceClassification (the micro tokenizer and a
Llama config from `honing.micro.tinymodel`) scores (prompt, answer) as TRL's
RewardTrainer reads it, with batching and the request cache; and, trained by
RewardTrainer on the micro world's preference pairs inside the test, it ranks the
right answer above the wrong one on held-out pairs, as the filter threshold and the
pair signal use it."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pytest

from honing.calls.cache import RequestCache
from honing.method.filters import FilterConfig, filter_answers, filter_metrics
from honing.method.pairs import PairsConfig, build_pairs
from honing.method.prompts import PromptSet
from honing.method.reward import RewardModel, RewardModelConfig, conversation, reward_values
from honing.micro import tinymodel, world
from honing.tasks.families import load_tasks

TEMPLATES = PromptSet(Path(__file__).parents[1] / "prompts" / "micro")
TASKS = load_tasks(["micro"])


def reward_model_folder(path: Path, seed: int = 0):
    """An untrained tiny reward model (one output) with the micro tokenizer, saved."""
    import torch
    from transformers import LlamaForSequenceClassification

    tokenizer = tinymodel.build_tokenizer()
    config = tinymodel.build_model(tokenizer).config
    config.num_labels = 1
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model, tokenizer


def micro_rows(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`n` micro problems (prompt rows) and two answers each as refinement rows: the gold
    solution and a wrong one with the base model's mistakes (dropped carries, wrong steps)."""
    rng = random.Random(seed)
    prompts, rows = [], []
    while len(prompts) < n:
        problem = world.make_problem(rng)
        wrong = world.noisy_solution(problem, rng, carry_drop=0.6, step_noise=0.3)
        if world.final_answer(wrong) == problem.answer:
            continue
        pid = f"s{seed}p{len(prompts)}"
        prompts.append({"id": pid, "prompt": problem.text, "answer": str(problem.answer), "task": "micro",
                        "metadata": None})
        for k, response in enumerate((world.gold_solution(problem), wrong)):
            rows.append({"id": f"{pid}:{k}@0", "candidate_id": f"{pid}:{k}", "prompt_id": pid,
                         "prompt": problem.text, "round": 0, "response": response, "feedback": "",
                         "verdict": "correct", "score": None})
    return pl.DataFrame(prompts), pl.DataFrame(rows, schema_overrides={"score": pl.Int64})


def test_scores_read_the_conversation_as_reward_trainer_tokenizes_it(tmp_path):
    import torch

    model, tokenizer = reward_model_folder(tmp_path / "rm")
    cache = RequestCache(tmp_path / "cache.sqlite")
    rm = RewardModel(RewardModelConfig(model=str(tmp_path / "rm"), batch_size=3), cache=cache)
    prompts = ["Ann has 34 coins . Ann gets 7 more .", "Ben has 12 cards ."]
    answers = ["Step 1 : 34 + 7 = 41 ; Answer : 41", "Answer : 12", "Step 1 : 34 + 7 = 31 ; Answer : 31"]
    convs = [conversation(TEMPLATES, p, a) for p in prompts for a in answers]
    assert convs[0] == [{"role": "user", "content": "Problem : Ann has 34 coins . Ann gets 7 more . Solution :"},
                        {"role": "assistant", "content": answers[0]}]
    scores = rm.score(convs)
    # one at a time, with no padding, through the model as TRL's RewardTrainer feeds it
    for conv, score in zip(convs, scores, strict=True):
        ids = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        assert score == pytest.approx(alone, abs=1e-5)  # right padding in batches of 3 changes nothing
    assert rm.runtime()["cache_misses"] == 6 and rm.metrics()["scored"] == 6
    # the same inputs again: all from the cache, the same floats exactly
    again = RewardModel(RewardModelConfig(model=str(tmp_path / "rm")), cache=cache)
    assert again.score(convs) == scores
    assert (again.runtime()["cache_hits"], again.runtime()["cache_misses"]) == (6, 0)
    # other weights at the same path are another model: nothing from the cache
    reward_model_folder(tmp_path / "rm", seed=1)
    other = RewardModel(RewardModelConfig(model=str(tmp_path / "rm")), cache=cache)
    assert other.model_id != rm.model_id
    assert other.score(convs[:1]) != scores[:1] and other.runtime()["cache_hits"] == 0


def test_a_model_with_more_than_one_output_is_not_a_reward_model(tmp_path):
    from transformers import LlamaForSequenceClassification

    tokenizer = tinymodel.build_tokenizer()
    config = tinymodel.build_model(tokenizer).config
    config.num_labels = 2
    LlamaForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has 2 outputs; a reward model has one"):
        RewardModel(RewardModelConfig(model=str(tmp_path), cache=False))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A reward model that TRL's RewardTrainer trains on build_pairs' micro pairs."""
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    folder = tmp_path_factory.mktemp("reward") / "model"
    model, tokenizer = reward_model_folder(folder)
    prompts, rows = micro_rows(1000, seed=0)
    pairs = build_pairs(rows, prompts, TEMPLATES, PairsConfig(), "it1", tasks=TASKS)  # chosen right, rejected wrong
    assert pairs.height == 1000
    args = RewardConfig(output_dir=str(folder.parent / "trainer"), use_cpu=True, bf16=False, report_to=[],
                        learning_rate=2e-3, num_train_epochs=3, per_device_train_batch_size=32,
                        lr_scheduler_type="cosine", warmup_steps=5, seed=0, save_strategy="no",
                        logging_steps=1000, disable_tqdm=True)
    torch.manual_seed(0)
    trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer,
                            train_dataset=Dataset.from_polars(pairs.select("prompt", "chosen", "rejected")))
    trainer.train()
    trainer.save_model(str(folder))
    tokenizer.save_pretrained(folder)
    return RewardModel(RewardModelConfig(model=str(folder), batch_size=64, cache=False))


@pytest.mark.slow
def test_a_trained_reward_model_ranks_right_answers_above_wrong_ones_on_held_out_pairs(trained):
    prompts, rows = micro_rows(200, seed=1)
    rewards = reward_values(rows, TEMPLATES, trained)
    right = [rewards[f"{pid}:0@0"] > rewards[f"{pid}:1@0"] for pid in prompts["id"].to_list()]
    # chance is 0.5; measured 0.805, 0.715, 0.755 on held-out seeds 1, 2, 3
    assert sum(right) / len(right) >= 0.6


@pytest.mark.slow
def test_the_filter_threshold_and_the_reward_signal_use_the_reward_model(trained):
    prompts, rows = micro_rows(200, seed=2)
    rewards = reward_values(rows, TEMPLATES, trained)
    threshold = sorted(rewards.values())[len(rewards) // 2]  # the median: about half is dropped
    cfg = FilterConfig(require_correct=False, min_reward=threshold, dedupe=False)
    out = filter_answers(rows, prompts, cfg, "it1", tasks=TASKS, rewards=rewards)
    assert out["reward"].to_list() == [rewards[i] for i in rows["id"].to_list()]
    assert (out["kept"] == (out["reward"] >= threshold)).all()
    # Half the answers are right. Trained on pairs, the model ranks answers to one prompt
    # well (0.72-0.81 above) but its scores of different prompts' answers are offset, so one
    # threshold for all separates less well: measured AUC 0.58-0.62 on three held-out seeds.
    assert out.filter(pl.col("kept"))["correct"].mean() > 0.5
    m = filter_metrics(out, cfg)
    assert m["rules"]["reward"]["dropped"] == 200 and m["reward"]["auc"] > 0.5

    pairs = build_pairs(rows, prompts, TEMPLATES, PairsConfig(signal="reward", min_margin=0.0), "it1",
                        tasks=TASKS, values=rewards)
    assert pairs.height == 200  # every prompt's two answers have different rewards
    for p in pairs.iter_rows(named=True):
        assert p["chosen_score"] > p["rejected_score"] and p["margin"] == p["chosen_score"] - p["rejected_score"]
    gold = {r["prompt_id"]: r["response"] for r in rows.iter_rows(named=True) if r["id"].endswith(":0@0")}
    chosen_gold = sum(p["chosen"][0]["content"] == gold[p["prompt_id"]] for p in pairs.iter_rows(named=True))
    assert chosen_gold / pairs.height >= 0.6


def test_the_filter_and_build_pairs_stages_score_with_the_reward_model_their_params_name(tmp_path, monkeypatch):
    import json

    import stages.build_pairs as build_pairs_stage
    import stages.filter as filter_stage

    from honing.artifacts.io import write_artifact
    from schemas.prompts import Prompts
    from schemas.refinements import Refinements

    reward_model_folder(tmp_path / "rm")
    prompts, rows = micro_rows(6, seed=3)
    monkeypatch.chdir(tmp_path)  # the stages read and write real artifacts, as in the pipeline
    write_artifact(prompts.with_columns(reference=pl.lit(None, pl.String), source=pl.lit("test"),
                                        split=pl.lit("train")), "data/prepare/train.parquet", Prompts)
    write_artifact(rows.with_columns(
        **{c: pl.lit(None, pl.String) for c in ("weaknesses", "suggestions", "parse_error", "refinement", "quoted")},
        flagged_step=pl.lit(None, pl.Int64), recomputed=pl.lit(None, pl.Int64), model=pl.lit("m"),
        iteration=pl.lit("it1")), "data/it1/refine/refinements.parquet", Refinements)
    model = {"model": str(tmp_path / "rm"), "batch_size": 4}
    params = {"templates": str(TEMPLATES.folder), "iterations": {"it1": {"filter": {}, "build_pairs": {}}},
              "filter": {"require_correct": False, "reward_model": {**model, "min_reward": 0.0}},
              "build_pairs": {"signal": "reward", "min_margin": 0.0, "reward_model": model, "judge": None}}
    for stage in (filter_stage, build_pairs_stage):
        monkeypatch.setattr(stage, "load_params", lambda name, key: params)
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "cache"))

    filter_stage.run(["it1"])
    filtered = pl.read_parquet("data/it1/filter/filtered.parquet")
    assert filtered["reward"].null_count() == 0 and (filtered["kept"] == (filtered["reward"] >= 0.0)).all()
    metrics = json.loads(Path("metrics/it1/filter.json").read_text())
    assert metrics["rules"]["reward"]["checked"] == 12 and metrics["reward_model"]["scored"] == 12
    assert metrics["reward_model"]["model"].startswith(str(tmp_path / "rm") + "@")
    assert json.loads(Path("runtime/it1/filter.json").read_text())["reward_model"]["cache_misses"] == 12

    build_pairs_stage.run(["it1"])
    pairs = pl.read_parquet("data/it1/build_pairs/pairs.parquet")
    assert pairs.height == 6 and (pairs["chosen_score"] > pairs["rejected_score"]).all()
    assert filtered.filter(pl.col("prompt_id") == pairs["prompt_id"][0])["reward"].max() == pairs["chosen_score"][0]
    # the filter scored these very answers (all of round 0): build_pairs computes nothing
    assert json.loads(Path("runtime/it1/build_pairs.json").read_text())["reward_model"] == {
        "cache_hits": 12, "cache_misses": 0, "seconds": pytest.approx(0, abs=5)}
