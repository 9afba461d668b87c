"""MetaCorpus: the critic's feedback on policy (and gold/noise) answers, with a
refinement each; the meta-skill training data of SELF and SRT."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from schemas._common import ID, REF, RESPONSE_SOURCES, SCORE, TEXT, VERDICTS


class MetaCorpus(pa.DataFrameModel):
    id: str = pa.Field(**ID)
    prompt_id: str = pa.Field(**REF)
    prompt: str = pa.Field(**TEXT)
    response: str = pa.Field(description="the answer being critiqued")
    response_source: str = pa.Field(isin=RESPONSE_SOURCES)
    feedback: str = pa.Field(description="the critic's feedback, as written")
    verdict: str = pa.Field(isin=VERDICTS)
    score: pl.Int64 = pa.Field(**SCORE)
    weaknesses: str = pa.Field()
    suggestions: str = pa.Field()
    refinement: str = pa.Field(description="the critic's corrected answer")
    critic: str = pa.Field(**TEXT, description="the model or rule that wrote the feedback")
    policy: str = pa.Field(**TEXT, description="the model that wrote the response")
    iteration: str = pa.Field(**TEXT)

    class Config:
        strict = True
        coerce = True
