"""Recipe ``method`` section → peft ``LoraConfig`` (targets resolved through the model registry's presets)."""

from __future__ import annotations

from qwen35_tune.errors import UserError
from qwen35_tune.registry import Targets, resolve_preset_names, spec_for


def resolve_targets(recipe, model_type: str) -> Targets:
    """Presets + explicit modules + ``method.lora.target_parameters``/``modules_to_save`` for this architecture."""
    lora = recipe.method.lora
    found = resolve_preset_names(lora.target_modules, spec_for(model_type))
    parameters = tuple(dict.fromkeys(found.parameters + tuple(lora.target_parameters or ())))
    save = tuple(dict.fromkeys(found.save + tuple(lora.modules_to_save or ())))
    return Targets(found.regex, parameters, save)


def check_expert_options(recipe, targets: Targets) -> None:
    """peft's ParamWrapper (fused expert adapters) refuses dropout and DoRA: name the recipe key before peft does."""
    if not targets.parameters:
        return
    lora = recipe.method.lora
    why = f"the targets include fused MoE expert parameters ({', '.join(targets.parameters)}), which peft adapts"
    if lora.lora_dropout:
        raise UserError(f"method.lora.lora_dropout: {why} only with lora_dropout: 0 (found {lora.lora_dropout})")
    if lora.use_dora:
        raise UserError(f"method.lora.use_dora: {why} only with plain LoRA; drop 'routed_experts' from "
                        "target_modules or set use_dora: false")


def build_lora_config(recipe, model):
    """The peft LoraConfig for a lora/qlora recipe; None for a full fine-tune."""
    from peft import LoraConfig, TaskType

    if recipe.method.kind == "full":
        return None
    lora = recipe.method.lora
    from qwen35_tune.models.quantize import parameter_targets_for

    targets = resolve_targets(recipe, model.config.model_type)
    check_expert_options(recipe, targets)
    parameters = parameter_targets_for(model, targets.parameters)  # full names on 4-bit experts (peft needs them)
    if targets.regex is None and not targets.parameters:
        raise UserError("method.lora.target_modules: no module gets an adapter; name a preset such as 'all'")
    try:
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=lora.r,
            lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout,
            # peft needs some target_modules value; a regex that matches nothing when only parameters are adapted
            target_modules=targets.regex if targets.regex is not None else r"^$",
            target_parameters=list(parameters) or None,
            modules_to_save=list(targets.save) or None,
            use_rslora=lora.use_rslora,
            use_dora=lora.use_dora,
            bias=lora.bias,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"method.lora: peft rejected these settings: {exc}") from None
