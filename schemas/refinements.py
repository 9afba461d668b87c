"""Refinements: each round of self-refinement of a candidate, with its critique."""

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
    feedback: str = pa.Field()
    verdict: str = pa.Field(isin=PARSED_VERDICTS)
    score: pl.Int64 = pa.Field(**SCORE, nullable=True)
    model: str = pa.Field(**TEXT)
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True
