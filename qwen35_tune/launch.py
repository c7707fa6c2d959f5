"""Multi-GPU and multi-node launching: ``train --launch STRATEGY`` re-runs itself under ``accelerate launch``, and
``launch slurm`` renders launch/slurm/train.sbatch for a recipe. No torch import (the CLI stays instant)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path
from string import Template

from qwen35_tune.errors import UserError
from qwen35_tune.strategies import STRATEGIES

LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"
# One launch/accelerate/<name>.yaml each, from least to most memory saved per GPU (`plan` lists them in this order).


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


def require_backend(strategy: str) -> None:
    """A UserError naming the extra to install when the strategy's backend is missing (found without importing it:
    accelerate would otherwise fail in every rank with an ImportError traceback)."""
    path = LAUNCH_DIR / "accelerate" / f"{strategy}.yaml"
    if strategy not in STRATEGIES or not path.is_file():
        return  # config_path reports these
    uses_deepspeed = re.search(r"^distributed_type:\s*DEEPSPEED\b", path.read_text(), re.MULTILINE)
    if uses_deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise UserError(f"--launch {strategy} runs DeepSpeed, which is not installed: "
                        "pip install 'qwen35-tune[deepspeed]' (or choose --launch ddp or fsdp2)")


def relaunch(strategy: str, num_processes: int | None, train_argv: list[str]) -> int:
    """Replace this process with ``accelerate launch`` (exit code and signals pass straight through)."""
    require_backend(strategy)
    cmd = accelerate_command(strategy, num_processes or default_num_processes(), train_argv)
    os.execv(cmd[0], cmd)
    return 1  # not reached


def choose_strategy(recipe, strategy: str | None, gpus: int, gpu: str) -> tuple[str, str | None]:
    """The launch strategy for a job of ``gpus`` GPUs of kind ``gpu`` ('H100-80GB'): the one asked for (refused if the
    method cannot use it), else what ``qwen35-tune plan`` recommends, with a line saying so and what else it says."""
    from qwen35_tune.train.strategy_checks import check_launch_strategy

    if strategy:
        check_launch_strategy(recipe, strategy)
        return strategy, None
    from qwen35_tune.plan import format_plan, load_model_config, make_plan, parse_gpus

    spec = parse_gpus(f"{gpus}x{gpu}")
    plan = make_plan(recipe, load_model_config(recipe.model.name_or_path), spec)
    if plan.recommended is None:
        raise UserError(f"--strategy: nothing fits {recipe.name} on {spec}, so there is no strategy to default to; "
                        f"`qwen35-tune plan` says:\n{format_plan(plan, recipe.model.name_or_path)}")
    choice = plan.recommended
    note = f"strategy: {choice.strategy} (what `qwen35-tune plan` recommends for {spec}; --strategy to choose another)"
    if choice.micro_batch != recipe.train.per_device_train_batch_size or plan.grad_accum != plan.recipe_accum:
        note += (f"; for the recipe's global batch of {plan.global_batch} on {spec.count} GPUs plan also recommends "
                 f"train.per_device_train_batch_size={choice.micro_batch} train.gradient_accumulation_steps="
                 f"{plan.grad_accum} (add them as overrides)")
    return choice.strategy, note


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
