"""Every monkeypatch the project applies to a library, each behind an explicit version check (the only such module).

Patch ``gdn_packed_segments``: transformers' Qwen3.5 Gated DeltaNet reads packed-sequence boundaries only from the
caller's ``cu_seq_lens_q`` (recurrence) and ``seq_idx`` (short convolution) and hands them to flash-linear-attention
and causal-conv1d. Its torch fallback (CPU, or a GPU without those packages) cannot honour them: given them it
raises "can't keep packed sequences apart", and given only ``position_ids`` it silently carries recurrent state and
convolution context from one packed sample into the next. No library offers a torch varlen path (transformers PR
#46859 closed; issues #44717, #46093), so on that path we run the layer once per packed sample instead — exact, as
each sample then starts from a zero state just as it does unpacked. With both kernels installed the patch steps
aside and the varlen kernels receive the boundaries unchanged. ``tests/unit/test_packing_patches.py`` fails if
upstream starts honouring boundaries on the torch path (then this patch should go) or changes the layer's signature.

Binding ``fla_causal_conv1d``: causal-conv1d has no wheel on PyPI (an sdist compiled for many GPU architectures), so
many GPU installs have flash-linear-attention only. fla ships a Triton causal convolution that honours packed-row
boundaries (``fla.modules.conv.causal_conv1d(x [B, T, D], weight [D, W], cu_seqlens=...)``); where transformers would
run its torch convolution, we bind that one in causal-conv1d's call convention instead (``x [B, D, T]``, ``seq_idx``),
so the whole Gated DeltaNet takes the varlen path with fla alone. ``tests/unit/test_fla_conv_binding.py`` holds the
translation to a torch reference of fla's function and fails if transformers changes how it calls the convolution.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging

log = logging.getLogger(__name__)

# transformers versions whose Qwen3.5 GDN forward was read and tested with this patch: [low, high).
GDN_PATCH_VERSIONS = ("5.2", "6")
# Keys a packed-batch collator adds; they describe the whole packed row and must not reach a per-sample call.
BOUNDARY_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")
DENSE_MODELING = "transformers.models.qwen3_5.modeling_qwen3_5"
MOE_MODELING = "transformers.models.qwen3_5_moe.modeling_qwen3_5_moe"
_GDN_CLASSES = ((DENSE_MODELING, "Qwen3_5GatedDeltaNet"), (MOE_MODELING, "Qwen3_5MoeGatedDeltaNet"))
_applied: dict[str, bool] = {}


# Read, not patched: transformers' kernel wrapper ``integrations.hub_kernels.use_kernel_func_from_hub_with_fallback``
# decides once, at import, whether a Gated DeltaNet slot (``torch_chunk_gated_delta_rule``, ``causal_conv1d_fn``) runs
# the package kernel or the torch fallback, and keeps that choice only in its closure variable
# ``is_new_implementation``; transformers offers no public way to ask (guessing from installed packages would miss a
# kernel that failed to import, which the wrapper silently replaces by torch). ``kernel_bound`` reads it on
# transformers [low, high) (read on 5.20 and 5.24; before 5.2x the modeling module imported the kernels itself, with
# no wrapper); tests/unit/test_fla_conv_binding.py (canary) fails if the wrapper stops keeping the flag or the Qwen3.5
# slots stop going through it. Outside the range ``kernel_bound`` raises ``UpstreamChanged`` saying which.
KERNEL_FLAG_VERSIONS = ("5.20", "6")  # transformers
KERNEL_FLAG = "is_new_implementation"


def kernel_flag(function) -> bool | None:
    """The wrapper's own flag for ``function`` (a kernel slot or anything wrapping it); None when there is none."""
    seen = function
    while seen is not None:
        nonlocals = inspect.getclosurevars(seen).nonlocals if inspect.isfunction(seen) else {}
        if KERNEL_FLAG in nonlocals:
            return bool(nonlocals[KERNEL_FLAG])
        seen = getattr(seen, "__wrapped__", None)
    return None


def kernel_bound(function) -> bool:
    """Whether a modeling module's kernel slot runs a kernel rather than transformers' torch fallback.

    Our own bindings carry ``_qwen35_tune_binding``; transformers' wrapper keeps its choice in a closure flag (read
    through ``kernel_flag`` on the tested versions only). Anything else is taken to be the torch path.
    """
    seen = function
    while seen is not None:
        if getattr(seen, "_qwen35_tune_binding", None):
            return True
        seen = getattr(seen, "__wrapped__", None)
    import transformers

    _check_range(transformers, KERNEL_FLAG_VERSIONS, "kernel-wrapper flag")
    return bool(kernel_flag(function))


