"""Shared pieces of the GPU check's stages: run context, result records, kernel selection as ``train`` does it,
the project's LoRA wrapping and TRL's chunked loss."""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
PEAK_BF16 = 989e12  # H100 / H200 SXM dense bf16 FLOP/s (spec), the MFU denominator
DENSE = "transformers.models.qwen3_5.modeling_qwen3_5"


@dataclass(frozen=True)
class Ctx:
    smoke: bool
    out: Path

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @classmethod
    def from_env(cls) -> Ctx:
        out = Path(os.environ.get("OUT", "/tmp/gpu_check_out"))
        out.mkdir(parents=True, exist_ok=True)
        return cls(smoke=os.environ.get("GPU_CHECK_SMOKE") == "1", out=out)


def record(ctx: Ctx, stage: str, **values) -> dict:
    row = {"stage": stage, **values}
    with open(ctx.out / "results.jsonl", "a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
    print("RESULT", json.dumps(row, default=str), flush=True)
    return row


def sync(ctx: Ctx) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


def memory(ctx: Ctx, reset: bool = False) -> dict:
    if not ctx.cuda:
        return {}
    row = {"alloc_gib": torch.cuda.memory_allocated() / 2**30, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
           "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return row


def spans(cuts) -> list[tuple[int, int]]:
    """[(start, end)] of each packed sample from cumulative lengths."""
    cuts = cuts.tolist() if torch.is_tensor(cuts) else list(cuts)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def select_kernels(ctx: Ctx, model_type: str = "qwen3_5"):
    """What ``train`` does before the first step: the doctor's check (binds fla's convolution without causal-conv1d)
    and the per-sample GDN fallback for packed rows (it steps aside where the varlen kernels run)."""
    from qwen35_tune import doctor, patches

    choice = doctor.check_kernels(model_type, "sdpa", allow_slow=True, on_cuda=ctx.cuda)
    patches.apply_gdn_packed_segments()
    return choice


def torch_reference_fla_conv(x, weight=None, bias=None, activation=None, cu_seqlens=None, **_):
    """CPU dry run only: a torch statement of fla's causal_conv1d ([B, T, D], per cu_seqlens sequence), standing in
    for the Triton kernel the GPU run binds (tests/unit/test_fla_conv_binding.py holds it to fla)."""
    cuts = [0, x.shape[1]] if cu_seqlens is None else cu_seqlens.tolist()
    parts = [F.conv1d(F.pad(x[:, a:b].transpose(1, 2), (weight.shape[1] - 1, 0)), weight.unsqueeze(1), bias,
                      groups=weight.shape[0]).transpose(1, 2) for a, b in zip(cuts[:-1], cuts[1:], strict=False)]
    y = torch.cat(parts, dim=1)
    return (F.silu(y) if activation in ("silu", "swish") else y), None


def torch_functions(modeling):
    """transformers' own torch recurrence and convolution, under whatever kernel or binding sits in their slots."""
    conv = modeling.causal_conv1d_fn
    return (inspect.unwrap(modeling.torch_chunk_gated_delta_rule),
            inspect.unwrap(getattr(conv, "_qwen35_tune_original", conv)))


def lora_wrap(model, recipe_rel: str, randomize_b: bool = False):
    """peft-wrap ``model`` with the shipped recipe's adapters, built by the project's own ``build_lora_config``."""
    from peft import get_peft_model

    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.peft_setup import build_lora_config

    recipe = load_recipe(REPO / recipe_rel, ["model.allow_slow_kernels=true"])
    wrapped = get_peft_model(model, build_lora_config(recipe, model))
    if randomize_b:  # B = 0 at init would leave every lora_A gradient zero; give both factors signal
        g = torch.Generator().manual_seed(1)
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.data.copy_((torch.randn(param.shape, generator=g) * 0.02).to(param.dtype))
    return wrapped, recipe


def backbone_and_head(model):
    """(decoder returning last_hidden_state, lm_head weight): what TRL's chunked loss projects through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head.weight


def chunked_ce(hidden, weight, labels, n_targets=None):
    """TRL's chunked LM-head loss (the one ``train`` uses; logits never materialised)."""
    from benchmarks.chunked_loss import chunked_cross_entropy  # the repo root is on PYTHONPATH (gpu_check.sh)

    return chunked_cross_entropy(hidden, weight, labels, num_items_in_batch=n_targets)
