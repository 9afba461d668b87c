"""Pieces the artifact schemas share: allowed values, the chat-message type, checks.

Kept in one place so that "verdict" or "a message" means the same thing in every
artifact. Each artifact's own module stays a flat list of fields a reader can
extend by adding a line.
"""

from __future__ import annotations

import polars as pl

SPLITS = ["meta", "train", "eval"]
RESPONSE_SOURCES = ["policy_sampled", "policy_greedy", "gold", "noise"]
VERDICTS = ["correct", "incorrect"]  # what a critic can conclude
PARSED_VERDICTS = [*VERDICTS, "unparsed"]  # ... or that its reply could not be parsed
SFT_KINDS = ["answer", "feedback", "refinement"]

# A chat message as TRL reads it; a conversation is a list of them.
MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
PROMPT_ROLES = ["system", "user", "assistant"]
COMPLETION_ROLES = ["assistant"]

# Field kwargs reused across artifacts.
ID = {"unique": True, "str_length": {"min_value": 1}}  # a stable, non-empty, unique row id
REF = {"str_length": {"min_value": 1}}  # a non-empty reference to another artifact's id
TEXT = {"str_contains": r"\S"}  # text that is not blank after stripping whitespace
SCORE = {"ge": 1, "le": 10}  # a critic's 1-10 score


def conversation_ok(column: str, roles: list[str]) -> pl.Expr:
    """True where `column` is a non-empty list of messages whose roles are in `roles`
    and whose contents are present (empty text is allowed, null is not)."""
    messages = pl.col(column)
    return (
        (messages.list.len() > 0)
        & messages.list.eval(
            pl.element().struct.field("role").is_in(roles)
            & pl.element().struct.field("content").is_not_null()
        ).list.all()
    ).fill_null(False)

