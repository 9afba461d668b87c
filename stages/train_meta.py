"""train_meta: SFT on the meta-skill corpus (prompt + response → feedback, prompt →
refinement) from the base model, through TRL. With `train_meta.launch:
{num_processes: N}` it runs itself under `accelerate launch` (stages/_launch.py);
only the main process writes."""

from contextlib import nullcontext

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.prompts import PromptSet
from honing.method.sft import MetaRecordsConfig, meta_records
from honing.method.train import TrainConfig, check_inputs, is_main_process, train
from schemas.meta_corpus import MetaCorpus
from schemas.sft import SFTRecords
from stages._launch import launch_config, relaunch
from stages._live import live
from stages._outputs import write_metrics
from stages._params import load_params, main, stage_block, to_config

STAGE = "train_meta"


def run(argv: list[str]) -> None:
    params = load_params(STAGE)
    block = stage_block(params, STAGE)
    records_cfg = to_config(MetaRecordsConfig, block.pop("records", {}), "train_meta.records")
    launch = launch_config(block.pop("launch", None), f"{STAGE}.launch")  # how to train, not what
    cfg = to_config(TrainConfig, block, STAGE)
    corpus = read_artifact("data/meta_corpus/corpus.parquet", MetaCorpus)
    records = meta_records(corpus, PromptSet(params["templates"]), records_cfg)
    check_inputs(cfg, launch.num_processes, records)  # here, before any process is launched
    if relaunch(launch, "stages.train_meta", argv):
        return  # the launched processes trained and wrote the outputs
    main_process = is_main_process()
    if main_process:
        write_artifact(records, "data/train_meta/sft.parquet", SFTRecords)
    # the loss curve and TRL's logged figures
    with live("dvclive/train_meta") if main_process else nullcontext() as logger:
        result = train("data/base/model", "data/train_meta/model", cfg, sft_records=records, logger=logger)
    if main_process:
        kinds = dict(records.group_by("kind").len().sort("kind").iter_rows())
        write_metrics("metrics/train_meta.json", {**result["metrics"], "records_by_kind": kinds},
                      result["runtime"])


if __name__ == "__main__":
    main(run)
