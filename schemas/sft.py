"""SFTRecords: supervised examples in TRL's conversational prompt/completion format,
so `trl.SFTTrainer` trains on the file as it is (loss on the completion only)."""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

from schemas._common import (
    COMPLETION_ROLES,
    ID,
    MESSAGE,
    PROMPT_ROLES,
    REF,
    SFT_KINDS,
    TEXT,
    conversation_ok,
)


class SFTRecords(pa.DataFrameModel):
    id: str = pa.Field(**ID)
    prompt: Annotated[pl.List, MESSAGE] = pa.Field(description="messages before the completion")
    completion: Annotated[pl.List, MESSAGE] = pa.Field(description="the assistant message(s) to learn")
    kind: str = pa.Field(isin=SFT_KINDS)
    source_id: str = pa.Field(**REF, description="the row it was built from")
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True

    @pa.check("prompt", name="prompt_messages",
              error=f"must be a non-empty list of messages with roles in {PROMPT_ROLES} and content set")
    def _prompt_messages(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(conversation_ok(data.key, PROMPT_ROLES))

    @pa.check("completion", name="completion_messages",
              error="must be a non-empty list of assistant messages with content set")
    def _completion_messages(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(conversation_ok(data.key, COMPLETION_ROLES))
