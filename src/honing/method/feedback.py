"""Feedback: its fields, SRT's format and parser, and the preset that fixes the format.

- "srt": SRT's critic format, "Weaknesses: … Score: 7 … Suggestions: … Verdict: …
  Refinement: …", for any task and any model. Its parser is here.
- A task family with a rule oracle brings a format of its own (the micro world's
  step-by-step "check", `honing.tasks.micro`), with its parser, its step checker
  and its continue-mode splice.

A prompt preset (`prompts/<name>/preset.yaml`) declares the feedback format its
templates ask for and the refinement modes it supports, so templates, parser and
refinement mode cannot disagree: `plan_feedback` checks a stage's combination of
preset, refinement mode, critic and task families, and fails in one line before
any model is called.

Feedback is parsed once, where it is written (`honing.method.critique.feedback_frame`,
and each refinement round): the Feedback and Refinements artifacts hold the reply as
written (it is training data) beside its fields (`FEEDBACK_COLUMNS`), and refinement
reads the fields back (`from_columns`) instead of parsing the text again.

A reply that cannot be parsed is kept with verdict "unparsed" and the reason in
`parse_error`; it is never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from honing.errors import HoningError

MODES = ("continue", "rewrite", "critic")  # how the policy refines (see honing.method.refine)
SRT = "srt"


@dataclass(frozen=True)
class ParsedFeedback:
    """Feedback parsed into fields, once: the Feedback and Refinements artifacts hold
    these as columns (`FEEDBACK_COLUMNS`), and refinement reads them from there."""

    verdict: str  # "correct", "incorrect" or "unparsed"
    score: int | None
    weaknesses: str | None
    suggestions: str | None
    parse_error: str | None = None
    refinement: str | None = None  # the critic's own refinement, where it wrote one
    # Where a format checks step by step (the micro world's "check"): the step the
    # feedback flags (1-based; one past the last step is the answer line), the
    # operation it quoted there as the answer wrote it ("42 - 5"; None on the answer
    # line), and the value it recomputed. None where the format has no steps (srt).
    flagged_step: int | None = None
    quoted: str | None = None
    recomputed: int | None = None


def unparsed(reason: str) -> ParsedFeedback:
    return ParsedFeedback("unparsed", None, None, None, parse_error=reason)


# The parsed fields as artifact columns (Feedback, Refinements), in this order.
FEEDBACK_COLUMNS = {
    "verdict": pl.String, "score": pl.Int64, "weaknesses": pl.String, "suggestions": pl.String,
    "parse_error": pl.String, "refinement": pl.String, "flagged_step": pl.Int64, "quoted": pl.String,
    "recomputed": pl.Int64,
}


def feedback_columns(parsed: list[ParsedFeedback]) -> dict[str, pl.Series]:
    """The parsed fields of many replies, one typed column each (`FEEDBACK_COLUMNS`)."""
    return {name: pl.Series(name, [getattr(fb, name) for fb in parsed], dtype=dtype)
            for name, dtype in FEEDBACK_COLUMNS.items()}


def from_columns(row: Mapping[str, Any]) -> ParsedFeedback:
    """A row's parsed feedback, read back from its columns: no parsing of the text."""
    return ParsedFeedback(**{name: row[name] for name in FEEDBACK_COLUMNS})


_SRT_FIELDS = ("Weaknesses", "Score", "Suggestions", "Verdict", "Refinement")
_SRT_HEADER = re.compile(rf"^\s*\**({'|'.join(_SRT_FIELDS)})\**\s*:\s*", re.MULTILINE | re.IGNORECASE)


def parse_srt(text: str) -> ParsedFeedback:
    """Parse SRT-style critic output; tolerant of prose before the first field."""
    heads = list(_SRT_HEADER.finditer(text))
    if not heads:
        return unparsed("none of the fields Weaknesses/Score/Suggestions/Verdict found")
    fields: dict[str, str] = {}
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        end = nxt.start() if nxt else len(text)
        fields.setdefault(head.group(1).capitalize(), text[head.end():end].strip())
    if "Score" not in fields:
        return unparsed("missing Score")
    m = re.match(r"(\d+)(?:\s*/\s*10)?\b", fields["Score"])
    if not m:
        return unparsed(f"Score is not an integer: {fields['Score'][:20]!r}")
    score = int(m.group(1))
    if not 1 <= score <= 10:
        return unparsed(f"Score {score} is outside 1..10")
    verdict = fields.get("Verdict", "").lower().strip(" .*")
    if verdict not in ("correct", "incorrect"):
        return unparsed(f"Verdict must be correct or incorrect, found {verdict[:20]!r}")
    return ParsedFeedback(
        verdict,
        score,
        weaknesses=fields.get("Weaknesses", ""),
        suggestions=fields.get("Suggestions", ""),
        refinement=fields.get("Refinement") or None,
    )


