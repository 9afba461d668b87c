"""Quarantine: rows a stage could not use, with the reason, beside its outputs.
A quarantined row is never silently dropped: it is here and counted in metrics."""

from __future__ import annotations

import pandera.polars as pa

from schemas._common import TEXT


class Quarantine(pa.DataFrameModel):
    source_file: str = pa.Field(**TEXT, description="the file (or source) the row came from")
    row_id: str = pa.Field(nullable=True, description="the row's id, when it has one")
    column: str = pa.Field(nullable=True, description="the column at fault, when one is")
    reason: str = pa.Field(**TEXT, description="what was expected and what was found")
    row: str = pa.Field(description="the original row as JSON text (or the raw line)")

    class Config:
        strict = True
        coerce = True