def varlen_kernels_available(modeling: str = DENSE_MODELING) -> bool:
    """True when the Gated DeltaNet of ``modeling`` honours packed boundaries itself: a kernel runs the chunked
    recurrence (flash-linear-attention) and one runs the convolution (causal-conv1d, or fla's via our binding)."""
    module = importlib.import_module(modeling)
    return kernel_bound(module.torch_chunk_gated_delta_rule) and kernel_bound(module.causal_conv1d_fn)


def transformers_in_range(low: str, high: str) -> bool:
    import transformers
    from packaging.version import Version

    return Version(low) <= Version(transformers.__version__) < Version(high)


def _segment_bounds(cu_seq_lens, total: int) -> list[tuple[int, int]]:
    """[(start, end)] per packed sample from cumulative lengths; the bounds must cover the row exactly."""
    cuts = [int(c) for c in cu_seq_lens.flatten().tolist()]
    if cuts[0] != 0 or cuts[-1] != total or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False)):
        raise ValueError(f"cu_seq_lens_q {cuts} does not split a packed row of {total} tokens into samples")
    return list(zip(cuts, cuts[1:], strict=False))


def _per_sample_forward(original, modeling: str):
    """Wrap a GDN ``forward`` so a packed row (batch 1 + ``cu_seq_lens_q``) without the kernels runs per sample."""

    @functools.wraps(original)
    def forward(self, hidden_states, cache=None, attention_mask=None, **kwargs):
        cu_seq_lens = kwargs.get("cu_seq_lens_q")
        if cu_seq_lens is None or cache is not None or varlen_kernels_available(modeling):
            return original(self, hidden_states, cache=cache, attention_mask=attention_mask, **kwargs)
        if hidden_states.shape[0] != 1:
            raise ValueError("packed batches must be flattened to one row (batch size 1) when cu_seq_lens_q is given")
        rest = {k: v for k, v in kwargs.items() if k not in BOUNDARY_KWARGS}
        outputs = []
        for start, end in _segment_bounds(cu_seq_lens, hidden_states.shape[1]):
            mask = attention_mask[:, start:end] if attention_mask is not None else None
            outputs.append(original(self, hidden_states[:, start:end], cache=None, attention_mask=mask, **rest))
        import torch

        return torch.cat(outputs, dim=1)

    forward._qwen35_tune_original = original
    return forward


def apply_gdn_packed_segments() -> bool:
    """Install the per-sample GDN fallback on the dense and MoE Qwen3.5 classes; False if this version is unknown."""
    if "gdn_packed_segments" in _applied:
        return _applied["gdn_packed_segments"]
    if not transformers_in_range(*GDN_PATCH_VERSIONS):
        import transformers

        log.warning("transformers %s is outside %s..%s, which the packed-GDN patch was tested on; not patching",
                    transformers.__version__, *GDN_PATCH_VERSIONS)
        _applied["gdn_packed_segments"] = False
        return False
    for module_name, class_name in _GDN_CLASSES:
        cls = getattr(importlib.import_module(module_name), class_name)
        if not hasattr(cls.forward, "_qwen35_tune_original"):
            cls.forward = _per_sample_forward(cls.forward, module_name)
    _applied["gdn_packed_segments"] = True
    return True


def remove_gdn_packed_segments() -> None:
    """Undo ``apply_gdn_packed_segments`` (tests use it for the negative control that shows the leak)."""
    for module_name, class_name in _GDN_CLASSES:
        cls = getattr(importlib.import_module(module_name), class_name)
        original = getattr(cls.forward, "_qwen35_tune_original", None)
        if original is not None:
            cls.forward = original
    _applied.pop("gdn_packed_segments", None)


# Binding ``fla_causal_conv1d`` (see the module docstring). fla's first release with grouped value heads (more value
# than key heads, as Qwen3.5 has: 16 / 32) is 0.5.0 (fla-org/flash-linear-attention PR #799, #812); transformers 5.2x
# hands fla q/k with 16 heads and v with 32, which older releases do not support. Below it we bind nothing.
FLA_MIN_VERSION = "0.5.0"
FLA_CONV_ACTIVATIONS = (None, "silu", "swish")