# ---------------------------------------------------------------- presets


class PresetError(HoningError, ValueError):
    """A preset, refinement mode, critic and task families that cannot work together."""


@dataclass(frozen=True)
class Preset:
    path: Path  # the preset.yaml file, for messages
    feedback_format: str  # "srt", or a task family's own format ("check")
    refine_modes: tuple[str, ...]  # what its templates support, from MODES


def load_preset(folder: str | Path) -> Preset:
    """The preset.yaml beside a folder's templates."""
    path = Path(folder) / "preset.yaml"
    if not path.is_file():
        raise PresetError(f"{path}: no such file (a prompt preset declares feedback_format and refine_modes)")
    data = yaml.safe_load(path.read_text()) or {}
    fmt, modes = data.get("feedback_format"), data.get("refine_modes")
    unknown = sorted(set(data) - {"feedback_format", "refine_modes"})
    if unknown:
        raise PresetError(f"{path}: unknown key(s) {', '.join(unknown)}; expected feedback_format, refine_modes")
    if not isinstance(fmt, str) or not fmt:
        raise PresetError(f"{path}: feedback_format must be a format name (e.g. srt), got {fmt!r}")
    if not isinstance(modes, list) or not modes or not set(modes) <= set(MODES):
        raise PresetError(f"{path}: refine_modes must be a list of {', '.join(MODES)}, got {modes!r}")
    return Preset(path, fmt, tuple(modes))


@dataclass(frozen=True)
class FeedbackPlan:
    """What a stage's preset and task families give it: the parser of the feedback
    format, and (when a family owns that format) its step checker and splice."""

    parse: Callable[[str], ParsedFeedback]
    check: Callable[[str, str], tuple[str, ParsedFeedback]] | None = None
    splice: Callable[[str, ParsedFeedback], Any] | None = None


def plan_feedback(preset: Preset, families: Mapping[str, Any], *, mode: str | None = None,
                  rule_critic: bool = False, mode_key: str = "refine.mode") -> FeedbackPlan:
    """Check the combination, then the parser (and step tools) the stage uses.

    `families`: the task families of the stage's prompts (`honing.tasks.base.Tasks.families`);
    `mode`: the refinement mode, where the stage refines; `rule_critic`: the critic is
    the rule oracle (`backend: oracle`).
    """
    where, fmt = preset.path, preset.feedback_format
    names = ", ".join(sorted(families)) or "none"
    owner = None
    if fmt == SRT:
        parse = parse_srt
    else:
        owners = [f for f in families.values() if f.feedback_format == fmt]
        if not owners:
            raise PresetError(f"{where}: feedback format {fmt!r} belongs to no task family of these prompts "
                              f"({names}); use a preset with feedback_format srt")
        owner = owners[0]
        others = sorted(n for n, f in families.items() if f is not owner)
        if others:
            raise PresetError(f"{where}: feedback format {fmt!r} is task family {owner.name!r}'s own, but these "
                              f"prompts also hold {', '.join(others)}; use a preset with feedback_format srt")
        parse = owner.parse_feedback
    if mode is not None:
        if mode not in MODES:
            raise PresetError(f"{mode_key} must be one of {', '.join(MODES)}, found {mode!r}")
        if mode not in preset.refine_modes:
            raise PresetError(f"{mode_key} {mode!r} does not fit {where}: its {fmt} feedback supports "
                              f"{', '.join(preset.refine_modes)}")
        if mode == "continue" and (owner is None or owner.splice is None):
            raise PresetError(f"{mode_key} 'continue' splices a corrected step into the answer, which needs a "
                              f"task family with a step checker; {names} has none")
    if rule_critic and (owner is None or owner.check is None):
        raise PresetError(f"critic backend 'oracle' is a task family's step checker writing {fmt!r} feedback; "
                          f"{names} has none (use a model critic)")
    return FeedbackPlan(parse, owner.check if owner else None, owner.splice if owner else None)
