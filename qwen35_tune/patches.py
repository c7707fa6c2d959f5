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
"""

from __future__ import annotations

import functools
import importlib.util
import logging

log = logging.getLogger(__name__)

# transformers versions whose Qwen3.5 GDN forward was read and tested with this patch: [low, high).
GDN_PATCH_VERSIONS = ("5.2", "6")
# Keys a packed-batch collator adds; they describe the whole packed row and must not reach a per-sample call.
BOUNDARY_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")
_GDN_CLASSES = (
    ("transformers.models.qwen3_5.modeling_qwen3_5", "Qwen3_5GatedDeltaNet"),
    ("transformers.models.qwen3_5_moe.modeling_qwen3_5_moe", "Qwen3_5MoeGatedDeltaNet"),
)
_applied: dict[str, bool] = {}


def varlen_kernels_available() -> bool:
    """True when flash-linear-attention and causal-conv1d are importable, i.e. upstream honours boundaries itself."""
    return importlib.util.find_spec("fla") is not None and importlib.util.find_spec("causal_conv1d") is not None


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


def _per_sample_forward(original):
    """Wrap a GDN ``forward`` so a packed row (batch 1 + ``cu_seq_lens_q``) without the kernels runs per sample."""

    @functools.wraps(original)
    def forward(self, hidden_states, cache=None, attention_mask=None, **kwargs):
        cu_seq_lens = kwargs.get("cu_seq_lens_q")
        if cu_seq_lens is None or cache is not None or varlen_kernels_available():
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
    import importlib

    for module_name, class_name in _GDN_CLASSES:
        cls = getattr(importlib.import_module(module_name), class_name)
        if not hasattr(cls.forward, "_qwen35_tune_original"):
            cls.forward = _per_sample_forward(cls.forward)
    _applied["gdn_packed_segments"] = True
    return True


def remove_gdn_packed_segments() -> None:
    """Undo ``apply_gdn_packed_segments`` (tests use it for the negative control that shows the leak)."""
    import importlib

    for module_name, class_name in _GDN_CLASSES:
        cls = getattr(importlib.import_module(module_name), class_name)
        original = getattr(cls.forward, "_qwen35_tune_original", None)
        if original is not None:
            cls.forward = original
    _applied.pop("gdn_packed_segments", None)


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


def apply_all() -> list[str]:
    """Apply every patch this transformers version needs; returns the names applied."""
    return [name for name, ok in (("gdn_packed_segments", apply_gdn_packed_segments()),) if ok]


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
