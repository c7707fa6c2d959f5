"""Kernel doctor: are the fast Gated DeltaNet / attention kernels installed *and* used by the model's code?

Without flash-linear-attention and causal-conv1d, transformers silently runs Gated DeltaNet as an fp32 torch loop
(huggingface/transformers#48718: many times slower). On CUDA that is an error unless the recipe sets
``model.allow_slow_kernels: true``; on CPU the torch path is the only one and is expected.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
from dataclasses import dataclass

from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)

_MODELING = {"qwen3_5": "qwen3_5", "qwen3_5_text": "qwen3_5", "qwen3_5_moe": "qwen3_5_moe",
             "qwen3_5_moe_text": "qwen3_5_moe"}  # fmt: skip
# (pip distribution, import name, function in the modeling module it replaces)
_GDN_KERNELS = (
    ("flash-linear-attention", "fla", "torch_chunk_gated_delta_rule"),
    ("causal-conv1d", "causal_conv1d", "causal_conv1d_fn"),
)
_cpu_note_logged = False


@dataclass(frozen=True)
class KernelStatus:
    """One kernel package: installed (with version) and whether the model's code path actually calls it."""

    distribution: str
    installed: bool
    version: str | None
    used: bool | None  # None = cannot tell (no model / not applicable)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _uses_kernel(function) -> bool:
    """transformers' hub-kernel wrapper keeps the chosen implementation in its closure; look for a non-torch one."""
    seen = function
    while seen is not None:
        nonlocals = inspect.getclosurevars(seen).nonlocals if inspect.isfunction(seen) else {}
        if "is_new_implementation" in nonlocals:
            return bool(nonlocals["is_new_implementation"])
        seen = getattr(seen, "__wrapped__", None)
    return False


def inspect_kernels(model_type: str = "qwen3_5", attn_implementation: str | None = None) -> list[KernelStatus]:
    """Status of flash-linear-attention, causal-conv1d and flash-attn for this architecture's transformers code."""
    family = _MODELING.get(model_type, "qwen3_5")
    modeling = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
    rows = []
    for distribution, module, function in _GDN_KERNELS:
        installed = importlib.util.find_spec(module) is not None
        used = _uses_kernel(getattr(modeling, function)) if hasattr(modeling, function) else None
        rows.append(KernelStatus(distribution, installed, _version(distribution), used))
    flash = importlib.util.find_spec("flash_attn") is not None
    flash_used = attn_implementation.startswith("flash_attention") if attn_implementation else None
    rows.append(KernelStatus("flash-attn", flash, _version("flash-attn"), flash_used))
    return rows


def slow_gdn(rows: list[KernelStatus]) -> list[str]:
    """The Gated DeltaNet kernels the model would not use (so it would run the torch fallback)."""
    return [row.distribution for row in rows if row.distribution != "flash-attn" and not row.used]


def check_kernels(model_type: str, attn_implementation: str | None, allow_slow: bool, on_cuda: bool) -> list[str]:
    """The train-start check: error on CUDA without GDN kernels (unless allowed); one note on CPU. Returns notes."""
    global _cpu_note_logged
    rows = inspect_kernels(model_type, attn_implementation)
    missing = slow_gdn(rows)
    if not on_cuda:
        if not _cpu_note_logged:
            log.info("kernels: CPU run, Gated DeltaNet uses transformers' torch implementation (expected on CPU)")
            _cpu_note_logged = True
        return ["cpu: torch Gated DeltaNet path (expected)"]
    if missing and not allow_slow:
        raise UserError(f"model.allow_slow_kernels: this CUDA run would fall back to the slow torch Gated DeltaNet "
                        f"path ({', '.join(missing)} not used by transformers); pip install 'qwen35-tune[kernels]' "
                        "or set model.allow_slow_kernels: true")
    if missing:
        log.warning("kernels: running without %s (allowed by model.allow_slow_kernels)", ", ".join(missing))
    return [f"{d} missing" for d in missing]


def describe(rows: list[KernelStatus], on_cuda: bool) -> list[str]:
    """Human lines for ``qwen35-tune doctor``."""
    lines = []
    for row in rows:
        state = f"installed {row.version}" if row.installed else "not installed"
        used = {True: "used by the model", False: "NOT used by the model", None: "use unknown"}[row.used]
        lines.append(f"{row.distribution:24} {state:22} {used}")
    missing = slow_gdn(rows)
    if not on_cuda:
        lines.append("no CUDA device: the torch Gated DeltaNet path is expected here (the kernels are GPU-only)")
    elif missing:
        lines.append(f"CUDA: training would use the slow torch Gated DeltaNet path ({', '.join(missing)}); "
                     "install qwen35-tune[kernels] or set model.allow_slow_kernels: true")
    else:
        lines.append("CUDA: fast Gated DeltaNet kernels in use")
    return lines
