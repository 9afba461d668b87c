"""The results table: held-out accuracy per checkpoint, rendered from the report's metrics.

The report stage prints it at the end of every run and `honing results --update
README.md` writes the same table into the README between two markers, so the
README never shows figures that no run produced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BEGIN = "<!-- results: written by `honing results --update README.md` from metrics/report.json -->"
END = "<!-- /results -->"


def results_table(report: Mapping[str, Any]) -> str:
    """A markdown table of `metrics/report.json`: one row per checkpoint."""
    checkpoints = report["checkpoints"]
    rounds = max(len(report["accuracy_per_round"][ck]) for ck in checkpoints) - 1
    head = ["checkpoint", "direct", *(f"after round {r}" for r in range(1, rounds + 1)),
            "fixed / broken", "critic: wrong answers flagged", "critic: right answers flagged", "critic: score AUC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ck in checkpoints:
        per_round = report["accuracy_per_round"][ck]
        cells = [ck, *(f"{a:.3f}" for a in per_round),
                 f"{report['fixed'][ck]} / {report['broken'][ck]}",
                 f"{report['critic_recall_wrong'][ck]:.2f}", f"{report['critic_false_alarm_rate'][ck]:.2f}",
                 _two(report.get("critic_score_auc", {}).get(ck))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _two(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def block_markers(block: str, command: str) -> tuple[str, str]:
    """The lines around a README block other than the results table (e.g. a preset's
    measured run), naming the command that writes it."""
    return f"<!-- {block}: written by `{command}` -->", f"<!-- /{block} -->"


def update_block(text: str, table: str, begin: str = BEGIN, end: str = END) -> str:
    """`text` with the table between `begin` and `end` replaced by `table`."""
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if start < 0 or stop < 0:
        raise ValueError(f"no block: expected a line {begin!r} and, after it, a line {end!r}")
    return text[: start + len(begin)] + "\n" + table + "\n" + text[stop:]


# ---- the detail: parse rates, tokens and seconds per stage --------------------------------
#
# `honing results --detail` adds what a preset with model critics needs to be read:
# how often feedback parsed (the strong critic's in the meta corpus, the policy's own
# in each iteration's critique and in each evaluation), and what each stage cost in
# tokens (metrics/<stage>.json, every `*calls` block) and seconds (runtime/stages/,
# the stage's wall clock with start-up; runtime/<stage>.json: model calls and
# training). Every figure is read from those files; none is measured here.


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _calls(metrics: Mapping[str, Any]) -> tuple[int, int, int]:
    """(requests, prompt tokens, completion tokens) over a stage's `*calls` blocks."""
    requests = prompt = completion = 0
    for key, block in metrics.items():
        if key.endswith("calls") and isinstance(block, Mapping) and "prompt_tokens" in block:
            requests += int(block.get("requests", 0))
            prompt += int(block.get("prompt_tokens", 0))
            completion += int(block.get("completion_tokens", 0))
    return requests, prompt, completion


def _call_seconds(runtime: Mapping[str, Any]) -> float:
    return sum(float(b.get("seconds", 0.0)) for k, b in runtime.items()
               if k.endswith("calls") and isinstance(b, Mapping))


def parse_rate(stage: str, metrics: Mapping[str, Any]) -> float | None:
    """The share of a stage's feedback replies that parsed (None: it parses none)."""
    if stage == "meta_corpus" and "rows" in metrics:  # the strong critic's replies
        unparsed = int(metrics.get("quarantined_unparseable_feedback", 0))
        critiqued = int(metrics["rows"]) + unparsed + int(metrics.get("dropped_no_refinement", 0))
        return 1 - unparsed / critiqued if critiqued else None
    if stage.startswith("critique@") and metrics.get("rows"):  # the policy's self-feedback
        return 1 - int((metrics.get("verdicts") or {}).get("unparsed", 0)) / int(metrics["rows"])
    if stage.startswith("evaluate@") and metrics.get("prompts"):  # on its direct answers
        return 1 - int(metrics.get("unparsed_feedback", 0)) / int(metrics["prompts"])
    return None


def _stage_files(root: Path, stage: str) -> tuple[Path, Path]:
    """stage name -> (its metrics file, its runtime file): generate@it1 ->
    metrics/it1/generate.json, evaluate@base -> metrics/evaluate/base.json."""
    name, _, key = stage.partition("@")
    under = Path(name) if not key else (Path("evaluate") / key if name == "evaluate" else Path(key) / name)
    return root / "metrics" / under.with_suffix(".json"), root / "runtime" / under.with_suffix(".json")


