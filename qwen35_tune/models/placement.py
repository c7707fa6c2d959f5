"""Where each training process loads the checkpoint, so a node of 8 ranks never holds 8 full copies in CPU RAM.

Without a ``device_map`` transformers materialises every weight in CPU RAM and the trainer moves the model later:
9B ≈ 19 GB and 35B-A3B ≈ 70 GB per rank, times 8 ranks per node. Per launch strategy (as ``accelerate launch`` sets
it in the environment):

- data parallel (DDP, DeepSpeed ZeRO-1/2) on CUDA: ``device_map={"": LOCAL_RANK}``, so weights stream from the
  memory-mapped safetensors straight to this rank's GPU, one tensor at a time;
- DeepSpeed ZeRO-3: nothing to add; transformers builds the model under ``zero.Init`` (each rank keeps its shard) and
  only rank 0 reads the checkpoint values;
- FSDP with ``fsdp_cpu_ram_efficient_loading``: local rank 0 loads, the other ranks keep meta tensors and accelerate
  broadcasts rank 0's weights while sharding. transformers 5.x no longer skips the reading itself on those ranks (it
  only special-cases their missing keys), so we hand them an empty state dict; its meta-rank code path then fills in
  the non-persistent buffers (rotary frequencies) exactly as accelerate expects.

A single process keeps transformers' default (CPU, then the trainer moves it): one copy, and merge/eval runs that
load a model for CPU work are unaffected. Quantized loads are left to bitsandbytes' own placement (the current GPU).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """What ``from_pretrained`` gets for this process: extra kwargs, and whether its weights come from rank 0."""

    strategy: str  # "single" | "ddp" | "zero3" | "fsdp"
    kwargs: dict = field(default_factory=dict)
    weights_from_rank0: bool = False


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def placement_for(env: Mapping[str, str], on_cuda: bool, quantized: bool, zero3: bool) -> Placement:
    """The placement for a process launched with ``env`` (``zero3``: transformers' is_deepspeed_zero3_enabled)."""
    world = int(env.get("WORLD_SIZE", "1") or 1)
    local_rank = int(env.get("LOCAL_RANK", "0") or 0)
    if zero3:  # zero.Init (transformers skips it for quantized models; a device_map is refused under ZeRO-3)
        return Placement("zero3")
    if _flag(env, "ACCELERATE_USE_FSDP"):
        if local_rank != 0 and not quantized and _flag(env, "FSDP_CPU_RAM_EFFICIENT_LOADING"):
            return Placement("fsdp", {"state_dict": {}}, weights_from_rank0=True)
        return Placement("fsdp")
    if world > 1 and on_cuda:
        return Placement("ddp", {"device_map": {"": local_rank}})
    return Placement("single" if world == 1 else "ddp")


def placement_here(quantized: bool) -> Placement:
    """``placement_for`` this process's environment, logging what every rank will hold in CPU RAM."""
    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    placement = placement_for(os.environ, torch.cuda.is_available(), quantized, is_deepspeed_zero3_enabled())
    if placement.strategy == "fsdp" and not _flag(os.environ, "FSDP_CPU_RAM_EFFICIENT_LOADING"):
        log.warning("FSDP without fsdp_cpu_ram_efficient_loading: every rank loads the whole model into CPU RAM "
                    "first; set fsdp_cpu_ram_efficient_loading: true in the accelerate config (launch/accelerate/"
                    "fsdp2.yaml does)")
    elif placement.weights_from_rank0:
        log.info("FSDP cpu_ram_efficient_loading: this rank keeps meta tensors; weights come from rank 0")
    return placement