def installed_version(module: str) -> str | None:
    """Version of the distribution that provides import name ``module`` (fla comes as fla-core); None if absent."""
    if importlib.util.find_spec(module) is None:
        return None
    for distribution in importlib.metadata.packages_distributions().get(module, []) or [module]:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_at_least(version: str | None, minimum: str) -> bool:
    """``version >= minimum``; False for a missing or unparsable version (treated as unknown, so not trusted)."""
    from packaging.version import InvalidVersion, Version

    try:
        return version is not None and Version(version) >= Version(minimum)
    except InvalidVersion:
        return False


def cu_seqlens_from_seq_idx(seq_idx):
    """Cumulative sample lengths ``[0, ..., T]`` of one packed row from its per-token sample index (causal-conv1d's
    way of marking boundaries; fla takes cumulative lengths)."""
    import torch

    row = seq_idx.reshape(-1)
    starts = torch.nonzero(row[1:] != row[:-1]).flatten() + 1
    ends = torch.tensor([0, row.numel()], device=row.device, dtype=starts.dtype)
    return torch.cat([ends[:1], starts, ends[1:]]).to(torch.int32)


def fla_conv_adapter(fla_conv):
    """transformers' ``causal_conv1d_fn`` call (causal-conv1d's convention) translated to fla's ``causal_conv1d``.

    In: ``x`` [B, D, T] (channels first), ``weight`` [D, W], ``bias`` [D] or None, ``activation``, and the packed
    batch's ``cu_seq_lens_q`` (or causal-conv1d's ``seq_idx``). fla wants ``x`` [B, T, D] and ``cu_seqlens``, returns
    ``(y [B, T, D], final_state)``. Dtypes follow transformers' torch path: computed in the weight's dtype, returned
    in the input's.
    """

    def causal_conv1d_fn(x, weight, bias=None, activation=None, seq_idx=None, cu_seq_lens_q=None, **_unused):
        if activation not in FLA_CONV_ACTIVATIONS:
            raise ValueError(f"fla's causal_conv1d supports activations {FLA_CONV_ACTIVATIONS}, not {activation!r}")
        cu_seqlens = cu_seq_lens_q
        if cu_seqlens is None and seq_idx is not None:
            cu_seqlens = cu_seqlens_from_seq_idx(seq_idx)
        if cu_seqlens is not None and x.shape[0] != 1:
            raise ValueError("packed batches must be flattened to one row (batch size 1) when boundaries are given")
        y, _ = fla_conv(x.to(weight.dtype).transpose(1, 2), weight=weight, bias=bias, activation=activation,
                        cu_seqlens=cu_seqlens)
        return y.transpose(1, 2).to(x.dtype)

    causal_conv1d_fn._qwen35_tune_binding = "fla-triton"
    return causal_conv1d_fn


def _load_fla_conv():
    """fla's varlen causal convolution, or None when fla is missing or older than ``FLA_MIN_VERSION``."""
    version = installed_version("fla")
    if not version_at_least(version, FLA_MIN_VERSION):
        return None
    from fla.modules.conv import causal_conv1d

    return causal_conv1d


def apply_fla_causal_conv1d(fla_conv=None) -> bool:
    """Run fla's Triton convolution where transformers would run its torch one; True when that binding is active.

    Does nothing (False) when causal-conv1d is bound already, fla is missing or too old, or this transformers version
    was not read. GPU only: the caller decides (fla's Triton kernels need CUDA). Tests pass a reference ``fla_conv``.
    """
    if not transformers_in_range(*GDN_PATCH_VERSIONS):
        return False
    modules = [importlib.import_module(name) for name, _ in _GDN_CLASSES]
    if all(hasattr(m.causal_conv1d_fn, "_qwen35_tune_original") for m in modules):
        return True
    if any(kernel_bound(m.causal_conv1d_fn) for m in modules):
        return False  # causal-conv1d is installed: transformers already runs a varlen convolution
    fla_conv = fla_conv or _load_fla_conv()
    if fla_conv is None:
        return False
    for module in modules:
        adapter = fla_conv_adapter(fla_conv)
        adapter._qwen35_tune_original = module.causal_conv1d_fn
        module.causal_conv1d_fn = adapter
    _applied["fla_causal_conv1d"] = True
    log.info("kernels: causal-conv1d not installed; Gated DeltaNet's convolution runs fla's Triton kernel (varlen)")
    return True


