"""Training stages on several processes: `accelerate launch`, asked for in params.

A training stage's block may hold `launch:`, with accelerate's own option names:

    train:
      launch:
        num_processes: 2      # 1 (the default): train in the stage's own process
        config_file: null     # null: configs/accelerate/ddp.yaml (DDP); zero2.yaml, zero3.yaml: DeepSpeed

With more than one process, or a config file, the stage runs

    accelerate launch --config_file F --num_processes N --main_process_port P \\
        -m stages._launch stages.train it1

and waits: each launched process reads the same params and data, and
`honing.method.train` gives it 1/N of every batch, so the global batch, the steps
and the schedule are the single process's. Only the main process writes the
checkpoint, metrics, curves and runtime figures; the launcher records the stage's
seconds, as any stage does. `stages._launch` is the launched processes' entry
point: the stage's `run` without the launcher's bookkeeping.

`launch` says how to train, not what: it stays out of the stage's metrics (the
block recorded there is the one a single process gets) and out of `TrainConfig`.
On a machine without GPUs the processes train on the CPU over gloo, through the
same config: accelerate's `--cpu` would start one process only (several need MPI).
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honing.errors import HoningError
from stages._params import StageError, to_config

DEFAULT_CONFIG = "configs/accelerate/ddp.yaml"
LAUNCHED = "HONING_LAUNCHED"  # in the launched processes: the number of processes asked for


@dataclass(frozen=True)
class LaunchConfig:
    num_processes: int = 1
    config_file: str | None = None  # an accelerate config file; None: DEFAULT_CONFIG
    main_process_port: int | None = None  # None: the config file's, else a free port on this machine

    @property
    def launches(self) -> bool:
        return self.num_processes > 1 or self.config_file is not None


def launch_config(block: Mapping[str, Any] | None, where: str) -> LaunchConfig:
    """The `launch:` block (None or {} for one process), checked before anything loads."""
    launch = to_config(LaunchConfig, block or {}, where)
    if not isinstance(launch.num_processes, int) or isinstance(launch.num_processes, bool) \
            or launch.num_processes < 1:
        raise StageError(f"params.yaml `{where}.num_processes`: expected a whole number >= 1, "
                         f"found {launch.num_processes!r}")
    config = Path(launch.config_file or DEFAULT_CONFIG)
    if launch.launches and not config.is_file():
        raise StageError(f"params.yaml `{where}.config_file`: no accelerate config at {config}")
    return launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_command(launch: LaunchConfig, target: list[str]) -> list[str]:
    """`accelerate launch` (this interpreter's accelerate) of `target` (a script and
    its arguments, or `-m module ...`) as `launch` asks."""
    import yaml

    config_file = launch.config_file or DEFAULT_CONFIG
    port = launch.main_process_port or (yaml.safe_load(Path(config_file).read_text()) or {}).get(
        "main_process_port") or _free_port()  # two stages at once must not meet on accelerate's 29500
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file,
            "--num_processes", str(launch.num_processes), "--main_process_port", str(port), *target]


def relaunch(launch: LaunchConfig, stage_module: str, argv: list[str]) -> bool:
    """Run the stage under `accelerate launch` if `launch` asks for it and this is not
    already a launched process. True: the launched processes trained and wrote the
    outputs (the caller is done); False: this process trains.

    A launched process checks that it is one of as many as asked for."""
    if os.environ.get(LAUNCHED):
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes != launch.num_processes:
            raise StageError(f"accelerate launch started {processes} process(es) where launch.num_processes "
                             f"asks for {launch.num_processes}: check the config file's distributed_type "
                             f"(accelerate's --cpu starts one process unless MPI is set up; {DEFAULT_CONFIG} "
                             f"starts them on GPUs and on CPUs)")
        return False
    if not launch.launches or "WORLD_SIZE" in os.environ:  # one process; or launched by hand: no launch in a launch
        return False
    command = accelerate_command(launch, ["-m", "stages._launch", stage_module, *argv])
    env = {**os.environ, LAUNCHED: str(launch.num_processes)}
    code = subprocess.run(command, env=env, check=False).returncode
    if code:  # the main process said why on stderr, above the launcher's report
        raise StageError(f"the {launch.num_processes} launched process(es) failed (exit code {code}): "
                         f"the first `error:` line or traceback above says why")
    return True


def run_launched(stage_module: str, argv: list[str]) -> None:
    """One launched process: the stage's `run`, its failures for people in one line
    (from the main process; every process reads the same params and data)."""
    try:
        importlib.import_module(stage_module).run(argv)
    except (HoningError, ValueError, FileNotFoundError) as e:
        if os.environ.get("HONING_DEBUG"):
            raise
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # python -m stages._launch <stage module> <its arguments>
    run_launched(sys.argv[1], sys.argv[2:])
