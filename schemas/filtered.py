"""Filtered: every refined candidate with the filters' decision and its reason."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas._common import ID, PARSED_VERDICTS, REF, SCORE, TEXT


class Filtered(pa.DataFrameModel):
    id: str = pa.Field(**ID, description="the candidate's id")
    prompt_id: str = pa.Field(**REF)
    prompt: str = pa.Field(**TEXT)
    response: str = pa.Field(description="the final answer after refinement")
    rounds: pl.Int64 = pa.Field(ge=0, description="refinement rounds it went through")
    verdict: str = pa.Field(isin=PARSED_VERDICTS)
    score: pl.Int64 = pa.Field(**SCORE, nullable=True)
    correct: pl.Boolean = pa.Field(nullable=True, description="rule check; null without a reference")
    final_answer: str = pa.Field(nullable=True, description="the final answer the task family reads")
    majority: str = pa.Field(nullable=True, description="the final answer most of the prompt's samples reach; "
                                                        "null on a tie")
    agreement: pl.Float64 = pa.Field(ge=0, le=1, description="the share of the prompt's samples that reach "
                                                             "the majority (self-consistency)")
    reward: pl.Float64 = pa.Field(nullable=True, description="the reward model's score; null without one")
    kept: pl.Boolean = pa.Field()
    reason: str = pa.Field(nullable=True, description="why it was dropped")
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True

    @pa.check("reason", name="reason_when_dropped", error="must be set when kept is false")
    def _reason_when_dropped(cls, data: pa.PolarsData) -> pl.LazyFrame:
        has_reason = pl.col(data.key).str.contains(r"\S").fill_null(False)
        return data.lazyframe.select((pl.col("kept") | has_reason).fill_null(False))
