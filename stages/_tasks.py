"""The task families of a stage's prompts, for the stages that check answers."""

from __future__ import annotations

import polars as pl

from honing.tasks.base import Tasks
from honing.tasks.families import load_tasks


def stage_tasks(prompts: pl.DataFrame, ids: pl.Series | None = None) -> Tasks:
    """The task families of a prompts artifact (its `task` column), or of its rows
    whose id is in `ids`."""
    if ids is not None:
        prompts = prompts.filter(pl.col("id").is_in(ids.unique().implode()))
    return load_tasks(prompts["task"].unique().to_list())
