"""base: the initial policy. Micro preset: pretrained from scratch on CPU; otherwise
a Hub model name or a local checkpoint folder, saved as the pipeline's base."""

from pathlib import Path

from honing.plots import write_csv
from honing.pretrain import PretrainConfig, pretrain, save_pretrained_copy
from honing.progress import StepProgress
from honing.prompts import PromptSet
from honing.stage import load_params, main, stage_params, to_config, write_metrics

OUT = Path("data/base/model")


def run(argv: list[str]) -> None:
    params = load_params()
    block = stage_params("base", params=params)
    source = block.pop("source", "micro")
    if source != "micro":
        write_metrics("metrics/base.json", save_pretrained_copy(source, OUT))
        write_csv("plots/base/loss.csv", [])
        return
    cfg = to_config(PretrainConfig, block, "base")
    with StepProgress("base pretraining") as progress:
        result = pretrain(OUT, cfg, PromptSet(params["templates"]), progress=progress)
    write_metrics("metrics/base.json", result["metrics"])
    write_csv("plots/base/loss.csv", result["curve"])


if __name__ == "__main__":
    main(run)
