"""Kernel doctor: which Gated DeltaNet, convolution and attention implementation a Qwen3.5 run actually uses.

Without flash-linear-attention, transformers silently runs Gated DeltaNet as an fp32 torch loop
(huggingface/transformers#48718: many times slower). fla before 0.5.0 is worse than missing: it has no grouped value
heads (Qwen3.5: 16 key, 32 value heads) and computes wrong outputs, so a CUDA run refuses it even when slow kernels
are allowed. The short convolution runs causal-conv1d when installed (optional: an sdist that compiles for every GPU
architecture) and otherwise fla's Triton convolution, bound by ``qwen35_tune.patches``. On CUDA a run without fla is
an error unless the recipe sets ``model.allow_slow_kernels: true``; on CPU the torch path is the only one.
``check_kernels`` is the train-start check; ``doctor_lines`` is ``qwen35-tune doctor``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import asdict, dataclass

from qwen35_tune import patches
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)

FLA_MIN_VERSION = patches.FLA_MIN_VERSION
CAUSAL_CONV1D_MIN_VERSION = "1.5"  # the floor of the [causal-conv1d] extra (the version range tested)
_MODELING = {"qwen3_5": patches.DENSE_MODELING, "qwen3_5_text": patches.DENSE_MODELING,
             "qwen3_5_moe": patches.MOE_MODELING, "qwen3_5_moe_text": patches.MOE_MODELING}  # fmt: skip
FLASH_ATTENTION = {  # recipe value -> (import name, pip distribution, what to install)
    "flash_attention_2": ("flash_attn", "flash-attn", "pip install flash-attn --no-build-isolation"),
    "flash_attention_3": ("flash_attn_interface", "flash-attn-3", "build flash-attention's hopper/ package"),
}
KERNEL_FIX = "pip install 'qwen35-tune[kernels]' (flash-linear-attention>=" + FLA_MIN_VERSION + ")"
UPSTREAM_FIX = "install transformers>={},<{}".format(*patches.KERNEL_FLAG_VERSIONS)
_last_choice: dict | None = None


@dataclass(frozen=True)
class KernelChoice:
    """What each kernel slot of a Qwen3.5 model runs in this process (doctor, train log, run_config.json)."""

    chunk: str  # Gated DeltaNet recurrence: "fla X.Y.Z" | "torch"
    conv: str  # short convolution: "causal-conv1d X.Y.Z" | "fla-triton X.Y.Z" | "torch"
    attention: str  # full-attention layers: "sdpa", "flash_attention_2", a Hub kernel, ...
    packed_rows: str  # how packed rows stay apart in the GDN layers

    def slow(self) -> list[str]:
        """The Gated DeltaNet parts that would run transformers' torch fallback."""
        return [name for name, impl in (("recurrence", self.chunk), ("convolution", self.conv)) if impl == "torch"]

    def to_dict(self) -> dict:
        return asdict(self)


def fla_problem(version: str | None) -> str | None:
    """Why an installed flash-linear-attention must not run Qwen3.5 (None when it is fine or absent)."""
    if version is None or patches.version_at_least(version, FLA_MIN_VERSION):
        return None
    return (f"flash-linear-attention {version} is installed, but releases before {FLA_MIN_VERSION} have no grouped "
            f"value heads (Qwen3.5 has 16 key and 32 value heads) and compute wrong outputs; "
            f"pip install -U 'flash-linear-attention>={FLA_MIN_VERSION}' (or uninstall it and set "
            "model.allow_slow_kernels: true for the slow torch path)")


def kernel_choice(model_type: str = "qwen3_5", attn_implementation: str | None = None) -> KernelChoice:
    """Read (without changing anything) what the model's modeling module calls for each kernel slot."""
    modeling = importlib.import_module(_MODELING.get(model_type, patches.DENSE_MODELING))
    fla = patches.installed_version("fla")
    chunk = f"fla {fla}" if patches.kernel_bound(modeling.torch_chunk_gated_delta_rule) else "torch"
    conv_fn = modeling.causal_conv1d_fn
    if getattr(conv_fn, "_qwen35_tune_binding", None) == "fla-triton":
        conv = f"fla-triton {fla}"
    elif patches.kernel_bound(conv_fn):
        conv = f"causal-conv1d {patches.installed_version('causal_conv1d')}"
    else:
        conv = "torch"
    varlen = chunk != "torch" and conv != "torch"
    packed = "varlen kernels (cu_seqlens)" if varlen else "per-sample Gated DeltaNet (qwen35-tune patch)"
    return KernelChoice(chunk, conv, attn_implementation or "sdpa", packed)


def check_kernels(model_type: str, attn_implementation: str | None, allow_slow: bool, on_cuda: bool) -> KernelChoice:
    """The train-start check: refuse a known-bad fla on CUDA, bind fla's convolution where causal-conv1d is missing,
    refuse the slow torch path on CUDA unless allowed; log (once) and remember which implementations run."""
    global _last_choice
    choice = _select_kernels(model_type, attn_implementation, allow_slow, on_cuda)
    slow = choice.slow()
    if choice.to_dict() != _last_choice:
        level = logging.WARNING if on_cuda and slow else logging.INFO
        note = " (allowed by model.allow_slow_kernels)" if on_cuda and slow else " (CPU: expected)" if slow else ""
        log.log(level, "kernels: GDN recurrence %s, convolution %s, attention %s; packed rows: %s%s",
                choice.chunk, choice.conv, choice.attention, choice.packed_rows, note)
    _last_choice = choice.to_dict()
    return choice


