"""Model preparation that depends on the launch strategy (set by ``accelerate launch --config_file ...``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True on the process that writes run files; read from the launcher's RANK before any trainer exists."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes in this run, from the launcher's WORLD_SIZE (1 when not launched); known before any trainer exists."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def gradient_accumulation(train) -> int:
    """``train.gradient_accumulation_steps`` for this launch: derived from ``train.global_batch_size`` and the
    process count when the recipe states a global batch (logged, so the derivation is visible at start)."""
    world = world_size()
    steps = train.accumulation_for(world)
    rows = train.global_batch_for(world)
    how = "train.global_batch_size" if train.global_batch_size is not None else "per process (no global_batch_size)"
    log.info("global batch: %d rows per optimizer step = %d per device x %d process%s x %d accumulation steps (%s)",
             rows, train.per_device_train_batch_size, world, "" if world == 1 else "es", steps, how)
    return steps


def main_process_dir(run_dir: Path) -> Path | None:
    """``run_dir`` on the main process, None elsewhere: data stats, quarantine and the resolved recipe are written
    once, not once per rank (identical files written concurrently can tear)."""
    return run_dir if is_main_process() else None


def moe_block_classes(model) -> list[type]:
    """The MoE sparse-block classes in ``model`` (``Qwen3_5MoeSparseMoeBlock``), found by name so text-only and
    vision-language MoE models both match."""
    return sorted({type(m) for m in model.modules() if type(m).__name__.endswith("SparseMoeBlock")},
                  key=lambda c: c.__name__)


def prepare_for_strategy(model) -> None:
    """Under ZeRO-3, make each MoE block a leaf: its experts are gathered together instead of hook by hook.

    Without it, ranks routing tokens to different experts fetch different parameters and hang or crawl
    (hiyouga/LlamaFactory#10285, deepspeedai/DeepSpeed#7461); DeepSpeed's own fix is ``set_z3_leaf_modules``.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    classes = moe_block_classes(model)
    if not classes or not hf_deepspeed.is_deepspeed_zero3_enabled():
        return
    from deepspeed.utils import set_z3_leaf_modules

    set_z3_leaf_modules(model, classes)
    log.info("ZeRO-3 leaf modules: %s", ", ".join(c.__name__ for c in classes))
