"""Prompts: the prepared prompt pools (data/prepare/{meta,train,eval}.parquet)."""

from __future__ import annotations

import pandera.polars as pa

from schemas._common import ID, SPLITS, TEXT


class Prompts(pa.DataFrameModel):
    id: str = pa.Field(**ID, description="sha256 of the normalised prompt, 16 hex chars")
    prompt: str = pa.Field(**TEXT, description="the normalised prompt text")
    reference: str = pa.Field(nullable=True, description="a gold solution, if the pool has one")
    answer: str = pa.Field(nullable=True, description="the gold final answer, if known")
    task: str = pa.Field(str_matches=r"^[a-z_]+(:\S+)?$",
                         description="the task family, then the task: micro, reference, reasoning_gym:chain_sum")
    metadata: str = pa.Field(nullable=True, description="what the family's verifier needs, as JSON text "
                                                        "(a reasoning-gym entry), if anything")
    source: str = pa.Field(**TEXT, description="where the prompt came from (provenance)")
    split: str = pa.Field(isin=SPLITS, description="meta, train or eval")

    class Config:
        strict = True
        coerce = True
