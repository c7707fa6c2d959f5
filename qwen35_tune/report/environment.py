"""What a run trained with, recorded when it starts (``environment.json``): package versions, Python, platform,
launch strategy, world size and devices. A report written later on another machine must not show that machine's."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata

# The libraries a run's numbers depend on, by distribution name (absent ones are recorded as not installed).
PACKAGES = ("qwen35-tune", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
            "safetensors", "deepspeed", "bitsandbytes", "flash-linear-attention", "causal-conv1d", "kernels",
            "torchvision", "wandb", "tensorboard")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _true(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def launch_strategy(environ=None) -> str:
    """How this process was launched, in words, from what ``accelerate launch`` (or torchrun) puts in the
    environment: 'single process', 'DDP', 'DeepSpeed ZeRO-2', 'FSDP2' ..."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if _true(env.get("ACCELERATE_USE_FSDP")):
        offload = " (CPU offload)" if _true(env.get("FSDP_OFFLOAD_PARAMS")) else ""
        return f"FSDP{env.get('FSDP_VERSION') or ''}{offload}"
    if _true(env.get("ACCELERATE_USE_DEEPSPEED")):
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
        offload = (env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE") or "none").lower() != "none"
        return (f"DeepSpeed ZeRO-{stage}" if stage else "DeepSpeed") + (" (optimizer offload)" if offload else "")
    return "DDP" if world > 1 else "single process"


def devices() -> list[str]:
    """The accelerators this process sees (names), or [] on CPU; torch is only asked if the run imported it."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    try:
        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 (a broken driver must not stop the run; the report says none)
        return []
    return []


def environment_record(environ=None) -> dict:
    """The record ``environment.json`` keeps (see the module doc)."""
    env = os.environ if environ is None else environ
    return {
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "launch_strategy": launch_strategy(env),
        "world_size": int(env.get("WORLD_SIZE", "1") or 1),
        "nodes": int(env.get("NNODES") or env.get("SLURM_NNODES") or 1),
        "devices": devices(),
        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"),
        "packages": package_versions(),
    }
