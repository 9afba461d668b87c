"""The real train stage under `accelerate launch`: 2 CPU processes (DDP over gloo)
train the tiny model as one process does.

Two copies of the project, equal but for `train.launch.num_processes` (1 and 2),
run `python -m stages.train it1` on the same SFT records, tiny model and params
(global batch 8: 8 per step in one process, 4 in each of two). The two-process
run must give the single process's loss at every step, weights, metrics file and
set of output files, with only the main process writing.

Tolerance. The same records make the same batches and every process starts from
the same weights; DDP changes only the order of float32 additions: each process
sums its half of a batch's token losses, and gloo adds the halves' gradients.
Rounding at float32's 6e-8 relative, carried through 8 AdamW steps, stays far
under 1e-4: measured here, the losses differ by at most 4e-7 relative (one unit
in the 6th digit dvclive keeps) and the weights by at most 1.3e-7. The bounds
(1e-4 relative on the loss, 1e-4 absolute on weights of size ~0.02-1) leave a
wide margin for other CPUs' kernels and still fail a global batch that differs
(twice the batch gives half the steps) or a process training on its own (the
first step alone moves the loss by over 1e-2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from conftest import REPO_ROOT, copy_project, subprocess_env

from honing.artifacts.io import write_artifact
from honing.method.train import per_process_args
from honing.micro import tinymodel
from schemas.sft import SFTRecords
from stages._launch import accelerate_command, launch_config
from stages._params import StageError

ITERATION = "it1"
RECORDS = 32
SFT = {"learning_rate": 0.01, "num_train_epochs": 2, "per_device_train_batch_size": 8, "max_length": 64,
       "logging_steps": 1, "lr_scheduler_type": "cosine", "warmup_steps": 1}
STEPS = RECORDS // SFT["per_device_train_batch_size"] * SFT["num_train_epochs"]
CHECKPOINT = Path(f"data/{ITERATION}/train/model")
CURVE = Path(f"dvclive/{ITERATION}/train/plots/metrics/loss.tsv")
METRICS = Path(f"metrics/{ITERATION}/train.json")
RUNTIME = Path(f"runtime/{ITERATION}/train.json")
# what the stage writes, by its pipeline names (and the folder its temp files would be left in)
OUTPUTS = (f"data/{ITERATION}/train", f"dvclive/{ITERATION}/train", METRICS.as_posix(), RUNTIME.as_posix(),
           f"runtime/stages/train@{ITERATION}.json")


def sft_records(n: int = RECORDS) -> pl.DataFrame:
    return pl.DataFrame({
        "id": [f"r{i:02d}" for i in range(n)],
        "prompt": [[{"role": "user", "content": f"Problem : Ann has {10 + i} coins . How many coins now ? Solution :"}]
                   for i in range(n)],
        "completion": [[{"role": "assistant", "content": f"Answer : {10 + i}"}] for i in range(n)],
        "kind": ["answer"] * n, "source_id": [f"s{i:02d}" for i in range(n)], "iteration": [ITERATION] * n,
    })


def stage_copy(root: Path, launch: dict | None) -> Path:
    """A project copy whose it1 starts from an untrained tiny model, with SFT records
    written as build_sft would, and small `train` params (`launch` as given)."""
    copy_project(root)
    (root / METRICS).unlink(missing_ok=True)  # the default run's, committed: this stage has not run here
    for committed in (root / f"dvclive/{ITERATION}/train").rglob("*"):
        if committed.is_file():
            committed.unlink()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"] = {"method": "sft", "seed": 0, "sft": SFT, **({"launch": launch} if launch is not None else {})}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    tinymodel.save_untrained(root / params["iterations"][ITERATION]["init"], seed=1)
    write_artifact(sft_records(), root / f"data/{ITERATION}/build_sft/sft.parquet", SFTRecords)
    return root


def run_train(root: Path) -> subprocess.CompletedProcess:
    # one thread per process: two torch processes with two threads each on 2 cores slow each other 5-20x
    env = subprocess_env(root.parent / f"{root.name}-cache", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, "-m", "stages.train", ITERATION], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def written(root: Path) -> list[str]:
    files = []
    for name in OUTPUTS:
        path = root / name
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sorted(p.relative_to(root).as_posix() for p in files)


def curve(root: Path) -> tuple[list[int], list[float]]:
    header, *rows = (root / CURVE).read_text().splitlines()
    assert header == "step\tloss"
    return [int(r.split("\t")[0]) for r in rows], [float(r.split("\t")[1]) for r in rows]


def weights(root: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(root / CHECKPOINT).state_dict()


@pytest.fixture(scope="module")  # two stage runs, one of them two processes: about 45 s on 2 cores
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("launch")
    one = stage_copy(base / "one", launch=None)  # params as before this feature: no launch block
    two = stage_copy(base / "two", launch={"num_processes": 2, "config_file": None})
    run_train(one)
    run_train(two)
    return {"one": one, "two": two}


@pytest.mark.slow
def test_two_processes_give_the_single_process_loss_at_every_step(runs):
    steps_one, loss_one = curve(runs["one"])
    steps_two, loss_two = curve(runs["two"])
    assert steps_one == steps_two == list(range(1, STEPS + 1))  # same global batch: same steps, each once
    assert loss_two == pytest.approx(loss_one, rel=1e-4)
    assert loss_one[-1] < loss_one[0] * 0.8  # it trained


@pytest.mark.slow
def test_the_checkpoint_loads_and_matches_the_single_process_weights(runs):
    one, two = weights(runs["one"]), weights(runs["two"])
    assert set(one) == set(two)
    worst = max((one[k] - two[k]).abs().max().item() for k in one)
    assert worst < 1e-4, f"weights differ by up to {worst}"
    files = sorted(p.name for p in (runs["two"] / CHECKPOINT).iterdir())
    assert files == sorted(p.name for p in (runs["one"] / CHECKPOINT).iterdir())  # the same layout


@pytest.mark.slow
def test_one_set_of_outputs_and_metrics_without_the_launch(runs):
    one, two = runs["one"], runs["two"]
    assert written(two) == written(one)  # no second copy, no temp folder left behind
    assert not [name for name in written(two) if "/.train-" in name or "/.model." in name]
    m1, m2 = json.loads((one / METRICS).read_text()), json.loads((two / METRICS).read_text())
    assert m2["config"] == m1["config"] and "launch" not in m2["config"]  # how it trained is not data
    assert m2["sft_final_loss"] == pytest.approx(m1["sft_final_loss"], rel=1e-4)
    assert {k: v for k, v in m2.items() if k != "sft_final_loss"} == {k: v for k, v in m1.items()
                                                                       if k != "sft_final_loss"}
    # the processes are a runtime figure, beside the seconds
    assert json.loads((two / RUNTIME).read_text())["processes"] == 2
    assert json.loads((one / RUNTIME).read_text())["processes"] == 1


@pytest.mark.slow
def test_a_batch_that_does_not_split_stops_in_one_line_before_any_launch(tmp_path):
    root = stage_copy(tmp_path / "odd", launch={"num_processes": 3})
    env = subprocess_env(tmp_path / "cache", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "stages.train", ITERATION], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [  # one line: nothing was launched
        "error: train: sft.per_device_train_batch_size 8 does not split over 3 processes (each process takes "
        "an equal share of every batch, so the global batch stays 8): use a multiple of 3 or another number "
        "of processes"]
    assert not (root / CHECKPOINT).exists() and not (root / METRICS).exists()


@pytest.mark.parametrize(("block", "expected"), [
    ({"num_processes": 0}, "`train.launch.num_processes`: expected a whole number >= 1, found 0"),
    ({"num_processes": 2, "config_file": "configs/accelerate/none.yaml"},
     "`train.launch.config_file`: no accelerate config at configs/accelerate/none.yaml"),
    ({"processes": 2}, "`train.launch`: unknown key(s) processes; expected some of "
                       "config_file, main_process_port, num_processes"),
])
def test_launch_params_that_cannot_work_are_refused(monkeypatch, block, expected):
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(StageError) as error:
        launch_config(block, "train.launch")
    assert str(error.value) == f"params.yaml {expected}"


def test_one_process_and_no_config_file_train_in_the_stage_itself(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    assert not launch_config(None, "train.launch").launches
    assert not launch_config({"num_processes": 1, "config_file": None}, "train.launch").launches
    assert launch_config({"num_processes": 1, "config_file": "configs/accelerate/zero3.yaml"},
                         "train.launch").launches  # e.g. ZeRO-3 with offload on one GPU


def test_the_accelerate_command(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    launch = launch_config({"num_processes": 4, "config_file": "configs/accelerate/zero2.yaml",
                            "main_process_port": 29601}, "train.launch")
    assert accelerate_command(launch, ["-m", "stages._launch", "stages.train", "it2"]) == [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/zero2.yaml",
        "--num_processes", "4", "--main_process_port", "29601", "-m", "stages._launch", "stages.train", "it2"]
    default = accelerate_command(launch_config({"num_processes": 2}, "train.launch"), ["x.py"])
    assert default[3:7] == ["--config_file", "configs/accelerate/ddp.yaml", "--num_processes", "2"]
    assert int(default[8]) > 0  # a free port, not accelerate's fixed 29500 that a second stage would meet


def test_each_process_takes_an_equal_share_of_every_batch():
    from trl import DPOConfig

    args = {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2, "learning_rate": 0.1}
    assert per_process_args(args, DPOConfig, 1, "dpo") == args
    assert per_process_args(args, DPOConfig, 4, "dpo") == {**args, "per_device_train_batch_size": 2}
    assert per_process_args({}, DPOConfig, 2, "dpo") == {"per_device_train_batch_size": 4}  # TRL's default 8
    with pytest.raises(ValueError, match="dpo.per_device_train_batch_size 8 does not split over 3 processes"):
        per_process_args(args, DPOConfig, 3, "dpo")