def stage_figures(root: str | Path = ".", checkpoints: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per stage that wrote metrics or recorded its seconds (runtime/stages/), in DAG order."""
    root = Path(root)
    order = ["prepare", "base", "meta_corpus", "train_meta", "generate", "critique", "refine", "filter",
             "build_sft", "build_pairs", "train", "evaluate", "report"]

    rows = []
    timed = {p.stem: _read(p) for p in sorted((root / "runtime" / "stages").glob("*.json"))}
    checkpoints = list(checkpoints or [])

    def rank(stage: str) -> tuple:  # evaluations in the report's order of checkpoints
        name, _, key = stage.partition("@")
        return (_dag_rank(stage, order), checkpoints.index(key) if name == "evaluate" and key in checkpoints
                else len(checkpoints), stage)

    for stage in sorted(set(timed) | _measured_stages(root), key=rank):
        metrics_path, runtime_path = _stage_files(root, stage)
        metrics, runtime = _read(metrics_path), _read(runtime_path)
        requests, prompt, completion = _calls(metrics)
        train = sum(float(v) for k, v in runtime.items() if k.endswith("train_runtime"))
        rows.append({"stage": stage, "seconds": timed.get(stage, {}).get("seconds"), "requests": requests,
                     "prompt_tokens": prompt, "completion_tokens": completion,
                     "call_seconds": round(_call_seconds(runtime), 1), "train_seconds": round(train, 1),
                     "parse_rate": parse_rate(stage, metrics)})
    return rows


def _measured_stages(root: Path) -> set[str]:
    """Stage names of the metrics files under metrics/ (the report's own files: report)."""
    names = set()
    for path in (root / "metrics").rglob("*.json"):
        parts = path.relative_to(root / "metrics").with_suffix("").parts
        if len(parts) == 1:
            names.add("report" if parts[0] in ("report", "summary") else parts[0])
        elif len(parts) == 2:
            names.add(f"evaluate@{parts[1]}" if parts[0] == "evaluate" else f"{parts[1]}@{parts[0]}")
    return names


def _dag_rank(stage: str, order: list[str]) -> tuple:
    """prepare, base, meta_corpus, train_meta, then each iteration's stages in order,
    then the evaluations, then report."""
    name, _, key = stage.partition("@")
    at = order.index(name) if name in order else len(order)
    if name in ("prepare", "base", "meta_corpus", "train_meta"):
        return (0, "", at, "")
    if name == "evaluate":
        return (2, "", at, "")
    if name == "report" or name not in order:
        return (3, "", at, "")
    return (1, key, at, "")


def stage_table(rows: list[Mapping[str, Any]]) -> str:
    """Tokens, seconds and parse rate per stage, and the run's total."""
    head = ["stage", "seconds", "model calls", "prompt tokens", "completion tokens", "tokens/s in calls",
            "training seconds", "feedback parsed"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def cells(r: Mapping[str, Any]) -> list[str]:
        tokens = r["prompt_tokens"] + r["completion_tokens"]
        speed = f"{tokens / r['call_seconds']:,.0f}" if r["call_seconds"] and tokens else ""
        rate = "" if r["parse_rate"] is None else f"{r['parse_rate']:.2f}"
        seconds = "" if r["seconds"] is None else f"{r['seconds']:,.0f}"
        return [r["stage"], seconds, f"{r['requests']:,}" if r["requests"] else "",
                f"{r['prompt_tokens']:,}" if tokens else "", f"{r['completion_tokens']:,}" if tokens else "",
                speed, f"{r['train_seconds']:,.0f}" if r["train_seconds"] else "", rate]

    for r in rows:
        lines.append("| " + " | ".join(cells(r)) + " |")
    timed = [r["seconds"] for r in rows if r["seconds"] is not None]
    total = {"stage": "**all**", "seconds": sum(timed) if timed else None, "parse_rate": None,
             **{k: sum(r[k] for r in rows) for k in ("requests", "prompt_tokens", "completion_tokens",
                                                     "call_seconds", "train_seconds")}}
    lines.append("| " + " | ".join(cells(total)) + " |")
    return "\n".join(lines)


def detail_table(report: Mapping[str, Any], root: str | Path = ".") -> str:
    """The results table with the self-feedback parse rate and the evaluation's cost
    per checkpoint, the strong critic's parse rate, then tokens and seconds per stage."""
    root = Path(root)
    rows = stage_figures(root, report["checkpoints"])
    by_stage = {r["stage"]: r for r in rows}
    table = results_table(report).splitlines()
    table[0] += " self-feedback parsed | evaluation tokens | evaluation seconds |"
    table[1] += "---|---|---|"
    for i, ck in enumerate(report["checkpoints"]):
        r = by_stage.get(f"evaluate@{ck}")
        rate = parse_rate(f"evaluate@{ck}", _read(_stage_files(root, f"evaluate@{ck}")[0]))
        tokens = f"{r['prompt_tokens'] + r['completion_tokens']:,}" if r else ""
        seconds = f"{r['seconds']:,.0f}" if r and r["seconds"] is not None else ""
        table[2 + i] += f" {'' if rate is None else f'{rate:.2f}'} | {tokens} | {seconds} |"
    critic = parse_rate("meta_corpus", _read(root / "metrics" / "meta_corpus.json"))
    prompts = next((_read(_stage_files(root, f"evaluate@{ck}")[0]).get("prompts") for ck in report["checkpoints"]),
                   None)
    lines = [*table, "",
             f"Held-out items: {prompts}. The strong critic's feedback parsed: "
             f"{'n/a' if critic is None else f'{critic:.2f}'} (meta corpus); the policy's own: the column "
             "above (its direct answers) and `feedback parsed` below (critique@it).", "",
             stage_table(rows)]
    return "\n".join(lines)
