"""Training tokens/s under `accelerate launch` (N processes) against one process.

    .venv/bin/python bench/bench_train_launch.py --tiny                 # CPU smoke run, under a minute
    .venv/bin/python bench/bench_train_launch.py --processes 8 \\
        --hidden-size 576 --layers 30 --records 8192 --batch 64 --tokens 256   # GPUs

Both sides run `honing.method.train.train` (SFT, the train stage's code) on the same
synthetic SFT records, model and params; the N-process side is launched the way
the train stage launches it (`stages._launch.accelerate_command`: the params'
`launch:` block, configs/accelerate/ddp.yaml unless --config-file). `--batch` is
the global batch: one process takes it whole, each of N takes 1/N (honing's
rule), so both do the same optimizer steps on the same tokens.

Rate = tokens trained / TRL's train_runtime (the training loop; model loading and
process start excluded), where tokens are TRL's `num_tokens` (prompt and
completion tokens, no padding, summed over processes). The wall seconds of each
run (imports and launch included) are printed beside it. Each side runs
--repeats times, alternating, and the best is kept (on a shared machine noise only
slows a run down). On CPUs the single process gets the threads of all N
(--threads-per-process x N; --single-threads to change it), so both sides use the
same cores; --tiny gives it one thread, because on a shared 2-core machine two
OpenMP threads of one process spin-wait on each other whenever a neighbour takes
a core (measured: 215 tokens/s with 2 threads against 5,300 with 1).

The model is the micro world's tiny Llama (`honing.micro.tinymodel`) at the size
given, untrained, with its WordPiece tokenizer; records are arithmetic prompts and
answers padded with words of that vocabulary to about --tokens tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # stages._launch, as the stage runs it

from honing.method.train import TrainConfig, is_main_process, train  # noqa: E402
from honing.micro.tinymodel import TinyModelConfig, save_untrained  # noqa: E402
from stages._launch import LaunchConfig, accelerate_command  # noqa: E402

FILLER = "Ann has coins . Ann gets more . How many coins does Ann have ?".split()


def make_records(count: int, tokens: int):
    """`count` prompt/completion records of about `tokens` tokens each (the tiny
    tokenizer: one token per word, one per digit)."""
    import polars as pl

    prompts, completions = [], []
    for i in range(count):
        words = [*FILLER] * (max(tokens - 24, 8) // len(FILLER) + 1)
        prompts.append([{"role": "user", "content": f"Problem : {' '.join(words[:max(tokens - 24, 8)])} "
                                                    f"{i} + {i % 97} = ? Solution :"}])
        completions.append([{"role": "assistant", "content": f"Answer : {i + i % 97}"}])
    return pl.DataFrame({"prompt": prompts, "completion": completions})


class LastFigures:
    """A CurveLogger keeping the last value of each figure (num_tokens, the loss)."""

    step = 0

    def __init__(self):
        self.values: dict[str, float] = {}

    def log_metric(self, name: str, val: float) -> None:
        self.values[name] = val

    def next_step(self) -> None:
        pass


def worker(folder: Path, sft: dict, name: str) -> None:
    """One side's training (every launched process runs this); the main process writes the figures."""
    import polars as pl

    records = pl.read_parquet(folder / "records.parquet")
    logger = LastFigures() if is_main_process() else None
    result = train(str(folder / "model"), folder / f"out-{name}", TrainConfig(method="sft", sft=sft),
                   sft_records=records, logger=logger)
    if is_main_process():
        (folder / f"{name}.json").write_text(json.dumps({
            "tokens": logger.values["sft/num_tokens"], "seconds": result["runtime"]["sft_train_runtime"],
            "steps": result["metrics"]["sft_steps"], "final_loss": result["metrics"]["sft_final_loss"],
            "processes": result["runtime"]["processes"]}))


def run_side(folder: Path, sft: dict, processes: int, config_file: str | None, threads: int, name: str) -> dict:
    target = [str(Path(__file__).resolve()), "--worker", str(folder), "--sft", json.dumps(sft), "--name", name]
    if processes == 1:
        command = [sys.executable, *target]
    else:
        command = accelerate_command(LaunchConfig(num_processes=processes, config_file=config_file), target)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    figures = json.loads((folder / f"{name}.json").read_text())
    return {**figures, "wall": time.perf_counter() - started, "rate": figures["tokens"] / figures["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke size: 2 processes, 128 records of ~48 tokens")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--config-file", default=None, help="accelerate config (default configs/accelerate/ddp.yaml)")
    parser.add_argument("--records", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=256, help="about this many tokens per record")
    parser.add_argument("--batch", type=int, default=32, help="global batch (records per optimizer step)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--hidden-size", type=int, default=576, help="model width (heads of size 32)")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads-per-process", type=int, default=1, help="CPU threads of each launched process")
    parser.add_argument("--single-threads", type=int, default=None,
                        help="CPU threads of the single process (default: threads-per-process x processes)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sft", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.sft), args.name)
        return
    if args.tiny:
        args.processes, args.records, args.tokens, args.batch = 2, 128, 48, 16
        args.hidden_size, args.layers, args.repeats, args.single_threads = 64, 3, 1, 1
    single_threads = args.single_threads or args.threads_per_process * args.processes

    sft = {"per_device_train_batch_size": args.batch, "num_train_epochs": args.epochs, "max_length": args.tokens + 16,
           "learning_rate": 1e-4, "logging_steps": 10**6, "disable_tqdm": True}
    with tempfile.TemporaryDirectory(prefix="honing-bench-train-") as tmp:
        folder = Path(tmp)
        config = TinyModelConfig(hidden_size=args.hidden_size, intermediate_size=4 * args.hidden_size,
                                 num_hidden_layers=args.layers, num_attention_heads=max(args.hidden_size // 32, 1))
        save_untrained(folder / "model", seed=0, config=config)
        make_records(args.records, args.tokens).write_parquet(folder / "records.parquet")
        from transformers import AutoModelForCausalLM

        parameters = AutoModelForCausalLM.from_pretrained(folder / "model").num_parameters()
        one, many = [], []
        for r in range(args.repeats):  # alternating, so a slow spell on a shared machine hits both sides
            one.append(run_side(folder, sft, 1, None, single_threads, f"one-{r}"))
            many.append(run_side(folder, sft, args.processes, args.config_file, args.threads_per_process,
                                 f"many-{r}"))

    best_one, best_many = max(one, key=lambda x: x["rate"]), max(many, key=lambda x: x["rate"])
    import torch

    device = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
              else f"CPU, {os.cpu_count()} cores")
    print(f"model: {parameters / 1e6:.2f} M parameters (hidden {args.hidden_size}, {args.layers} layers); "
          f"{args.records} records x ~{args.tokens} tokens, global batch {args.batch}, {args.epochs} epoch(s), "
          f"{best_one['steps']} steps; {device}")
    for label, runs in [(f"1 process ({single_threads} thread(s))", one),
                        (f"{args.processes} processes (accelerate launch)", many)]:
        best = max(runs, key=lambda x: x["rate"])
        print(f"{label + ':':34} {best['rate']:12,.0f} tokens/s best of {len(runs)} "
              f"({best['tokens']:,.0f} tokens in {best['seconds']:.2f} s of training, {best['wall']:.1f} s wall; "
              f"final loss {best['final_loss']})")
    assert best_one["steps"] == best_many["steps"], "the two sides did different numbers of steps"
    print(f"{args.processes} processes / 1 process: {best_many['rate'] / best_one['rate']:.2f}x tokens/s "
          f"(same global batch, same steps)")


if __name__ == "__main__":
    main()
