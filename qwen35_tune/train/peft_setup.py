"""Recipe ``method`` section → peft ``LoraConfig`` (targets resolved through the model registry)."""

from __future__ import annotations

from qwen35_tune.errors import UserError
from qwen35_tune.registry import LANGUAGE_ONLY_REGEX, spec_for


def resolve_targets(target_modules: str | list[str], model_type: str) -> str | list[str]:
    """Expand preset names (``attention``, ``linear_attention``, ...) and ``all-linear`` for this architecture."""
    spec = spec_for(model_type)
    if target_modules == "all-linear":
        return LANGUAGE_ONLY_REGEX
    if isinstance(target_modules, str):
        return target_modules  # a regex, passed to peft as is
    resolved: list[str] = []
    for name in target_modules:
        resolved.extend(spec.presets.get(name, (name,)))
    return sorted(set(resolved))


def build_lora_config(recipe, model):
    """The peft LoraConfig for a lora/qlora recipe; None for a full fine-tune."""
    from peft import LoraConfig, TaskType

    if recipe.method.kind == "full":
        return None
    lora = recipe.method.lora
    targets = resolve_targets(lora.target_modules, model.config.model_type)
    try:
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=lora.r,
            lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout,
            target_modules=targets,
            target_parameters=lora.target_parameters,
            modules_to_save=lora.modules_to_save,
            use_rslora=lora.use_rslora,
            use_dora=lora.use_dora,
            bias=lora.bias,
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"method.lora: peft rejected these settings: {exc}") from None
