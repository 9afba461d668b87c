"""EvaluationRows: held-out answers per refinement round, judged against the reference."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas._common import ID, PARSED_VERDICTS, REF, SCORE, TEXT


class EvaluationRows(pa.DataFrameModel):
    id: str = pa.Field(**ID)
    prompt_id: str = pa.Field(**REF)
    round: pl.Int64 = pa.Field(ge=0, description="0 is the direct answer")
    response: str = pa.Field()
    verdict: str = pa.Field(isin=PARSED_VERDICTS, description="the model's own critique")
    score: pl.Int64 = pa.Field(**SCORE, nullable=True, description="its 1-10 score (null: none parsed)")
    correct: pl.Boolean = pa.Field(description="judged against the reference")
    model: str = pa.Field(**TEXT)
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True
