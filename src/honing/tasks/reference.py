"""reference: prompts with a reference answer (files, `hf:` datasets), checked by rule.

The final answer of a response is "Answer : x" at its end (the micro world's form),
else the last number in it (thousands separators read: "1,200"). A reference may be
GSM8K-style, "reasoning #### 72", whose final answer is what follows "####".
A row with no reference answer is not checked (None).

`final_answer_expr` and `verify_expr` are the same reading as polars expressions (the
family's `vectorized` rule): the regexes spell out Python's whitespace and digits,
which Rust's regex classes define a little differently.
"""

from __future__ import annotations

import functools
import re

import polars as pl

from honing.tasks.base import PY_SPACE, Row, TaskFamily, VectorizedRule

_ANSWER_LINE = re.compile(r"Answer : (\S+)\s*$")
_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(response: str) -> str | None:
    """The final answer: "Answer : x" at the end, else the last number in the text."""
    if m := _ANSWER_LINE.search(response.strip()):
        return m.group(1)
    numbers = _LAST_NUMBER.findall(response)
    return numbers[-1] if numbers else None


def reference_answer(answer: str) -> str:
    """The final answer of a reference: GSM8K-style "reasoning #### 72" gives "72"."""
    return answer.rsplit("####", 1)[-1].strip() if "####" in answer else answer.strip()


def _normal(value: str) -> str:
    return value.replace(",", "").rstrip(".").strip()


def rule_correct(response: str, answer: str | None) -> bool | None:
    """True/False against the reference answer; None where there is none."""
    if answer is None:
        return None
    got = extract_answer(response)
    return got is not None and _normal(got) == _normal(reference_answer(str(answer)))


def verify(response: str, row: Row) -> bool | None:
    return rule_correct(response, row.get("answer"))


# ---------------------------------------------------------------- as polars expressions


def _class(chars: list[int], negate: bool = False) -> str:
    """A Rust regex character class holding exactly these code points."""
    ranges, start = [], None
    for i, c in enumerate(chars):
        if start is None:
            start = c
        if i + 1 == len(chars) or chars[i + 1] != c + 1:
            ranges.append(f"\\x{{{start:x}}}" + (f"-\\x{{{c:x}}}" if c != start else ""))
            start = None
    return f"[{'^' if negate else ''}{''.join(ranges)}]"


@functools.cache
def _patterns() -> tuple[str, str]:
    """(the answer line, a number) as Rust regexes that match what Python's re does."""
    space = sorted(map(ord, PY_SPACE))
    digits = [c for c in range(0x20000) if chr(c).isdecimal()]  # re's \d (none above U+1FBF9)
    s, not_s, d = _class(space), _class(space, negate=True), _class(digits)
    digits_or_comma = d[:-1] + ",]"
    return f"Answer : ({not_s}+){s}*$", f"-?{d}{digits_or_comma}*(?:\\.{d}+)?"


def final_answer_expr(response: pl.Expr) -> pl.Expr:
    """`extract_answer` as an expression: the "Answer : x" line, else the last number."""
    answer_line, number = _patterns()
    line = response.str.extract(answer_line, 1)  # its trailing \s*$ reads what strip() would remove
    # every number is listed only where there is no answer line (a null costs nothing):
    # listing them all was most of the check's time
    last = pl.when(line.is_null()).then(response).str.extract_all(number).list.last()
    return pl.coalesce(line, last)


def _unpunctuated_expr(value: pl.Expr) -> pl.Expr:
    return value.str.replace_all(",", "", literal=True).str.strip_chars_end(".")


def _normal_expr(value: pl.Expr) -> pl.Expr:
    return _unpunctuated_expr(value).str.strip_chars(PY_SPACE)


def reference_expr(answer: pl.Expr) -> pl.Expr:
    """A prompt's answer as `matches_expr` compares it: `_normal(reference_answer(answer))`."""
    after = (pl.when(answer.str.contains("####", literal=True))
             .then(answer.str.extract(r"(?s)^.*####(.*)$", 1))  # after the last ####, as rsplit reads it
             .otherwise(answer).str.strip_chars(PY_SPACE))
    return _normal_expr(after)


def matches_expr(got: pl.Expr, reference: pl.Expr) -> pl.Expr:
    """Whether a final answer read by `final_answer_expr` matches the reference (as
    `reference_expr` reads it): `rule_correct` as an expression, null where there is no
    reference answer. `got` holds no whitespace (both readings exclude it), so of
    `_normal` it needs the commas and trailing dots removed."""
    normal = _unpunctuated_expr(got)
    return (pl.when(reference.is_null()).then(pl.lit(None, pl.Boolean))
            .otherwise(got.is_not_null() & (normal == reference).fill_null(False)))


def verify_expr(response: pl.Expr, answer: pl.Expr) -> pl.Expr:
    return matches_expr(final_answer_expr(response), reference_expr(answer))


VECTORIZED = VectorizedRule(final_answer=final_answer_expr, reference=reference_expr, matches=matches_expr)


def family() -> TaskFamily:
    return TaskFamily("reference", verify=verify, final_answer=extract_answer, vectorized=VECTORIZED)
