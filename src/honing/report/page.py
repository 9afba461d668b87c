"""The report page: one self-contained HTML file (inline SVG and CSS, no script, no
network) that shows a run at a glance.

Sections, top to bottom: the numbers; accuracy per checkpoint, direct and after
refinement; accuracy after each refinement round and the gain of each round;
the self-critic's recall on wrong answers and its false alarms on right ones;
training loss per step of every training stage; refinements side by side. The
page holds nothing but what the inputs hold (no date, no path), so equal inputs
give an equal page.
"""

from __future__ import annotations

import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from honing.report.load import ReportInputs
from honing.report.summary import run_summary
from honing.report.svg import bar_chart, line_chart

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1000px;
       color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
p.lead { color: #555; margin-top: 0; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f5f5f5; } td.text, th.text { text-align: left; }
table.samples td.text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px;
                        max-width: 260px; }
.pass { color: #007a3d; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
.note { color: #666; font-size: 13px; }
"""


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _table(head: list[str], rows: list[list[str]], cls: str = "", text_columns: int = 1) -> str:
    def cell(tag: str, i: int, value: str) -> str:
        attr = ' class="text"' if i < text_columns else ""
        return f"<{tag}{attr}>{value}</{tag}>"

    lines = [f'<table class="{cls}">', "<tr>" + "".join(cell("th", i, escape(h)) for i, h in enumerate(head)) + "</tr>"]
    lines += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows]
    return "\n".join([*lines, "</table>"])


def _check(passed: bool | None) -> str:
    if passed is None:
        return "–"
    return '<span class="pass">pass</span>' if passed else '<span class="fail">fail</span>'


def numbers_section(inputs: ReportInputs, summary: dict[str, Any]) -> str:
    rounds = max(len(e["accuracy_per_round"]) for e in inputs.evaluations.values()) - 1
    head = ["checkpoint", "direct", *(f"after round {r}" for r in range(1, rounds + 1)), "fixed / broken",
            "critic: wrong flagged", "critic: right flagged", "critic: score AUC", "kept", "SFT records", "pairs", "final loss"]
    rows = []
    for ck in inputs.checkpoints:
        e, s = inputs.evaluations[ck], summary[ck]
        rows.append([escape(ck), *(_num(a) for a in e["accuracy_per_round"]),
                     f"{e['fixed']} / {e['broken']}", _num(e["critic_recall_wrong"], 2),
                     _num(e["critic_false_alarm_rate"], 2), _num(e.get("critic_score_auc"), 2), _num(s.get("kept")), _num(s.get("sft_records")),
                     _num(s.get("pairs")), _num(s.get("final_loss"), 4)])
    cost = f"${summary['cost_usd']:.4f}"
    return "\n".join([
        "<h2>Numbers</h2>",
        _table(head, rows),
        f'<p class="note">Model calls of the whole run (data and evaluation): {summary["tokens"]:,} tokens, '
        f"estimated cost {cost}. Accuracy is the rule check against the reference answer on the held-out "
        "prompts; the critic columns are the model's own verdicts on its direct answers.</p>",
    ])


def charts_section(inputs: ReportInputs) -> str:
    cks, ev = inputs.checkpoints, inputs.evaluations
    accuracy = bar_chart("accuracy", "Accuracy per checkpoint", cks,
                         {"direct": [ev[c]["accuracy_direct"] for c in cks],
                          "after refinement": [ev[c]["accuracy_refined"] for c in cks]},
                         "held-out accuracy", (0.0, 1.0))
    per_round = line_chart("rounds", "Accuracy after each refinement round",
                           {c: list(enumerate(ev[c]["accuracy_per_round"])) for c in cks},
                           "refinement round (0: direct)", "held-out accuracy", integer_x=True)
    rounds = max(len(ev[c]["accuracy_per_round"]) for c in cks) - 1
    gains = {f"round {r}": [(ev[c]["accuracy_per_round"][r] - ev[c]["accuracy_per_round"][r - 1])
                            if r < len(ev[c]["accuracy_per_round"]) else 0.0 for c in cks]
             for r in range(1, rounds + 1)}
    gain = bar_chart("gain", "Gain of each refinement round", cks, gains, "accuracy gained")
    critic = bar_chart("critic", "Self-critic on its direct answers", cks,
                       {"wrong answers flagged (recall)": [ev[c]["critic_recall_wrong"] for c in cks],
                        "right answers flagged (false alarm)": [ev[c]["critic_false_alarm_rate"] for c in cks],
                        # 0.5: its score does not separate right from wrong answers; absent: no scores
                        "score AUC (right vs wrong)": [ev[c].get("critic_score_auc") or 0.0 for c in cks]},
                       "share of answers", (0.0, 1.0))
    return "\n".join(["<h2>Accuracy and refinement</h2>", '<div class="charts">', accuracy, per_round, gain,
                      "</div>", "<h2>Critic</h2>", '<div class="charts">', critic, "</div>"])


def curves_section(inputs: ReportInputs) -> str:
    if not inputs.curves:
        return "<h2>Training</h2>\n<p class=\"note\">No training curves (dvclive/) found.</p>"
    charts = [line_chart(f"loss-{name}", f"Training loss: {name}", {name: points}, "step", "loss")
              for name, points in inputs.curves.items()]
    return "\n".join(["<h2>Training</h2>",
                      '<p class="note">Loss per logged step of each training stage, as dvclive logged it '
                      "(dvclive/&lt;stage&gt;/plots/metrics/loss.tsv); SFT then DPO where both ran.</p>",
                      '<div class="charts">', *charts, "</div>"])


def samples_section(inputs: ReportInputs) -> str:
    if not inputs.samples:
        return ""
    parts = ["<h2>Refinements side by side</h2>",
             '<p class="note">Held-out prompts, a few of each kind: the direct answer, the model\'s own '
             "feedback on it, its answer after the last refinement round, and the rule check against the "
             "reference before and after.</p>"]
    head = ["prompt", "reference", "answer", "feedback", "refined answer", "kind", "before", "after"]
    for ck, samples in inputs.samples.items():
        if not samples:
            continue
        rows = []
        for s in samples:
            feedback = s["verdict"] if not s.get("feedback") else f"{s['feedback']}\n({s['verdict']})"
            rows.append([escape(s.get("prompt") or s["prompt_id"]), escape(s.get("reference") or "–"),
                         escape(s["answer"]), escape(feedback), escape(s["refined"]), escape(s["kind"]),
                         _check(s["correct_before"]), _check(s["correct_after"])])
        rounds = samples[0]["rounds"]
        parts.append(f"<h3>{escape(ck)} <span class=\"note\">(after {rounds} round{'s' if rounds != 1 else ''})"
                     "</span></h3>")
        parts.append(_table(head, rows, "samples", text_columns=6))
    return "\n".join(parts)


def render_page(inputs: ReportInputs, title: str = "honing report") -> str:
    summary = run_summary(inputs.checkpoints, inputs.evaluations, inputs.stage_metrics)
    first, last = inputs.checkpoints[0], inputs.checkpoints[-1]
    ev = inputs.evaluations
    lead = (f"{escape(last)}: {ev[last]['accuracy_direct']:.3f} held-out accuracy directly, "
            f"{ev[last]['accuracy_refined']:.3f} after self-refinement "
            f"({escape(first)}: {ev[first]['accuracy_direct']:.3f}, {ev[first]['accuracy_refined']:.3f}).")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>", f'<p class="lead">{lead}</p>',
        numbers_section(inputs, summary), charts_section(inputs), curves_section(inputs), samples_section(inputs),
        "</body>", "</html>", ""])


def write_page(html: str, path: str | Path) -> Path:
    """Write the page atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(html)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
