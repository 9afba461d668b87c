"""Refinements: each round of self-refinement of a candidate, with its critique as
written and parsed into fields (the same fields as Feedback)."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas._common import ID, PARSED_VERDICTS, REF, SCORE, TEXT


class Refinements(pa.DataFrameModel):
    id: str = pa.Field(**ID)
    candidate_id: str = pa.Field(**REF)
    prompt_id: str = pa.Field(**REF)
    prompt: str = pa.Field(**TEXT)  # refine.py and build_sft read it beside each round
    round: pl.Int64 = pa.Field(ge=0, description="0 is the candidate itself")
    response: str = pa.Field()
    feedback: str = pa.Field(description="the critic's reply on this round's response, raw")
    verdict: str = pa.Field(isin=PARSED_VERDICTS)
    score: pl.Int64 = pa.Field(**SCORE, nullable=True)
    weaknesses: str = pa.Field(nullable=True)
    suggestions: str = pa.Field(nullable=True)
    parse_error: str = pa.Field(nullable=True, description="why the reply did not parse")
    refinement: str = pa.Field(nullable=True, description="the critic's own refinement, where its format has one")
    flagged_step: pl.Int64 = pa.Field(ge=1, nullable=True, description="the step the feedback flags")
    quoted: str = pa.Field(nullable=True, description="the operation the feedback quoted at that step")
    recomputed: pl.Int64 = pa.Field(nullable=True, description="the value the feedback recomputed there")
    model: str = pa.Field(**TEXT)
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True

    @pa.check(
        "parse_error",
        name="parse_error_iff_unparsed",
        error="must be set exactly when verdict is 'unparsed'",
    )
    def _parse_error_iff_unparsed(cls, data: pa.PolarsData) -> pl.LazyFrame:
        unparsed = pl.col("verdict") == "unparsed"
        return data.lazyframe.select((unparsed == pl.col(data.key).is_not_null()).fill_null(False))
