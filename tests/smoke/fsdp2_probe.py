"""Run by test_fsdp2_units.py in a subprocess (it starts a gloo process group): shard a tiny Qwen3.5 with FSDP2 on CPU
and print, as JSON, the units, the dtypes each parameter had while computing, and the loss / gradients."""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist


def _load(kind: str, lora: bool):
    from qwen35_tune.models.load import load_model, resolve_model_path
    from qwen35_tune.models.tiny import keep_fp32_params

    model = load_model(resolve_model_path(f"tiny://{kind}"), "bfloat16")
    keep_fp32_params(model)  # as prepare_model does for a real checkpoint
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["in_proj_qkv", "out_proj", "down_proj"]))
    return model


def _watch(model) -> dict:
    """Record the dtype each watched parameter has when its module computes (after FSDP's all-gather and cast)."""
    seen: dict[str, str] = {}

    def hook(name, attr):
        def record(module, args):
            value = getattr(module, attr)
            seen[f"{name}.{attr}"] = f"{type(value).__name__}:{str(value.dtype).removeprefix('torch.')}"
        return record

    for name, module in model.named_modules():
        for attr in ("A_log", "weight"):
            if name.endswith(("linear_attn", "linear_attn.norm", "linear_attn.in_proj_z")) and attr in dict(
                    module.named_parameters(recurse=False)):
                module.register_forward_pre_hook(hook(name, attr))  # runs after FSDP's prepended all-gather hook
    return seen


def probe(kind: str, mode: str, mesh) -> dict:
    from torch.distributed.fsdp import fully_shard

    from qwen35_tune.train.fsdp2 import apply_fsdp2

    torch.manual_seed(0)
    model = _load(kind, lora=mode == "lora")
    ids = torch.randint(3, 200, (2, 24))
    result: dict = {}
    if mode == "naive":  # one unit per decoder layer, nothing else: what breaks
        try:
            for layer in model.model.language_model.layers if kind != "dense" else model.model.layers:
                fully_shard(layer, mesh=mesh)
            fully_shard(model, mesh=mesh)
            model(input_ids=ids, labels=ids).loss.backward()
            result["error"] = None
        except AssertionError as exc:
            result["error"] = str(exc)
    else:
        with torch.no_grad():
            result["reference_loss"] = model(input_ids=ids, labels=ids).loss.item()
        units = apply_fsdp2(model, mesh=mesh)
        result["units"] = [[u.name, u.kind, u.num_params, u.compute_dtype] for u in units]
        seen = _watch(model)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        result["loss"] = loss.item()
        result["seen"] = seen
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        # (a text-only batch leaves the vision tower without gradients)
        present = [g for g in grads.values() if g is not None]
        result["grads_finite"] = all(bool(torch.isfinite(g.full_tensor()).all()) for g in present)
        result["with_grad"] = sorted(n for n, g in grads.items() if g is not None)
        result["num_trainable"] = len(grads)
        result["stored"] = sorted({f"{n.split('.')[-1]}:{str(p.dtype).removeprefix('torch.')}"
                                   for n, p in model.named_parameters() if "linear_attn" in n})  # fmt: skip
    return result


def main(cases: list[str]) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    results = {case: probe(*case.split(":"), mesh) for case in cases}
    dist.destroy_process_group()
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    main(sys.argv[1:])