def remove_fla_causal_conv1d() -> None:
    """Undo ``apply_fla_causal_conv1d``."""
    for module_name, _ in _GDN_CLASSES:
        module = importlib.import_module(module_name)
        original = getattr(module.causal_conv1d_fn, "_qwen35_tune_original", None)
        if original is not None:
            module.causal_conv1d_fn = original
    _applied.pop("fla_causal_conv1d", None)


# Patch ``peft_stacked_param_lora``: peft's ParamWrapper, when the targeted parameter already carries another
# parametrization (our bitsandbytes 4-bit experts, qwen35_tune/models/quantize.py), removes only a
# ``_LoraParameterProxy`` after each forward and warns otherwise; the single-adapter ``_LoraFactorsProxy`` it uses for
# expert stacks then stays registered, so every later forward adds the LoRA delta once more (and peft then fails on
# ``requires_grad_`` of the uint8 storage). Tested on peft [low, high); tests/smoke/test_quantize_experts.py fails if
# upstream behaviour changes (then this patch should go).
PEFT_PARAM_PATCH_VERSIONS = ("0.18", "0.22")


def _remove_stacked_factors_proxy(original):
    @functools.wraps(original)
    def _remove_parametrizations(self):
        from peft.tuners.lora.layer import _LoraFactorsProxy

        stack = self.get_base_layer().parametrizations[self.parameter_name]
        if len(stack) > 1 and isinstance(stack[-1], _LoraFactorsProxy):
            del stack[-1]
            return None
        return original(self)

    _remove_parametrizations._qwen35_tune_original = original
    return _remove_parametrizations


def apply_peft_stacked_param_lora() -> bool:
    """Let peft's expert LoRA sit on top of a 4-bit parametrized expert stack; False if this peft is untested."""
    import peft
    from packaging.version import Version

    low, high = PEFT_PARAM_PATCH_VERSIONS
    if not Version(low) <= Version(peft.__version__) < Version(high):
        log.warning("peft %s is outside %s..%s, which the stacked-parametrization patch was tested on; not patching",
                    peft.__version__, low, high)
        return False
    from peft.tuners.lora.layer import ParamWrapper

    if not hasattr(ParamWrapper._remove_parametrizations, "_qwen35_tune_original"):
        ParamWrapper._remove_parametrizations = _remove_stacked_factors_proxy(ParamWrapper._remove_parametrizations)
    _applied["peft_stacked_param_lora"] = True
    return True


def remove_peft_stacked_param_lora() -> None:
    """Undo ``apply_peft_stacked_param_lora`` (the upstream-behaviour test uses it)."""
    from peft.tuners.lora.layer import ParamWrapper

    original = getattr(ParamWrapper._remove_parametrizations, "_qwen35_tune_original", None)
    if original is not None:
        ParamWrapper._remove_parametrizations = original
    _applied.pop("peft_stacked_param_lora", None)



# ---------------------------------------------------------------------------------------------------------------------
# Upstream private names read by the chat-template fast path (qwen35_tune/data/fast_template.py). Nothing is replaced
# here; the names are only read, but they sit behind the same rules as the patches above: a tested version range, the
# reason, a canary test (tests/unit/test_upstream_private.py), and a clear error outside the range.
#
# ``transformers.utils.chat_template_utils._compile_jinja_template``: the fast renderer must compile a chat template
# exactly as ``apply_chat_template`` does (its sandbox, extensions, filters and globals such as ``raise_exception``
# and ``strftime_now``) for its text to equal apply_chat_template's; transformers has no public way to get that
# compiled template. Read on transformers [low, high).
# ``jinja2.utils._PassArg``: how jinja2 marks a callable that wants the context or environment passed to it
# (``pass_context`` ...). The fast sandbox calls a template global directly only when it carries no such mark, so it
# asks jinja2's own test. Added in jinja2 3.0; read on jinja2 [low, high).
# Outside a range, or with a name gone, the accessors raise ``UpstreamChanged`` saying which; the data build then
# renders through the public ``tokenizer.apply_chat_template`` (same text, slower) with a warning instead of failing.
CHAT_TEMPLATE_COMPILER_VERSIONS = ("5.2", "6")  # transformers
JINJA_PASS_ARG_VERSIONS = ("3.0", "4")  # jinja2


class UpstreamChanged(RuntimeError):
    """An upstream private name the project reads is gone, or its library is outside the versions it was tested on."""


