"""Feedback: the current model's critique of each candidate, as written and parsed
into fields once (refine reads the fields, never the text again). Unparseable
feedback is kept (verdict "unparsed") with the parser's reason."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas._common import ID, PARSED_VERDICTS, REF, SCORE, TEXT


class Feedback(pa.DataFrameModel):
    id: str = pa.Field(**ID, description="the candidate's id")
    prompt_id: str = pa.Field(**REF)
    response: str = pa.Field()
    feedback: str = pa.Field(description="the critic's reply, raw (training data)")
    verdict: str = pa.Field(isin=PARSED_VERDICTS)
    score: pl.Int64 = pa.Field(**SCORE, nullable=True)
    weaknesses: str = pa.Field(nullable=True)
    suggestions: str = pa.Field(nullable=True)
    parse_error: str = pa.Field(nullable=True, description="why the reply did not parse")
    refinement: str = pa.Field(nullable=True, description="the critic's own refinement, where its format has one")
    flagged_step: pl.Int64 = pa.Field(ge=1, nullable=True,
                                      description="the step the feedback flags (1-based; one past the last step "
                                                  "is the answer line); null where the format has no steps")
    quoted: str = pa.Field(nullable=True, description="the operation the feedback quoted at that step, e.g. "
                                                      "'42 - 5'; null on the answer line or without steps")
    recomputed: pl.Int64 = pa.Field(nullable=True, description="the value the feedback recomputed at that step")
    critic: str = pa.Field(**TEXT)
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
