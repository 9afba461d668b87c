"""The smollm2-gym preset at GPU size, end to end, with its throughput and accuracy table.

    python bench/gpu_preset.py [--backend auto|vllm|transformers] [--workdir DIR] [--out FILE]
    python bench/gpu_preset.py --tiny        # a few dozen prompts, a few LoRA steps: checks it runs (CPU)

One prepared run for a GPU session: the tracked project files are copied into a
fresh git + DVC repository (`--workdir`, default a temp folder), `honing preset
presets/smollm2-gym.yaml` is applied, then the GPU sizes written beside the preset's
knobs (GPU below; `--tiny`: TINY), and `dvc repro` runs the whole DAG: SmolLM2-135M-
Instruct from its GGUF package, reasoning-gym prompts, the referee as the served
strong critic, LoRA training, evaluation with online self-refinement. The policy runs
on vLLM where it is importable (`--backend auto`), else on transformers.

Printed at the end, and written as JSON to `--out` (default <workdir>/gpu_preset.json):
- generation tokens/s per model-calling stage (the policy's new prompt + completion
  tokens over the seconds its calls took; runtime/<stage>.json) and overall;
- training tokens/s per training stage (the SFT records' tokens, counted with the
  checkpoint's tokenizer, times epochs run, over TRL's train_runtime);
- the stage table and accuracy table of `honing results --detail`;
- the wall-clock seconds of `dvc repro`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESET = "presets/smollm2-gym.yaml"

# The preset's `# GPU:` sizes (presets/smollm2-gym.yaml), merged over it.
GPU = {
    "prepare": {"split": {"meta": 0.2, "train": 0.6, "eval": 0.2}, "reasoning_gym": {"size": 6000}},
    "base": {"dtype": "bfloat16"},
    "meta_corpus": {"num_samples": 4, "max_tokens": 256},
    "train_meta": {"lora": {"r": 64, "lora_alpha": 128},
                   "sft": {"num_train_epochs": 2, "per_device_train_batch_size": 32}},
    "generate": {"num_samples": 4, "max_tokens": 256, "num_prompts": 3000},
    "critique": {"max_tokens": 256},
    "refine": {"rounds": 2, "max_tokens": 256, "critic": {"backend": "self", "max_tokens": 256}},
    "train": {"method": "sft+dpo", "lora": {"r": 64, "lora_alpha": 128},
              "sft": {"num_train_epochs": 2, "per_device_train_batch_size": 32},
              "dpo": {"per_device_train_batch_size": 32}},
    "evaluate": {"rounds": 2, "max_tokens": 256, "num_prompts": 0, "critic": {"backend": "self", "max_tokens": 256}},
}

# A few dozen prompts, 2 answers each, 2 LoRA steps per training: that it runs, not what it learns.
_STEPS = {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "warmup_steps": 0}
TINY = {
    "prepare": {"reasoning_gym": {"size": 48}, "split": {"meta": 0.25, "train": 0.35, "eval": 0.4}},
    "meta_corpus": {"num_samples": 0, "max_tokens": 16},
    "train_meta": {"sft": _STEPS},
    "generate": {"num_prompts": 8, "num_samples": 1, "max_tokens": 16},
    "critique": {"max_tokens": 24},
    "refine": {"max_tokens": 16, "critic": {"backend": "self", "max_tokens": 24}},
    "filter": {"require_correct": False},
    "train": {"sft": _STEPS},
    "evaluate": {"num_prompts": 8, "max_tokens": 16, "rounds": 1, "critic": {"backend": "self", "max_tokens": 24}},
}
# The policy block per (backend, sizes), replacing the preset's.
POLICY = {
    ("vllm", "gpu"): {"backend": "vllm", "gpu_memory_utilization": 0.5, "max_model_len": 2048},
    ("transformers", "gpu"): {"backend": "transformers", "batch_size": 256},
    ("vllm", "tiny"): {"backend": "vllm", "dtype": "float32", "max_model_len": 1024, "enforce_eager": True},
    ("transformers", "tiny"): {"backend": "transformers", "batch_size": 32},
}
MODEL_STAGES = ("meta_corpus", "generate", "critique", "refine", "evaluate")


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_vllm() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def run(command: list[str], cwd: Path, env: dict, log: Path | None = None) -> float:
    started = time.monotonic()
    with open(log, "w") if log else open(os.devnull, "w") as out:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log.read_text()[-3000:] if log else ""
        sys.exit(f"`{' '.join(command)}` exited {done.returncode}\n{tail}")
    return time.monotonic() - started


def setup(workdir: Path, size: str, backend: str) -> tuple[Path, dict]:
    """A git + DVC repo of the tracked project with the preset, the sizes and the
    policy's backend applied."""
    import yaml

    from honing.presets import apply_preset

    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    repo = workdir / "repo"
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    apply_preset(repo / PRESET, repo / "params.yaml")
    params = merge(yaml.safe_load((repo / "params.yaml").read_text()), GPU if size == "gpu" else TINY)
    params["policy"] = POLICY[backend, size]
    params["critic"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"  # the served referee's port
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, HONING_CACHE_DIR=str(workdir / "cache"), PYTHONPATH=str(repo / "src"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               DVC_NO_ANALYTICS="1", NO_COLOR="1")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@honing.invalid", "-c", "commit.gpgsign=false"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "smollm2-gym preset"]):
        run([*git, *command], repo, env)
    return repo, env


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def generation_rates(repo: Path) -> dict[str, dict]:
    """The policy's new tokens over its calls' seconds, per model-calling stage."""
    rates = {}
    for path in sorted((repo / "runtime").rglob("*.json")):
        rel = path.relative_to(repo / "runtime").with_suffix("")
        if rel.parts[0] == "stages" or not any(part in MODEL_STAGES for part in rel.parts):
            continue
        calls = read(path).get("calls") or {}
        tokens = calls.get("new_prompt_tokens", 0) + calls.get("new_completion_tokens", 0)
        if calls.get("seconds") and tokens:
            rates["/".join(rel.parts)] = {"tokens": tokens, "completion_tokens": calls["new_completion_tokens"],
                                          "seconds": calls["seconds"],
                                          "tokens_per_second": round(tokens / calls["seconds"], 1)}
    return rates


def training_rates(repo: Path) -> dict[str, dict]:
    """SFT tokens (records x epochs run) over TRL's train_runtime, per training stage."""
    import polars as pl
    from transformers import AutoTokenizer

    stages = {"train_meta": ("train_meta", "data/train_meta/sft.parquet", "data/train_meta/model")}
    for it in sorted(p.name for p in (repo / "data").iterdir() if (p / "build_sft/sft.parquet").is_file()):
        stages[f"train@{it}"] = (f"{it}/train", f"data/{it}/build_sft/sft.parquet", f"data/{it}/train/model")
    rates = {}
    for name, (under, records_path, model) in stages.items():
        metrics, runtime = read(repo / "metrics" / f"{under}.json"), read(repo / "runtime" / f"{under}.json")
        seconds = runtime.get("sft_train_runtime")
        if not seconds or not (repo / records_path).is_file():
            continue
        tokenizer = AutoTokenizer.from_pretrained(repo / model)
        records = pl.read_parquet(repo / records_path)
        tokens = sum(len(tokenizer.apply_chat_template([*p, *c], tokenize=True)["input_ids"])
                     for p, c in zip(records["prompt"].to_list(), records["completion"].to_list(), strict=True))
        batch = (metrics.get("config") or {}).get("sft", {}).get("per_device_train_batch_size", 8)
        # epochs run: steps x batch over the records (max_steps may stop before an epoch ends)
        epochs = metrics.get("sft_steps", 0) * batch / max(records.height, 1)
        trained = tokens * min(epochs, float((metrics.get("config") or {}).get("sft", {}).get("num_train_epochs", 1)))
        rates[name] = {"records": records.height, "steps": metrics.get("sft_steps"), "seconds": float(seconds),
                       "tokens_per_second": round(trained / float(seconds), 1)}
        if runtime.get("dpo_train_runtime"):  # DPO's pairs: TRL's own rate
            rates[name]["dpo_seconds"] = float(runtime["dpo_train_runtime"])
            rates[name]["dpo_samples_per_second"] = float(runtime.get("dpo_train_samples_per_second", 0))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few dozen prompts and LoRA steps (CPU check)")
    parser.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto")
    parser.add_argument("--workdir", type=Path, help="where the repo and its caches go (default: a temp folder)")
    parser.add_argument("--out", type=Path, help="the JSON summary (default: <workdir>/gpu_preset.json)")
    args = parser.parse_args()
    backend = args.backend if args.backend != "auto" else ("vllm" if has_vllm() else "transformers")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-preset-"))
    workdir.mkdir(parents=True, exist_ok=True)
    size = "tiny" if args.tiny else "gpu"
    print(f"gpu_preset: {size} sizes, policy on {backend}, in {workdir}", flush=True)
    repo, env = setup(workdir, size, backend)
    seconds = run([str(Path(sys.executable).parent / "dvc"), "repro"], repo, env, workdir / "repro.log")
    table = subprocess.run([str(Path(sys.executable).parent / "honing"), "results", "--detail"], cwd=repo, env=env,
                           capture_output=True, text=True, check=True).stdout
    generation, training = generation_rates(repo), training_rates(repo)
    total = {k: sum(r[k] for r in generation.values()) for k in ("tokens", "seconds")}
    summary = {"sizes": size, "backend": backend, "repro_seconds": round(seconds, 1),
               "generation": generation, "generation_tokens_per_second":
                   round(total["tokens"] / total["seconds"], 1) if total["seconds"] else None,
               "training": training, "results": table}
    out = args.out or workdir / "gpu_preset.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"dvc repro: {seconds:.0f} s (policy on {backend})")
    print("generation (the policy's new tokens over its calls' seconds):")
    for stage, r in generation.items():
        print(f"  {stage:24} {r['tokens']:>10,} tokens {r['seconds']:>9.1f} s "
              f"{r['tokens_per_second']:>10,.1f} tokens/s")
    print(f"  {'all':24} {total['tokens']:>10,} tokens {total['seconds']:>9.1f} s "
          f"{summary['generation_tokens_per_second'] or 0:>10,.1f} tokens/s")
    print("training (SFT tokens trained over TRL's train_runtime):")
    for stage, r in training.items():
        print(f"  {stage:24} {r['records']:>6} records {r['steps']:>5} steps {r['seconds']:>9.1f} s "
              f"{r['tokens_per_second']:>10,.1f} tokens/s")
    print(table)
    print(f"summary: {out}")


if __name__ == "__main__":
    main()
