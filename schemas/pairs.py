"""PreferencePairs: chosen/rejected answers to one prompt, in TRL's conversational
preference format, so `trl.DPOTrainer` trains on the file as it is."""

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
    TEXT,
    conversation_ok,
)


class PreferencePairs(pa.DataFrameModel):
    id: str = pa.Field(**ID)
    prompt_id: str = pa.Field(**REF)
    prompt: Annotated[pl.List, MESSAGE] = pa.Field()
    chosen: Annotated[pl.List, MESSAGE] = pa.Field()
    rejected: Annotated[pl.List, MESSAGE] = pa.Field()
    chosen_score: pl.Float64 = pa.Field()
    rejected_score: pl.Float64 = pa.Field()
    margin: pl.Float64 = pa.Field(gt=0, description="how much better chosen is, by the chosen signal")
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True

    @pa.check("prompt", name="prompt_messages",
              error=f"must be a non-empty list of messages with roles in {PROMPT_ROLES} and content set")
    def _prompt_messages(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(conversation_ok(data.key, PROMPT_ROLES))

    @pa.check("chosen", "rejected", name="answer_messages",
              error="must be a non-empty list of assistant messages with content set")
    def _answer_messages(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(conversation_ok(data.key, COMPLETION_ROLES))
