"""Launch strategies a training method cannot use, refused before anything is launched or loaded.

QLoRA does not work with sharded parameters (DeepSpeed ZeRO-3, FSDP) as this project builds it: transformers skips
``zero.Init`` for quantized models, sharding bitsandbytes' 4-bit weights needs a float ``bnb_4bit_quant_storage``
(not a recipe key), and the 4-bit routed-expert stacks (models/quantize.py) are plain uint8 parameters that no
sharding wrapper can split and gather back as weights. DDP and ZeRO-2 keep whole weights on every GPU and work.
Torch-free: ``plan``, ``train --launch`` and ``launch slurm`` use it before anything heavy is imported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from qwen35_tune.errors import UserError

SHARDED = {"fsdp2": "FSDP2", "zero3": "DeepSpeed ZeRO-3", "zero3_offload": "DeepSpeed ZeRO-3 (CPU offload)"}
QLORA_ALTERNATIVES = ("use --launch ddp or --launch zero2 (QLoRA keeps the whole 4-bit model on every GPU), or "
                      "method.kind: lora with --launch zero3 (bf16 weights sharded across the GPUs); "
                      "`qwen35-tune plan RECIPE --gpus NxGPU-MEMGB` shows which fits")  # fmt: skip


def unsupported_reason(method: str, strategy: str) -> str | None:
    """Why ``method`` cannot train under ``strategy`` (a launch config name), or None when it can."""
    if method == "qlora" and strategy in SHARDED:
        return f"QLoRA cannot shard its 4-bit weights under {SHARDED[strategy]}"
    return None


def check_launch_strategy(recipe, strategy: str) -> None:
    """``train --launch STRATEGY`` / ``launch slurm --strategy``: refuse before launching anything."""
    if unsupported_reason(recipe.method.kind, strategy):
        raise UserError(f"--launch {strategy}: method.kind: qlora cannot train with {SHARDED[strategy]} (4-bit "
                        f"weights are not shardable here); {QLORA_ALTERNATIVES}")


def _true(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def _zero_stage(config) -> int | None:
    """ZeRO stage of a DeepSpeed config given as a dict or a JSON file path (None when unreadable)."""
    if isinstance(config, (str, Path)):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, ValueError):
            return None
    if not isinstance(config, dict):
        return None
    try:
        return int((config.get("zero_optimization") or {}).get("stage", 0))
    except (TypeError, ValueError):
        return None


def sharding_in_effect(environ=None, extra: dict | None = None) -> str | None:
    """Which parameter-sharding strategy this process runs under: ``accelerate launch``'s environment (what a
    ``--config_file`` with DeepSpeed or FSDP sets for every rank) or ``train.extra`` (``deepspeed`` / ``fsdp``)."""
    env = os.environ if environ is None else environ
    extra = extra or {}
    if _true(env.get("ACCELERATE_USE_FSDP", "false")) or extra.get("fsdp"):
        return "FSDP"
    stage = None
    if _true(env.get("ACCELERATE_USE_DEEPSPEED", "false")):
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") or _zero_stage(env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"))
    if extra.get("deepspeed"):
        stage = _zero_stage(extra["deepspeed"]) or stage
    return "DeepSpeed ZeRO-3" if stage is not None and int(stage) == 3 else None


def check_runtime_strategy(recipe, environ=None) -> None:
    """At the start of ``train``: a QLoRA recipe under a sharded launch is exit 2 before any data or model loads."""
    if recipe.method.kind != "qlora":
        return
    found = sharding_in_effect(environ, recipe.train.extra)
    if found:
        raise UserError(f"method.kind: qlora cannot train under {found} (this process was launched with a "
                        f"sharded-parameter config; 4-bit weights are not shardable here); {QLORA_ALTERNATIVES}")