def _check_range(module, versions: tuple[str, str], what: str) -> None:
    from packaging.version import Version

    low, high = versions
    if not Version(low) <= Version(module.__version__) < Version(high):
        raise UpstreamChanged(f"{module.__name__} {module.__version__} is outside {low}..{high}, the versions whose "
                              f"private {what} qwen35-tune was tested with")


def chat_template_compiler():
    """transformers' own chat-template compiler, ``(template text) -> jinja2.Template``; ``UpstreamChanged`` if this
    transformers is untested or has none."""
    import transformers

    _check_range(transformers, CHAT_TEMPLATE_COMPILER_VERSIONS, "chat-template compiler")
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
    except ImportError:
        raise UpstreamChanged(f"transformers {transformers.__version__} has no "
                              "transformers.utils.chat_template_utils._compile_jinja_template") from None
    return _compile_jinja_template


def jinja_pass_arg():
    """jinja2's ``_PassArg`` (``from_obj(f)`` is None when jinja2 calls ``f`` with its own arguments only);
    ``UpstreamChanged`` if this jinja2 is untested or has none."""
    import jinja2

    _check_range(jinja2, JINJA_PASS_ARG_VERSIONS, "_PassArg")
    try:
        from jinja2.utils import _PassArg
    except ImportError:
        raise UpstreamChanged(f"jinja2 {jinja2.__version__} has no jinja2.utils._PassArg") from None
    return _PassArg


# ---------------------------------------------------------------------------------------------------------------------
# Private Trainer methods the project's trainer subclass overrides (qwen35_tune/train/trainer.py and the mixins it is
# made of). Nothing is replaced on a library object; a subclass method of the same name runs and calls up to the
# original. The documented override points (``create_optimizer``, ``training_step``, ``train``) carry everything else;
# these have none:
# ``Trainer._save_checkpoint(model, trial)`` and ``Trainer._get_output_dir(trial)``: transformers writes checkpoint-N
#   in place (a kill mid-write leaves a half checkpoint that ``--resume auto`` would pick) and no callback runs before
#   the write; the output folder is redirected to ``.staging/`` for one save and the finished folder renamed into place
#   (train/resume.py ``AtomicCheckpoints``).
# ``Trainer._get_grad_norm(model, grad_norm=None)``: the one call each optimizer step's gradient norm passes through
#   (clipped or not, DeepSpeed and mixed device meshes included); callbacks see the norm only on logging steps, too
#   late to stop before the step is saved (train/step_guard.py ``GuardedSteps``).
# Read on transformers [low, high) (5.10, 5.20, 5.24); tests/unit/test_trainer_hooks.py (canary) fails if a name, its
# parameters or its call from the training loop changes. Outside the range the trainer refuses to start, naming it.
TRAINER_HOOK_VERSIONS = ("5.10", "6")  # transformers
TRAINER_PRIVATE_HOOKS = {"_save_checkpoint": ("model", "trial"), "_get_output_dir": ("trial",),
                         "_get_grad_norm": ("model", "grad_norm")}  # fmt: skip


def check_trainer_hooks(trainer_cls) -> None:
    """``UpstreamChanged`` unless this transformers is in ``TRAINER_HOOK_VERSIONS`` and ``trainer_cls`` still has each
    hooked private method with the parameters the overrides pass on."""
    import transformers

    _check_range(transformers, TRAINER_HOOK_VERSIONS, "Trainer methods (checkpoint saving, gradient norm)")
    for name, params in TRAINER_PRIVATE_HOOKS.items():
        method = getattr(trainer_cls, name, None)
        found = tuple(inspect.signature(method).parameters)[1:] if callable(method) else None
        if found is None or found[: len(params)] != params:
            shown = "gone" if found is None else "(" + ", ".join(found) + ")"
            raise UpstreamChanged(f"transformers {transformers.__version__}: {trainer_cls.__name__}.{name} is "
                                  f"{shown}, not ({', '.join(params)}) as qwen35-tune's trainer overrides it")


