"""FSDP2 (``fully_shard``) units for Qwen3.5 that cope with its fp32 Gated DeltaNet parameters.

Checkpoints keep ``linear_attn.A_log`` and ``linear_attn.norm.weight`` in fp32 next to bf16 weights, and FSDP2 asserts
one original dtype per unit for trainable parameters ("FSDP expects uniform original parameter dtype",
NVIDIA-NeMo/Automodel#1677), so wrapping each decoder layer as it comes fails for full fine-tunes. accelerate's own
FSDP2 path avoids the assert by upcasting the whole model to fp32 and computing in bf16, which also rounds the fp32
islands to bf16 in every forward. No library offers per-module precision rules, hence this module:

- units are the model's ``_no_split_modules`` blocks (decoder layers, vision blocks), computing in ``compute_dtype``
  with fp32 gradient reduction, plus the root;
- a submodule whose parameters are all fp32 (the gated norm) becomes its own unit that is never cast, so it
  computes in fp32 as in the checkpoint;
- an fp32 parameter sharing its module with bf16 ones (``A_log`` sits on ``linear_attn`` with the projections) is
  left out of sharding when frozen (LoRA: it stays fp32, replicated, a few floats per layer) and, when trained, the
  block's trainable parameters become fp32 masters so the unit is uniform (that one parameter then computes from a
  bf16 copy, exactly as under accelerate's policy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fsdp2Unit:
    """One ``fully_shard`` call: the module path, how many parameters it shards and the dtype they compute in."""

    name: str
    kind: str  # "block" | "fp32_island" | "root"
    num_params: int
    compute_dtype: str  # what the all-gathered parameters are cast to ("as stored" = no cast)


def block_class_names(model) -> set[str]:
    """The classes transformers says must not be split across devices (``_no_split_modules`` of every sub-model)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


def _blocks(model) -> list[tuple[str, object]]:
    names = block_class_names(model)
    found = [(n, m) for n, m in model.named_modules() if type(m).__name__ in names]
    # outermost matches only (a block never nests another one in Qwen3.5, but be safe)
    return [(n, m) for n, m in found if not any(n.startswith(o + ".") for o, _ in found if o != n)]


def _islands(block, compute_dtype) -> tuple[list[tuple[str, object]], list[object]]:
    """(fp32-only submodules, fp32 parameters whose module also holds other dtypes) inside ``block``."""
    import torch

    if all(p.dtype == torch.float32 for p in block.parameters()) or compute_dtype == torch.float32:
        return [], []
    modules, loose = [], []
    for name, module in block.named_modules():
        if not name or any(name.startswith(m + ".") for m, _ in modules):
            continue
        if _is_adapter_or_container(name, module):
            continue
        params = list(module.parameters())
        if params and all(p.dtype == torch.float32 for p in params):
            modules.append((name, module))
    in_modules = {id(p) for _, m in modules for p in m.parameters()}
    loose = [p for p in block.parameters() if p.dtype == torch.float32 and id(p) not in in_modules]
    return modules, loose


def _is_adapter_or_container(name: str, module) -> bool:
    """peft's LoRA weights are fp32 by design and train with the block (peft casts to their dtype itself); module
    containers have no forward for FSDP to hook."""
    import torch.nn as nn

    is_adapter = any(part.startswith("lora_") for part in name.split("."))
    return is_adapter or isinstance(module, (nn.ModuleDict, nn.ModuleList))


def apply_fsdp2(model, mesh=None, compute_dtype=None, reshard_after_forward: bool = True) -> list[Fsdp2Unit]:
    """Shard ``model`` in place with ``fully_shard`` (blocks, fp32 islands, root) and return the units made.

    Call after adapters are attached (peft must see plain modules) and before the optimizer is built.
    ``compute_dtype`` defaults to bf16; ``mesh`` to the default process group's 1-D mesh.
    """
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    compute_dtype = compute_dtype or torch.bfloat16
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    as_stored = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=None, cast_forward_inputs=False)
    units: list[Fsdp2Unit] = []
    all_ignored: set = set()
    for name, block in _blocks(model):
        island_modules, loose = _islands(block, compute_dtype)
        ignored = {p for p in loose if not p.requires_grad}
        all_ignored |= ignored
        trained_dtypes = {p.dtype for p in block.parameters() if p.requires_grad and p not in ignored
                          and not any(p is q for _, m in island_modules for q in m.parameters())}  # fmt: skip
        if len(trained_dtypes) > 1:  # a trained fp32 parameter shares a module with bf16 ones: fp32 masters
            for param in block.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()
            log.info("FSDP2: %s trains fp32 and %s parameters together; its trainable parameters are fp32 masters",
                     name, compute_dtype)  # fmt: skip
        left = _count(block) - sum(p.numel() for p in ignored)
        for sub_name, sub in island_modules:
            fully_shard(sub, mesh=mesh, mp_policy=as_stored, reshard_after_forward=reshard_after_forward)
            units.append(Fsdp2Unit(f"{name}.{sub_name}", "fp32_island", _count(sub), "as stored"))
            left -= _count(sub)
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward,
                    ignored_params=ignored or None)  # fmt: skip
        units.append(Fsdp2Unit(name, "block", left, str(compute_dtype).removeprefix("torch.")))
    # the root would otherwise pick up the parameters the blocks left out
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False, ignored_params=all_ignored or None)
    rest = _count(model) - sum(u.num_params for u in units) - sum(p.numel() for p in all_ignored)
    units.append(Fsdp2Unit("<root>", "root", rest, str(compute_dtype).removeprefix("torch.")))
    log.info("FSDP2: %d blocks, %d fp32 islands", sum(u.kind == "block" for u in units),
             sum(u.kind == "fp32_island" for u in units))  # fmt: skip
    return units


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())
