"""`honing compare <a> <b>`: two checkpoints on the same held-out prompts.

Per prompt both evaluated, the rule check of each checkpoint's answer, directly
(round 0) and after its last refinement round: `a` wins where only a's answer
passes, loses where only b's does, and the rest are ties (both pass, or both
fail). A checkpoint is named as under `checkpoints:` (its rows are
`data/<name>/evaluate/rows.parquet`) or given as the path of such a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from honing.errors import HoningError

OUTCOMES = ("wins", "losses", "ties_both_right", "ties_both_wrong")


def rows_path(checkpoint: str, root: str | Path = ".") -> Path:
    path = Path(checkpoint)
    if path.suffix == ".parquet":
        return path if path.is_absolute() else Path(root) / path
    return Path(root) / "data" / checkpoint / "evaluate" / "rows.parquet"


def _final(rows: pl.DataFrame, direct: bool) -> pl.DataFrame:
    """prompt_id, response, correct of round 0 or of each prompt's last round."""
    pick = rows.filter(pl.col("round") == 0) if direct else rows.sort("round").group_by(
        "prompt_id", maintain_order=True).last()
    return pick.select("prompt_id", "response", "correct")


def compare_rows(a: pl.DataFrame, b: pl.DataFrame, examples: int = 3) -> dict[str, Any]:
    """Wins, losses and ties of `a` against `b`, direct and refined, and a few
    prompts of each kind of disagreement (by prompt id)."""
    out: dict[str, Any] = {}
    for label, direct in (("direct", True), ("refined", False)):
        joined = _final(a, direct).join(_final(b, direct), on="prompt_id", suffix="_b").sort("prompt_id")
        ca, cb = joined["correct"], joined["correct_b"]
        counts = {"wins": int((ca & ~cb).sum()), "losses": int((~ca & cb).sum()),
                  "ties_both_right": int((ca & cb).sum()), "ties_both_wrong": int((~ca & ~cb).sum())}
        shown = {kind: joined.filter(mask).head(examples).to_dicts()
                 for kind, mask in (("wins", ca & ~cb), ("losses", ~ca & cb))}
        out[label] = {"prompts": joined.height, **counts, "examples": shown}
    out["rounds"] = {"a": int(a["round"].max()), "b": int(b["round"].max())}
    return out


def compare(a: str, b: str, root: str | Path = ".", examples: int = 3) -> dict[str, Any]:
    frames = []
    for name in (a, b):
        path = rows_path(name, root)
        if not path.is_file():
            raise HoningError(f"{name}: {path} does not exist (evaluate it first: `dvc repro evaluate@{name}`)")
        frames.append(pl.read_parquet(path, columns=["prompt_id", "round", "response", "correct"]))
    result = compare_rows(*frames, examples=examples)
    if result["direct"]["prompts"] == 0:
        raise HoningError(f"{a} and {b} share no evaluated prompt (were they evaluated on the same eval split?)")
    return {"a": a, "b": b, **result}


def eval_prompts(root: str | Path = ".") -> dict[str, str]:
    """prompt id -> prompt text of the evaluation split, if the project has it."""
    path = Path(root) / "data" / "prepare" / "eval.parquet"
    if not path.is_file():
        return {}
    frame = pl.read_parquet(path, columns=["id", "prompt"])
    return dict(zip(frame["id"].to_list(), frame["prompt"].to_list(), strict=True))


def render(result: dict[str, Any], prompts: dict[str, str] | None = None) -> str:
    """The text `honing compare` prints: the counts, then the example prompts."""
    a, b = result["a"], result["b"]
    head = ["", f"{a} wins", f"{b} wins", "both right", "both wrong"]
    lines = [f"{a} against {b} on {result['direct']['prompts']:,} held-out prompts both answered "
             f"(refined: after round {result['rounds']['a']} of {a}, round {result['rounds']['b']} of {b})", "",
             f"{head[0]:<9}" + "".join(f"{h:>14}" for h in head[1:])]
    for label in ("direct", "refined"):
        r = result[label]
        lines.append(f"{label:<9}" + "".join(f"{r[k]:>14,}" for k in OUTCOMES))
    for label in ("direct", "refined"):
        for kind, winner in (("wins", a), ("losses", b)):
            for ex in result[label]["examples"][kind]:
                lines += ["", f"[{label}] only {winner} right: {ex['prompt_id']}"]
                if prompts and ex["prompt_id"] in prompts:
                    lines.append(f"  prompt: {prompts[ex['prompt_id']]}")
                lines.append(f"  {a}: " + ex["response"].replace("\n", "\n  " + " " * (len(a) + 2)))
                lines.append(f"  {b}: " + ex["response_b"].replace("\n", "\n  " + " " * (len(b) + 2)))
    return "\n".join(lines)
