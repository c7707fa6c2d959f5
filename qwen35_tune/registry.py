"""Facts about each Qwen3.5 architecture, keyed by transformers ``model_type``: a plain dict, no plugin system.

Module names are the transformers 5.x ones (``linear_attn.in_proj_qkv`` etc.); LoRA target presets name leaf
modules so peft matches them in every layer, and ``exclude`` keeps the vision tower out of language presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qwen35_tune.errors import UserError

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LINEAR_ATTENTION = ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelSpec:
    """What the project needs to know about one architecture family."""

    family: str
    moe: bool
    vision: bool
    presets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fp32_params: tuple[str, ...] = ("linear_attn.A_log", "linear_attn.norm.weight")
    vision_prefixes: tuple[str, ...] = ()
    mtp_prefix: str = "mtp."


def _presets(moe: bool) -> dict[str, tuple[str, ...]]:
    language = ATTENTION + LINEAR_ATTENTION + MLP  # for MoE, MLP names match the shared expert's projections
    return {
        "attention": ATTENTION,
        "linear_attention": LINEAR_ATTENTION,
        "mlp": MLP,
        "language": language,
    }


_VISION_PREFIXES = ("model.visual.",)

REGISTRY: dict[str, ModelSpec] = {
    "qwen3_5": ModelSpec("qwen3_5", moe=False, vision=True, presets=_presets(False), vision_prefixes=_VISION_PREFIXES),
    "qwen3_5_text": ModelSpec("qwen3_5", moe=False, vision=False, presets=_presets(False)),
    "qwen3_5_moe": ModelSpec("qwen3_5_moe", moe=True, vision=True, presets=_presets(True),
                             vision_prefixes=_VISION_PREFIXES),
    "qwen3_5_moe_text": ModelSpec("qwen3_5_moe", moe=True, vision=False, presets=_presets(True)),
}

# Regex peft uses when a recipe says "all-linear": every linear layer of the language model, never the vision
# tower (training a ViT through a text recipe is never what "all-linear" users mean) and never lm_head.
LANGUAGE_ONLY_REGEX = r"^(?!.*visual).*\.(" + "|".join(ATTENTION + LINEAR_ATTENTION + MLP) + r")$"


def spec_for(model_type: str) -> ModelSpec:
    """The spec for a transformers model_type, or a clear error for an architecture this project does not know."""
    try:
        return REGISTRY[model_type]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise UserError(f"model_type '{model_type}' is not a Qwen3.5 model qwen35-tune knows: {known}") from None