# ``trl.DPOTrainer._prepare_dataset(dataset, processing_class, args, dataset_name)``: TRL tokenises every preference
#   row with its own chat-template call and prompt/completion split (and has no switch to skip it, unlike SFTConfig's
#   ``dataset_kwargs={"skip_prepare_dataset": True}``). qwen35-tune's rows arrive rendered, masked and split by its own
#   renderer (data/preference_build.py) in the very columns TRL's preference collator reads (``prompt_ids``,
#   ``chosen_ids``, ``rejected_ids``), so ``QwenDPOTrainer`` returns them unchanged (train/trainer.py).
# Read on trl 1.16; tests/unit/test_trainer_hooks.py (canary) fails if the method, its parameters, its call from
# ``__init__`` or the collator's column names change. Outside the range the DPO trainer refuses to start, naming it.
DPO_HOOK_VERSIONS = ("1.16", "2")  # trl
DPO_PRIVATE_HOOKS = {"_prepare_dataset": ("dataset", "processing_class", "args", "dataset_name")}


def check_dpo_hooks(trainer_cls) -> None:
    """``UpstreamChanged`` unless this trl is in ``DPO_HOOK_VERSIONS`` and ``trainer_cls`` (TRL's DPOTrainer) still
    has each hooked private method with the parameters the override takes."""
    import trl

    _check_range(trl, DPO_HOOK_VERSIONS, "DPOTrainer dataset preparation")
    for name, params in DPO_PRIVATE_HOOKS.items():
        method = getattr(trainer_cls, name, None)
        found = tuple(inspect.signature(method).parameters)[1:] if callable(method) else None
        if found != params:
            shown = "gone" if found is None else "(" + ", ".join(found) + ")"
            raise UpstreamChanged(f"trl {trl.__version__}: {trainer_cls.__name__}.{name} is {shown}, not "
                                  f"({', '.join(params)}) as qwen35-tune's DPO trainer overrides it")


# ---------------------------------------------------------------------------------------------------------------------
# Upstream private names the model setup reads or sets (models/quantize.py, train/model_setup.py). Nothing is replaced;
# the same rules as above: a tested range, the reason, a canary (tests/unit/test_upstream_private.py), and a clear
# error outside the range (``check_model_setup_names``, run before a model that needs them loads).
# ``torch.nn.utils.parametrize._cache``: ``parametrize.cached()`` keeps each parametrized tensor it computed in this
#   module-level dict, keyed ``(id(module), tensor name)``, and offers no public way to forget one entry; the 4-bit
#   expert stacks forget theirs before each forward (models/quantize.py ``_drop_stale_dequantized`` says why). Read on
#   torch 2.14; the key layout is the one parametrize has had since its first releases.
# ``Parameter._is_hf_initialized``: transformers' mark for a tensor holding loaded values, which its weight
#   initialisation skips; a 4-bit expert stack stored while loading replaces the loaded parameter, so it carries the
#   mark on. Read on transformers 5.2, 5.10, 5.20, 5.24.
# ``PretrainedConfig._attn_implementation``: the attention implementation transformers resolved when loading (the
#   recipe may leave it unset); configs have no public getter. Read on transformers 5.2, 5.10, 5.20, 5.24.
PARAMETRIZE_CACHE_VERSIONS = ("2.6", "3")  # torch
LOADED_MODEL_NAMES_VERSIONS = ("5.2", "6")  # transformers: _is_hf_initialized, _attn_implementation


def check_model_setup_names(quantized_experts: bool = False) -> None:
    """``UpstreamChanged`` unless this transformers (and torch, for 4-bit experts) is in the tested ranges."""
    import torch
    import transformers

    _check_range(transformers, LOADED_MODEL_NAMES_VERSIONS, "loading marks (_is_hf_initialized, _attn_implementation)")
    if quantized_experts:
        import torch.nn.utils.parametrize as P

        _check_range(torch, PARAMETRIZE_CACHE_VERSIONS, "parametrization cache")
        if not isinstance(getattr(P, "_cache", None), dict):
            raise UpstreamChanged(f"torch {torch.__version__} has no dict torch.nn.utils.parametrize._cache")


def forget_parametrization_cache(module, names) -> None:
    """Drop what torch's ``parametrize.cached()`` holds for ``module``'s tensors ``names`` (if anything)."""
    import torch.nn.utils.parametrize as P

    for name in names:
        P._cache.pop((id(module), name), None)


def mark_loaded(tensor) -> None:
    """Mark ``tensor`` as holding loaded values, so transformers' weight initialisation leaves it alone."""
    tensor._is_hf_initialized = True


def loaded_attn_implementation(config) -> str | None:
    """The attention implementation transformers resolved for a loaded model's ``config`` (None if it has none)."""
    return getattr(config, "_attn_implementation", None)
