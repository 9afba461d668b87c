"""Candidates: k sampled answers per prompt from the current policy."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas._common import ID, REF, TEXT


class Candidates(pa.DataFrameModel):
    id: str = pa.Field(**ID)
    prompt_id: str = pa.Field(**REF)
    prompt: str = pa.Field(**TEXT)
    sample_index: pl.Int64 = pa.Field(ge=0)
    response: str = pa.Field(description="the generated answer; may be empty")
    finish_reason: str = pa.Field(description="stop, length, ...")
    model: str = pa.Field(**TEXT)
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True