def _select_kernels(model_type: str, attn_implementation: str | None, allow_slow: bool, on_cuda: bool):
    """``check_kernels`` without the log line (the doctor prints its own)."""
    try:
        return _select_kernels_unchecked(model_type, attn_implementation, allow_slow, on_cuda)
    except patches.UpstreamChanged as exc:  # which kernel runs cannot be read on this transformers
        raise UserError(f"kernels: {exc}; {UPSTREAM_FIX}") from None


def _select_kernels_unchecked(model_type: str, attn_implementation: str | None, allow_slow: bool, on_cuda: bool):
    if on_cuda:
        problem = fla_problem(patches.installed_version("fla"))
        if problem:
            raise UserError(f"kernels: {problem}")
        patches.apply_fla_causal_conv1d()
    choice = kernel_choice(model_type, attn_implementation)
    slow = choice.slow()
    if on_cuda and slow and not allow_slow:
        raise UserError(f"model.allow_slow_kernels: this CUDA run would fall back to the slow torch Gated DeltaNet "
                        f"{' and '.join(slow)}; {KERNEL_FIX} or set model.allow_slow_kernels: true")
    return choice


def last_kernel_choice() -> dict | None:
    """The implementations the last ``check_kernels`` chose in this process (run_config.json records it)."""
    return dict(_last_choice) if _last_choice else None


def check_attn_implementation(name: str | None, on_cuda: bool) -> str | None:
    """The recipe's ``model.attn_implementation`` if this machine can run it, else a UserError saying why and what to
    do. Flash-attention (and Hub kernels) need CUDA and their package; they read the packed row's ``cu_seq_lens``
    (varlen) where sdpa and eager build a dense block-diagonal mask."""
    if name in (None, "eager", "sdpa"):
        return name
    key = f"model.attn_implementation: {name}"
    if not on_cuda:
        raise UserError(f"{key} needs a CUDA GPU and none is visible; use sdpa (or leave it unset) on this machine")
    if name in FLASH_ATTENTION:
        module, distribution, install = FLASH_ATTENTION[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{key} needs {distribution}, which is not installed ({install}); or use sdpa")
        return name
    if importlib.util.find_spec("kernels") is None:
        raise UserError(f"{key} is a Hub kernel and needs the 'kernels' package (pip install kernels); the kernel "
                        "must also be in the Hugging Face cache for offline runs; or use sdpa / flash_attention_2")
    return name


def _package_lines(on_cuda: bool) -> list[str]:
    fla = patches.installed_version("fla")
    conv = patches.installed_version("causal_conv1d")
    rows = [("flash-linear-attention", fla, f">= {FLA_MIN_VERSION}, required on CUDA",
             fla_problem(fla) and f"TOO OLD (< {FLA_MIN_VERSION}: wrong outputs)"),
            ("causal-conv1d", conv, f">= {CAUSAL_CONV1D_MIN_VERSION}, optional (else fla's Triton convolution)",
             conv and not patches.version_at_least(conv, CAUSAL_CONV1D_MIN_VERSION) and "older than tested"),
            ("flash-attn", patches.installed_version("flash_attn"), "optional: model.attn_implementation", None),
            ("kernels", patches.installed_version("kernels"), "optional: Hub attention kernels", None)]
    lines = []
    for name, version, wants, problem in rows:
        state = f"installed {version}" if version else "not installed"
        lines.append(f"{name:24} {state:22} {wants}" + (f"  <- {problem}" if problem else ""))
    if not on_cuda:
        lines.append("no CUDA device: transformers' torch Gated DeltaNet path is expected here (the kernels are "
                     "GPU-only)")
    return lines


def doctor_lines(model_type: str, attn_implementation: str | None, allow_slow: bool, on_cuda: bool,
                 packing: bool = False) -> tuple[list[str], int]:
    """``qwen35-tune doctor``: package versions, the implementation each slot would run in ``train``, and the exit
    code (2 where ``train`` would refuse on this machine)."""
    lines, code = _package_lines(on_cuda), 0
    try:
        check_attn_implementation(attn_implementation, on_cuda)
    except UserError as exc:
        lines.append(f"error: {exc}")
        code = 2
    try:
        choice = _select_kernels(model_type, attn_implementation, allow_slow, on_cuda)
    except UserError as exc:
        lines.append(f"error: {exc}")
        return lines, 2
    lines += [f"{'GDN recurrence':24} {choice.chunk}", f"{'GDN convolution':24} {choice.conv}",
              f"{'full attention':24} {choice.attention}", f"{'packed rows (GDN)':24} {choice.packed_rows}"]
    if packing and choice.attention in ("sdpa", "eager"):
        lines.append(f"{'packed rows (attention)':24} {choice.attention} with a dense block-diagonal mask; "
                     "model.attn_implementation: flash_attention_2 takes the varlen path (needs flash-attn)")
    if on_cuda and not choice.slow() and code == 0:
        lines.append("CUDA: fast Gated DeltaNet kernels in use")
    elif on_cuda and choice.slow():
        lines.append(f"CUDA: slow torch Gated DeltaNet {' and '.join(choice.slow())} (allowed by "
                     "model.allow_slow_kernels)")
    return lines, code


def model_type_of(name_or_path: str, revision: str | None = None) -> str:
    """``model_type`` offline for the shipped hub ids (the planner's copies), tiny:// kinds and local folders."""
    from qwen35_tune.plan import load_model_config

    try:
        return load_model_config(name_or_path)["model_type"]
    except UserError:
        from qwen35_tune.models.load import load_config, resolve_model_path

        return load_config(resolve_model_path(name_or_path), revision).model_type
