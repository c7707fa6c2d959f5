"""Multi-GPU and multi-node launching: ``train --launch STRATEGY`` re-runs itself under ``accelerate launch``, and
``launch slurm`` renders launch/slurm/train.sbatch for a recipe. No torch import (the CLI stays instant)."""

from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from string import Template

from qwen35_tune.errors import UserError

LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"
STRATEGIES = ("ddp", "fsdp2", "zero2", "zero3", "zero3_offload")


def config_path(strategy: str, out_dir: Path | None = None) -> Path:
    """The accelerate config for ``strategy``, with any DeepSpeed JSON path made absolute (accelerate resolves it
    against the current directory, so the shipped relative path only works from the repository root)."""
    if strategy not in STRATEGIES:
        raise UserError(f"--launch {strategy}: unknown strategy; choose one of {', '.join(STRATEGIES)}")
    path = LAUNCH_DIR / "accelerate" / f"{strategy}.yaml"
    if not path.is_file():
        raise UserError(f"launch config {path} is missing (install qwen35-tune from a source checkout: "
                        "pip install -e .)")
    text = path.read_text()
    match = re.search(r"deepspeed_config_file:\s*(\S+)", text)
    if not match or Path(match.group(1)).is_absolute():
        return path
    absolute = (LAUNCH_DIR.parent / match.group(1)).resolve()
    out = (out_dir or Path(tempfile.mkdtemp(prefix="qwen35-launch-"))) / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.replace(match.group(0), f"deepspeed_config_file: {absolute}"))
    return out


def strip_launch_args(argv: list[str]) -> list[str]:
    """The train command line without ``--launch X`` / ``--num-processes N`` (the child must not re-launch)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--launch", "--num-processes"):
            skip = True
            continue
        if arg.startswith(("--launch=", "--num-processes=")):
            continue
        out.append(arg)
    return out


def accelerate_command(strategy: str, num_processes: int | None, train_argv: list[str]) -> list[str]:
    """``accelerate launch`` of ``python -m qwen35_tune`` with the same train arguments, in this interpreter."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path(strategy))]
    if num_processes:
        cmd += ["--num_processes", str(num_processes)]
    return [*cmd, "-m", "qwen35_tune", *strip_launch_args(train_argv)]


def default_num_processes() -> int:
    """Visible GPUs (CUDA_VISIBLE_DEVICES, else nvidia-smi's count via torch); 1 when none are seen."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return len([d for d in visible.split(",") if d.strip()])
    import torch

    return max(1, torch.cuda.device_count())


def check_strategy_installed(strategy: str) -> None:
    """DeepSpeed strategies need the [deepspeed] extra: say so here, not in a traceback from every launched rank."""
    import importlib.util

    if strategy in STRATEGIES and strategy.startswith("zero") and importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"--launch {strategy} needs DeepSpeed, which is not installed: pip install "
                        "'qwen35-tune[deepspeed]' (or use --launch ddp / fsdp2)")


def relaunch(strategy: str, num_processes: int | None, train_argv: list[str]) -> int:
    """Replace this process with ``accelerate launch`` (exit code and signals pass straight through)."""
    check_strategy_installed(strategy)
    cmd = accelerate_command(strategy, num_processes or default_num_processes(), train_argv)
    os.execv(cmd[0], cmd)
    return 1  # not reached


SBATCH_TEMPLATE = LAUNCH_DIR / "slurm" / "train.sbatch"


def render_sbatch(recipe_path: Path, overrides: list[str], *, name: str, nodes: int, gpus_per_node: int,
                  strategy: str, output_dir: Path, time_limit: str = "24:00:00", partition: str | None = None,
                  env: dict[str, str] | None = None) -> str:  # fmt: skip
    """The sbatch script for one recipe: one task per node, accelerate rendezvous on the first node."""
    if nodes < 1 or gpus_per_node < 1:
        raise UserError("--nodes and --gpus-per-node must be at least 1")
    train_args = [str(recipe_path.resolve()), *overrides, "--output-dir", str(output_dir.resolve()),
                  "--resume", "auto"]  # fmt: skip
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted((env or {}).items()))
    values = {
        "JOB_NAME": name,
        "NODES": str(nodes),
        "GPUS_PER_NODE": str(gpus_per_node),
        "TIME": time_limit,
        "PARTITION_LINE": f"#SBATCH --partition={partition}" if partition else "",
        "LOG_DIR": str(output_dir.resolve()),
        "REPO": str(LAUNCH_DIR.parent),
        "PYTHON": sys.executable,
        "ACCELERATE_CONFIG": str(config_path(strategy, output_dir.resolve() / "launch")),
        "TRAIN_ARGS": " ".join(shlex.quote(a) for a in train_args),
        "EXPORTS": exports,
    }
    return Template(SBATCH_TEMPLATE.read_text()).substitute(values)


def write_sbatch(out: Path, script: str) -> str:
    """Write the script and return the line that submits it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(script)
    out.chmod(0o755)
    return f"sbatch {shlex.quote(str(out))}"
