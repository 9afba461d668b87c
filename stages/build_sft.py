"""build_sft@<iteration>: SFT records (TRL prompt/completion) from the kept answers.

It streams: each pass (answers, feedback records, refinement records) reads its
artifacts a few row groups at a time in frames of whole prompts, and the records are
written as they come, so memory stays flat however large the pool (inputs out of
prompt order are read in memory)."""

from collections import Counter

import polars as pl

from honing.artifacts.io import grouped, in_memory_if_unsorted, lookup, read_batches, write_batches
from honing.method.prompts import PromptSet
from honing.method.sft import BuildSFTConfig, RecordSources, iteration_record_stream
from schemas.filtered import Filtered
from schemas.prompts import Prompts
from schemas.refinements import Refinements
from schemas.sft import SFTRecords
from stages._outputs import write_metrics
from stages._params import load_params, main, stage_block, to_config
from stages._tasks import stage_tasks

STAGE = "build_sft"
PROMPTS = "data/prepare/train.parquet"
KEPT = ["id", "prompt_id", "prompt", "response"]
CHAINS = ["id", "candidate_id", "prompt_id", "prompt", "round", "response", "feedback"]
ROUND0 = ["id", "prompt_id", "prompt", "response", "feedback", "verdict"]


def run(argv: list[str]) -> None:
    (iteration,) = argv
    params = load_params(STAGE, iteration)
    cfg = to_config(BuildSFTConfig, stage_block(params, STAGE, iteration), STAGE)
    filtered_path = f"data/{iteration}/filter/filtered.parquet"
    refinements_path = f"data/{iteration}/refine/refinements.parquet"
    tasks = stage_tasks(pl.concat(b.select(pl.col("task").unique()) for b in read_batches(PROMPTS, Prompts,
                                                                                           columns=["task"])))
    row_columns = tasks.row_columns()
    # the noise checks write answers to the prompts themselves
    noise_columns = None if row_columns is None else [*row_columns, "prompt"]

    def records(in_memory: bool) -> Counter:
        def kept():
            return read_batches(filtered_path, Filtered, columns=KEPT, where=pl.col("kept"), in_memory=in_memory)

        def prompts(columns):
            return read_batches(PROMPTS, Prompts, columns=columns, in_memory=in_memory)

        def refinements(columns, where=None):
            return grouped(read_batches(refinements_path, Refinements, columns=columns, where=where,
                                        in_memory=in_memory), "prompt_id", sorted_by=["candidate_id"],
                           in_memory=in_memory)

        def chains(with_kept: bool):
            rows = lookup(refinements(CHAINS), "prompt_id", prompts(row_columns), in_memory=in_memory)
            if with_kept:
                return lookup(rows, "prompt_id", kept(), key="prompt_id", in_memory=in_memory)
            return ((r, p, None) for r, p in rows)

        sources = RecordSources(
            kept=lambda: grouped(kept(), "prompt_id", in_memory=in_memory), chains=chains,
            round0=lambda: lookup(refinements([*ROUND0, "candidate_id"], pl.col("round") == 0), "prompt_id",
                                  prompts(noise_columns), in_memory=in_memory))
        by_kind: Counter = Counter()

        def count(frame: pl.DataFrame) -> pl.DataFrame:
            by_kind.update(dict(frame.get_column("kind").value_counts().iter_rows()))
            return frame

        write_batches(map(count, iteration_record_stream(sources, PromptSet(params["templates"]), cfg, iteration,
                                                         tasks=tasks)),
                      f"data/{iteration}/build_sft/sft.parquet", SFTRecords)
        return by_kind

    by_kind = in_memory_if_unsorted(records)
    write_metrics(f"metrics/{iteration}/build_sft.json",
                  {"records": sum(by_kind.values()), "by_kind": dict(sorted(by_kind.items()))})


if __name__ == "__main__":
    main(run)
