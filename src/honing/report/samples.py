"""Refinements side by side: a held-out prompt, the direct answer, the model's own
feedback on it, the answer after the last refinement round, and the rule check
before and after.

The sample is chosen, not drawn: one answer of each kind in turn (the refinement
fixed it, broke it, changed it and left it wrong, left it wrong, changed it and
left it right, left it right), then a second of each, and so on; within a kind,
by prompt id.
Equal rows give an equal sample.
"""

from __future__ import annotations

import polars as pl

# kind of change -> order in the sample
KINDS = {"fixed": 0, "broken": 1, "changed, still wrong": 2, "unchanged, still wrong": 3,
         "changed, still right": 4, "unchanged, right": 5}


def refinement_samples(rows: pl.DataFrame, prompts: pl.DataFrame, n: int = 4) -> list[dict]:
    """`rows`: one checkpoint's evaluation rows (prompt_id, round, response, verdict,
    correct; a `feedback` column is shown where present). `prompts`: the evaluation
    prompts (id, prompt, answer). Returns up to `n` dicts, one per prompt."""
    if rows.height == 0 or n <= 0:
        return []
    last = rows["round"].max()
    before = rows.filter(pl.col("round") == 0)
    after = rows.filter(pl.col("round") == last).select(
        "prompt_id", refined=pl.col("response"), refined_verdict=pl.col("verdict"),
        correct_after=pl.col("correct"))
    feedback = pl.col("feedback") if "feedback" in rows.columns else pl.lit(None, pl.String)
    reference = pl.col("answer") if "answer" in prompts.columns else pl.lit(None, pl.String)
    table = (before.select("prompt_id", answer=pl.col("response"), verdict=pl.col("verdict"),
                           feedback=feedback, correct_before=pl.col("correct"))
             .join(after, on="prompt_id", how="inner")
             .join(prompts.select(prompt_id=pl.col("id"), prompt=pl.col("prompt"), reference=reference),
                   on="prompt_id", how="left"))
    picked = []
    for r in table.iter_rows(named=True):
        changed = r["answer"] != r["refined"]
        if r["correct_before"] != r["correct_after"]:
            kind = "fixed" if r["correct_after"] else "broken"
        elif changed:
            kind = "changed, still right" if r["correct_after"] else "changed, still wrong"
        else:
            kind = "unchanged, right" if r["correct_after"] else "unchanged, still wrong"
        picked.append({**r, "kind": kind, "rounds": int(last)})
    by_kind: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for r in sorted(picked, key=lambda r: r["prompt_id"]):
        by_kind[r["kind"]].append(r)
    # take the i-th of every kind before the (i+1)-th of any
    order = sorted((i, KINDS[kind], r) for kind, rs in by_kind.items() for i, r in enumerate(rs))
    return [r for _, _, r in order[:n]]
