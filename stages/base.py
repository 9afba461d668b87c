"""base: the initial policy. Micro preset: pretrained from scratch on CPU; otherwise
a Hub model name or a local checkpoint folder, saved as the pipeline's base."""

from pathlib import Path

from honing.method.prompts import PromptSet
from honing.micro.pretrain import PretrainConfig, pretrain, save_pretrained_copy
from honing.progress import StepProgress
from stages._outputs import write_csv, write_metrics
from stages._params import load_params, main, stage_block, to_config

OUT = Path("data/base/model")
RUNTIME_KEYS = ("seconds", "tokens_per_second")


def run(argv: list[str]) -> None:
    params = load_params("base")
    block = stage_block(params, "base")
    source = block.pop("source", "micro")
    if source != "micro":
        write_metrics("metrics/base.json", save_pretrained_copy(source, OUT))
        write_csv("plots/base/loss.csv", [])
        return
    cfg = to_config(PretrainConfig, block, "base")
    with StepProgress("base pretraining") as progress:
        result = pretrain(OUT, cfg, PromptSet(params["templates"]), progress=progress)
    metrics = {k: v for k, v in result["metrics"].items() if k not in RUNTIME_KEYS}
    runtime = {k: v for k, v in result["metrics"].items() if k in RUNTIME_KEYS}
    write_metrics("metrics/base.json", metrics, runtime)
    write_csv("plots/base/loss.csv", result["curve"])


if __name__ == "__main__":
    main(run)
