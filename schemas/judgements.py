"""Judgements: a checkpoint's answers against reference answers, judged pairwise in both
orders by an LLM judge (evaluate@<checkpoint> with `evaluate.judge`)."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas._common import ID, REF, TEXT

VERDICTS = ["answer", "reference", "tie", "unparsed", "identical"]


class Judgements(pa.DataFrameModel):
    id: str = pa.Field(**ID, description="<prompt id>@<round>")
    prompt_id: str = pa.Field(**REF)
    round: pl.Int64 = pa.Field(ge=0, description="0: the direct answer; else after that many refinement rounds")
    answer: str = pa.Field(description="the checkpoint's answer")
    reference: str = pa.Field(description="the reference answer it is compared with")
    answer_first: str = pa.Field(isin=VERDICTS, description="the judge's verdict with the answer shown first")
    reference_first: str = pa.Field(isin=VERDICTS, description="... with the reference shown first")
    outcome: str = pa.Field(isin=["win", "loss", "tie"], description="for the answer; the orders must agree")
    tie_cause: str = pa.Field(isin=["judged_tie", "orders_disagree", "unparsed", "identical"], nullable=True)
    parse_error: str = pa.Field(nullable=True, description="why a reply of the judge did not parse")
    judge: str = pa.Field(**TEXT, description="the judge's model")
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True

    @pa.check("tie_cause", name="tie_cause_iff_tie", error="must be set exactly when the outcome is a tie")
    def _tie_cause_iff_tie(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select((pl.col("outcome") == "tie") == pl.col(data.key).is_not_null())
