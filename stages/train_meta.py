"""train_meta: SFT on the meta-skill corpus (prompt + response → feedback, prompt →
refinement) from the base model, through TRL."""


from honing.io import read_artifact, write_artifact
from honing.plots import write_csv
from honing.prompts import PromptSet
from honing.sft import MetaRecordsConfig, meta_records
from honing.stage import load_params, main, stage_params, to_config, write_metrics
from honing.train import TrainConfig, train
from schemas.meta_corpus import MetaCorpus
from schemas.sft import SFTRecords


def run(argv: list[str]) -> None:
    params = load_params()
    block = stage_params("train_meta", params=params)
    records_cfg = to_config(MetaRecordsConfig, block.pop("records", {}), "train_meta.records")
    cfg = to_config(TrainConfig, block, "train_meta")
    corpus = read_artifact("data/meta_corpus/corpus.parquet", MetaCorpus)
    records = meta_records(corpus, PromptSet(params["templates"]), records_cfg)
    write_artifact(records, "data/train_meta/sft.parquet", SFTRecords)
    result = train("data/base/model", "data/train_meta/model", cfg, sft_records=records)
    kinds = dict(records.group_by("kind").len().sort("kind").iter_rows())
    write_metrics("metrics/train_meta.json", {**result["metrics"], "records_by_kind": kinds})
    write_csv("plots/train_meta/loss.csv", result["curve"])


if __name__ == "__main__":
    main(run)
