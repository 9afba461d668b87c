"""train_meta: SFT on the meta-skill corpus (prompt + response → feedback, prompt →
refinement) from the base model, through TRL."""

from honing.artifacts.io import read_artifact, write_artifact
from honing.method.prompts import PromptSet
from honing.method.sft import MetaRecordsConfig, meta_records
from honing.method.train import TrainConfig, train
from schemas.meta_corpus import MetaCorpus
from schemas.sft import SFTRecords
from stages._live import live
from stages._outputs import write_metrics
from stages._params import load_params, main, stage_block, to_config

STAGE = "train_meta"


def run(argv: list[str]) -> None:
    params = load_params(STAGE)
    block = stage_block(params, STAGE)
    records_cfg = to_config(MetaRecordsConfig, block.pop("records", {}), "train_meta.records")
    cfg = to_config(TrainConfig, block, STAGE)
    corpus = read_artifact("data/meta_corpus/corpus.parquet", MetaCorpus)
    records = meta_records(corpus, PromptSet(params["templates"]), records_cfg)
    write_artifact(records, "data/train_meta/sft.parquet", SFTRecords)
    with live("dvclive/train_meta") as logger:  # the loss curve and TRL's logged figures
        result = train("data/base/model", "data/train_meta/model", cfg, sft_records=records, logger=logger)
    kinds = dict(records.group_by("kind").len().sort("kind").iter_rows())
    write_metrics("metrics/train_meta.json", {**result["metrics"], "records_by_kind": kinds}, result["runtime"])


if __name__ == "__main__":
    main(run)
