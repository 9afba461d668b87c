"""What the report reads from a project folder: metrics, dvclive curves, evaluation rows.

Paths are the pipeline's (`metrics/evaluate/<ck>.json`, `metrics/<it>/<stage>.json`,
`dvclive/<stage>/plots/metrics/loss.tsv`, `data/<ck>/evaluate/rows.parquet`,
`data/prepare/eval.parquet`); the report stage and `honing report` both read a
project through here. A missing curve or row file leaves its part of the page
empty; a missing evaluation is an error, since the page is about them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from honing.errors import HoningError
from honing.report.samples import refinement_samples

# metrics files of single stages that the summary reads (iteration stages are found by folder)
SINGLE_STAGES = ("base", "meta_corpus", "train_meta")


@dataclass
class ReportInputs:
    checkpoints: list[str]
    evaluations: dict[str, dict[str, Any]]  # checkpoint -> metrics/evaluate/<ck>.json
    stage_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # "it1/filter" -> its metrics
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # training stage -> (step, loss)
    samples: dict[str, list[dict]] = field(default_factory=dict)  # checkpoint -> refinements side by side


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise HoningError(f"{path}: cannot read metrics ({e})") from e


def load_curves(folder: Path, order: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Loss per step of every training stage that logged through dvclive under
    `folder`: `dvclive/base` is "base", `dvclive/it1/train` is "it1"."""
    curves = {}
    for tsv in sorted(folder.glob("**/plots/metrics/loss.tsv")):
        name = tsv.parent.parent.parent.relative_to(folder).as_posix().removesuffix("/train")
        with tsv.open() as f:
            points = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f, delimiter="\t")]
        curves[name] = points
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(curves.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def default_checkpoints(root: str | Path) -> list[str]:
    """The checkpoints in the order params.yaml's `checkpoints:` gives them, else the
    evaluated ones (metrics/evaluate/*.json) by name."""
    import yaml

    root = Path(root)
    params = root / "params.yaml"
    if params.is_file():
        names = list((yaml.safe_load(params.read_text()) or {}).get("checkpoints") or {})
        if names:
            return names
    names = sorted(p.stem for p in (root / "metrics" / "evaluate").glob("*.json"))
    if not names:
        raise HoningError(f"{root}: no checkpoints in params.yaml and no metrics/evaluate/*.json")
    return names


def load_inputs(root: str | Path, checkpoints: list[str], samples: int = 4) -> ReportInputs:
    """Everything the page, the summary and the plots need, from the project at `root`."""
    root = Path(root)
    metrics = root / "metrics"
    missing = [ck for ck in checkpoints if not (metrics / "evaluate" / f"{ck}.json").is_file()]
    if missing:
        raise HoningError(f"{metrics / 'evaluate'}: no evaluation of {', '.join(missing)} "
                          "(run the pipeline first: `dvc repro`)")
    evaluations = {ck: _json(metrics / "evaluate" / f"{ck}.json") for ck in checkpoints}
    stage_metrics = {name: _json(metrics / f"{name}.json") for name in SINGLE_STAGES
                     if (metrics / f"{name}.json").is_file()}
    for ck in checkpoints:  # an iteration's stages: metrics/<it>/<stage>.json
        for path in sorted((metrics / ck).glob("*.json")):
            stage_metrics[f"{ck}/{path.stem}"] = _json(path)
    inputs = ReportInputs(checkpoints, evaluations, stage_metrics, load_curves(root / "dvclive", checkpoints))
    eval_prompts = root / "data" / "prepare" / "eval.parquet"
    if samples and eval_prompts.is_file():
        prompts = pl.read_parquet(eval_prompts, columns=["id", "prompt", "answer"])
        for ck in checkpoints:
            rows = root / "data" / ck / "evaluate" / "rows.parquet"
            if rows.is_file():
                inputs.samples[ck] = refinement_samples(pl.read_parquet(rows), prompts, samples)
    return inputs
