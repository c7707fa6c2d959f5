"""QLoRA for the MoE: store the fused routed-expert stacks (``mlp.experts.gate_up_proj`` / ``down_proj``) in 4 bit.

transformers' bitsandbytes loader quantizes only ``nn.Linear``; Qwen3.5-MoE keeps its routed experts as 3-D
``nn.Parameter`` stacks, so under ``load_in_4bit`` they stay in bf16 — ~94% of the 35B-A3B's weights
(bitsandbytes-foundation/bitsandbytes#1849). bitsandbytes ≥0.48 ships ``replace_parameter_4bit`` (PR #1965), which
quantizes any parameter and registers a torch parametrization that dequantizes it on access; we use it rather than
our own kernel. The experts forward then sees a dequantized stack for one layer at a time (cached within the layer's
forward by bitsandbytes' hooks), and peft's ``target_parameters`` LoRA stacks its own parametrization on top
(patches.apply_peft_stacked_param_lora makes peft remove its proxy again after each forward).

The stacks are quantized while the checkpoint loads (``experts_in_4bit_while_loading``), one stack at a time, so the
bf16 experts (~64 GB of the 35B-A3B) are never all in memory at once; ``quantize_moe_experts`` after loading then
only finishes the job (or quantizes what a loader set some other way).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from qwen35_tune.errors import UserError
from qwen35_tune.registry import EXPERT_PARAMS

log = logging.getLogger(__name__)


def fused_expert_modules(model) -> list[tuple[str, object]]:
    """(name, module) of every module holding 3-D fused expert stacks (quantized or not); peft wrappers excluded."""
    import torch.nn.utils.parametrize as P

    def owns(module, param_name: str) -> bool:  # its own parameter, not one a peft wrapper forwards via __getattr__
        return P.is_parametrized(module, param_name) or param_name in dict(module.named_parameters(recurse=False))

    found = []
    for name, module in model.named_modules():
        if all(owns(module, p) and getattr(module, p).ndim == 3 for p in EXPERT_PARAMS):
            found.append((name, module))
    return found


def _stored_bytes(module, param_name: str) -> int:
    import torch.nn.utils.parametrize as P

    tensor = module.parametrizations[param_name].original if P.is_parametrized(module, param_name) else \
        getattr(module, param_name)
    return tensor.numel() * tensor.element_size()


def expert_bytes(model) -> int:
    """Bytes the routed-expert stacks occupy as stored (4-bit storage once quantized; quant constants excluded)."""
    return sum(_stored_bytes(m, p) for _, m in fused_expert_modules(model) for p in EXPERT_PARAMS)


def is_quantized(module, param_name: str) -> bool:
    import torch.nn.utils.parametrize as P

    if not P.is_parametrized(module, param_name):
        return False
    return any(type(p).__name__ == "Bnb4bitParametrization" for p in module.parametrizations[param_name])


def _replace_parameter_4bit():
    try:
        from bitsandbytes.nn.parametrize import replace_parameter_4bit
    except ImportError:
        import importlib.metadata as md

        try:
            have = md.version("bitsandbytes")
        except md.PackageNotFoundError:
            have = "not installed"
        raise UserError("method.kind: qlora on an MoE model needs bitsandbytes>=0.48 (4-bit fused experts via "
                        f"bitsandbytes.nn.parametrize; found {have}): pip install -U bitsandbytes") from None
    return replace_parameter_4bit


def _check_upstream_names() -> None:
    """The torch and transformers private names 4-bit experts use (``qwen35_tune.patches``) are known here."""
    from qwen35_tune import patches

    try:
        patches.check_model_setup_names(quantized_experts=True)
    except patches.UpstreamChanged as exc:
        raise UserError(f"method.kind: qlora: {exc}; install a version in that range") from None


def _drop_stale_dequantized(module, args) -> None:
    """Forward pre-hook: forget dequantized stacks torch cached before peft stacked its LoRA proxy on top.

    With two adapted stacks on one module peft nests two wrappers; the outer one opens ``parametrize.cached()`` and
    the inner one then reads (and registers a proxy on) its own parameter, so torch caches the stack *without* the
    inner LoRA delta and that adapter would never get a gradient. Dropping the entries here, after every wrapper has
    registered its proxy, makes the experts forward see base + delta for both stacks.
    """
    from qwen35_tune.patches import forget_parametrization_cache

    forget_parametrization_cache(module, EXPERT_PARAMS)


def quantize_moe_experts(model, quant_type: str = "nf4", double_quant: bool = True) -> dict[str, int]:
    """Quantize every fused expert stack not yet in 4 bit; returns stacks quantized here and expert bytes before/after.

    Stacks already quantized while loading are left as they are (``stacks`` counts only the ones done here).
    """
    from qwen35_tune import patches

    modules = fused_expert_modules(model)
    if not modules:
        return {"stacks": 0, "bytes_before": 0, "bytes_after": 0}
    replace = _replace_parameter_4bit()
    if not patches.apply_peft_stacked_param_lora():
        raise UserError("method.kind: qlora on an MoE model: this peft version is untested with 4-bit experts "
                        "(see qwen35_tune/patches.py PEFT_PARAM_PATCH_VERSIONS)")
    _check_upstream_names()
    before = expert_bytes(model)
    stacks = 0
    for _, module in modules:
        for param_name in EXPERT_PARAMS:
            if not is_quantized(module, param_name):
                replace(module, param_name, compress_statistics=double_quant, quant_type=quant_type)
                stacks += 1
        if not getattr(module, "_qwen35_tune_stale_hook", False):
            module.register_forward_pre_hook(_drop_stale_dequantized)
            module._qwen35_tune_stale_hook = True
    after = expert_bytes(model)
    if stacks:
        log.info("routed experts in 4 bit (%s%s): %d stacks, %.1f MiB -> %.1f MiB", quant_type,
                 ", double quant" if double_quant else "", stacks, before / 2**20, after / 2**20)
    return {"stacks": stacks, "bytes_before": before, "bytes_after": after}


def _is_expert_stack(module, name: str, param) -> bool:
    """A routed-expert stack being set with real values (not the meta placeholder the model is built with)."""
    return (name in EXPERT_PARAMS and param is not None and param.ndim == 3 and param.is_floating_point()
            and param.device.type != "meta" and type(module).__name__.endswith("Experts"))


@contextmanager
def experts_in_4bit_while_loading(quant_type: str = "nf4", double_quant: bool = True):
    """Within this block, each fused expert stack a loader sets on a module is stored in 4 bit as it arrives.

    transformers' loader sets each checkpoint tensor with ``setattr(module, name, Parameter)`` once it is built (the
    per-expert checkpoint tensors are stacked first); torch's public parameter-registration hook sees it there, and we
    store the 4-bit data in its place, so at most one bf16 stack exists at a time instead of all of them. The
    dequantizing parametrization is registered when the block ends (registering it from inside the hook would run
    before torch stores the parameter). A loader that bypasses ``setattr`` leaves the stacks in bf16, and
    ``quantize_moe_experts`` after loading still quantizes them (the canary test in
    tests/smoke/test_quantize_experts.py fails if that happens with transformers' own loader).
    """
    import torch
    from torch.nn.modules.module import register_module_parameter_registration_hook

    _replace_parameter_4bit()  # the same clear error as after loading when bitsandbytes is missing or too old
    _check_upstream_names()
    from bitsandbytes.functional import quantize_4bit
    from bitsandbytes.nn.parametrize import replace_parameter_4bit_prequantized

    from qwen35_tune.patches import mark_loaded

    pending: list[tuple[object, str, object]] = []

    def quantize_on_arrival(module, name, param):
        if not _is_expert_stack(module, name, param):
            return None
        with torch.no_grad():
            data, state = quantize_4bit(param.data, compress_statistics=double_quant, quant_type=quant_type)
        stored = torch.nn.Parameter(data, requires_grad=False)
        mark_loaded(stored)  # transformers must not re-initialise a loaded weight
        pending.append((module, name, state))
        return stored

    handle = register_module_parameter_registration_hook(quantize_on_arrival)
    try:
        yield pending
    finally:
        handle.remove()
        for module, name, state in pending:
            replace_parameter_4bit_prequantized(module, name, state.as_dict(packed=True), state.absmax.device)
    if pending:
        log.info("routed experts stored in 4 bit while loading (%s%s): %d stacks", quant_type,
                 ", double quant" if double_quant else "", len(pending))


def parameter_targets_for(model, parameters: tuple[str, ...]) -> tuple[str, ...]:
    """Expert ``target_parameters`` as peft must see them on this model.

    peft matches an already parametrized module (our 4-bit experts) only by its full module name, not by suffix
    (peft/tuners/tuners_utils.py, `_inject_parameters`), so suffixes such as ``mlp.experts.gate_up_proj`` would
    silently adapt nothing there; they are expanded to every matching full name. Unquantized models keep suffixes.
    """
    import torch.nn.utils.parametrize as P

    quantized = [(name, m) for name, m in fused_expert_modules(model) if any(P.is_parametrized(m, p)
                                                                            for p in EXPERT_PARAMS)]
    if not quantized:
        return parameters
    expanded: list[str] = []
    for target in parameters:
        module_suffix, _, param_name = target.rpartition(".")
        full = [f"{name}.{param_name}" for name, m in quantized
                if (name == module_suffix or name.endswith("." + module_suffix)) and P.is_parametrized(m, param_name)]
        expanded.extend(full or [target])
    return tuple(dict.fromkeys(expanded))
