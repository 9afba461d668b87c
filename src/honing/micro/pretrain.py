"""Pretraining the micro world's initial (base) model from scratch.

Two phases, as the second prototype found (DESIGN.md):
1. solutions only, most carry additions wrong (the systematic mistake that keeps
   base accuracy in the 25-60 % band);
2. half such solutions, half step-by-step checks of answers whose steps are each
   wrong with probability 0.5 independent of carries, loss on the check only
   (mixing checks in from the start starved both skills).

This is a plain torch loop rather than TRL: the model is 0.2 M parameters and
TRL's per-step overhead measured 1.6x the step itself here (159 vs 95 ms at
batch 64), which the 10-minute budget of the whole DAG cannot pay for ~1,700
steps. Fine-tuning stages (train_meta, train) go through TRL.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from honing.method.prompts import PromptSet
from honing.micro import oracle, world


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    batch_size: int = 64
    solution_steps: int = 800  # phase 1
    solution_lr: float = 3e-3
    check_steps: int = 900  # phase 2
    check_lr: float = 2e-3
    carry_drop: float = 0.6  # share of carry additions written without the carry
    step_noise: float = 0.1  # share of other steps written wrong
    check_p_wrong: float = 0.5  # per-step error rate of the answers phase 2 checks
    hidden_size: int = 64
    num_hidden_layers: int = 3
    num_attention_heads: int = 2
    intermediate_size: int = 256
    warmup_steps: int = 50
    threads: int = 0  # 0: torch's default


Example = tuple[str, str, str]  # (kind, prompt, completion)


def solution_example(rng: random.Random, cfg: PretrainConfig, prompts: PromptSet) -> Example:
    p = world.make_problem(rng)
    return "solution", prompts.answer(p.text), world.noisy_solution(p, rng, cfg.carry_drop, cfg.step_noise)


def check_example(rng: random.Random, cfg: PretrainConfig, prompts: PromptSet) -> Example:
    p = world.make_problem(rng)
    response = world.balanced_noisy_solution(p, rng, cfg.check_p_wrong)
    return "check", prompts.feedback(p.text, response), oracle.check(p, response).feedback


def _batches(rng, cfg, prompts, steps: int, check_share: float) -> Iterator[list[Example]]:
    for _ in range(steps):
        yield [
            check_example(rng, cfg, prompts) if rng.random() < check_share
            else solution_example(rng, cfg, prompts)
            for _ in range(cfg.batch_size)
        ]


def _step_loss(model, tokenizer, batch: list[Example]):
    """Mean token loss over the batch, computed per kind of example (checks are about
    three times longer than solutions): padding every row to the longest check
    cost a third of the compute."""
    groups = [[(p, c) for kind, p, c in batch if kind == k] for k in ("solution", "check")]
    total, count, n_tokens = 0.0, 0, 0
    for group in (g for g in groups if g):
        ids, mask, labels = _encode(tokenizer, group)
        n = int((labels[:, 1:] != -100).sum())
        total = total + model(input_ids=ids, attention_mask=mask, labels=labels).loss * n
        count += n
        n_tokens += int(mask.sum())
    return total / count, n_tokens


def _encode(tokenizer, pairs: list[tuple[str, str]]):
    """Right-padded prompt+completion ids with loss on the completion (and EOS) only."""
    import torch

    rows = []
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(" " + completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p + c, [-100] * len(p) + c))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    return ids, (ids != pad).long(), labels


def pretrain(out_dir: str | Path, cfg: PretrainConfig, prompts: PromptSet, progress=None, logger=None) -> dict:
    """Train the base model from scratch and save it with its tokenizer to `out_dir`.

    `logger` (dvclive's `Live`, or anything with `step`, `log_metric` and
    `next_step`) receives each curve point as `loss`, at the step counted across
    both phases."""
    import torch

    from honing.micro import tinymodel

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    tokenizer = tinymodel.build_tokenizer()
    model = tinymodel.build_model(
        tokenizer,
        tinymodel.TinyModelConfig(
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
        ),
        seed=cfg.seed,
    )
    model.train()
    metrics: dict = {"parameters": sum(p.numel() for p in model.parameters())}
    curve = []
    t0 = time.time()
    tokens = 0
    phases = [("solutions", cfg.solution_steps, cfg.solution_lr, 0.0),
              ("checks", cfg.check_steps, cfg.check_lr, 0.5)]
    done = 0  # steps of the phases before this one
    for phase, steps, lr, check_share in phases:
        if steps <= 0:
            continue
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(cfg.warmup_steps, steps))
        for step, batch in enumerate(_batches(rng, cfg, prompts, steps, check_share)):
            loss, n_tokens = _step_loss(model, tokenizer, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += n_tokens
            if step % 50 == 0 or step == steps - 1:
                curve.append({"phase": phase, "step": step, "loss": round(loss.item(), 4)})
                if logger is not None:
                    logger.step = done + step + 1  # optimizer steps taken, as TRL counts them
                    logger.log_metric("loss", round(loss.item(), 6))
                    logger.next_step()
            if progress is not None:
                progress(phase, step + 1, steps, loss.item())
        metrics[f"{phase}_final_loss"] = round(loss.item(), 4)
        done += steps
    seconds = time.time() - t0
    metrics.update(seconds=round(seconds, 1), tokens_per_second=round(tokens / seconds))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"metrics": metrics, "curve": curve}


def _cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    return factor

