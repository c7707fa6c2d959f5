"""Facts about each Qwen3.5 architecture, keyed by transformers ``model_type``: a plain dict, no plugin system.

Module names are the transformers 5.x ones (``linear_attn.in_proj_qkv`` etc.). A LoRA target *preset* says, for
one group of weights, which modules get adapters (full-name regexes, so the vision tower's ``linear_fc1`` is never
confused with anything in the language model), which parameters get adapters through peft ``target_parameters``
(MoE routed experts are fused 3-D parameters, not ``nn.Linear``), and which modules are trained in full and saved
with the adapter (router, embeddings, lm_head). Imports nothing heavy: the recipe schema validates against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from qwen35_tune.errors import UserError

# Qwen3.5's vision tower: 16-pixel patches, 2x2 spatial merge, 2-frame temporal patches, inputs scaled to [-1, 1].
QWEN35_VISION = {"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2,
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}  # fmt: skip


ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LINEAR_ATTENTION = ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
# The MoE's routed experts are fused 3-D parameters; each stacks these per-expert linears (gate rows, then up rows),
# which is how per-expert checkpoints and merged exports store them.
FUSED_EXPERT_PIECES = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}
EXPERT_PARAMS = tuple(FUSED_EXPERT_PIECES)
ROUTED_EXPERT_PARAMS = tuple(f"mlp.experts.{name}" for name in EXPERT_PARAMS)
# Parameters real Qwen3.5 checkpoints keep in fp32 even when the rest is bf16 (GDN decay, gated norm weight).
FP32_PARAM_SUFFIXES = ("linear_attn.A_log", "linear_attn.norm.weight")
# Tiny random checkpoints of each architecture, for tests and CI (models/tiny.py builds them; the recipe schema,
# which must not import torch, checks the names).
TINY_SCHEME = "tiny://"
TINY_KINDS = ("dense", "moe", "vision", "moe-vision")

_LANG = r"^(?!.*visual\.)(.*\.)?"  # anything outside the vision tower


def _alt(names: tuple[str, ...]) -> str:
    return "(" + "|".join(names) + ")"


@dataclass(frozen=True)
class Preset:
    """One named group of weights: module regexes for LoRA, fused parameters for LoRA, modules trained in full."""

    modules: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    save: tuple[str, ...] = ()

    def __add__(self, other: Preset) -> Preset:
        return Preset(self.modules + other.modules, self.parameters + other.parameters, self.save + other.save)


_ATTENTION = Preset(modules=(_LANG + r"self_attn\." + _alt(ATTENTION) + "$",))
_LINEAR_ATTENTION = Preset(modules=(_LANG + r"linear_attn\." + _alt(LINEAR_ATTENTION) + "$",))
_DENSE_MLP = Preset(modules=(_LANG + r"mlp\." + _alt(MLP) + "$",))
_SHARED_EXPERT = Preset(
    modules=(_LANG + r"mlp\.shared_expert\." + _alt(MLP) + "$", _LANG + r"mlp\.shared_expert_gate$")
)
_ROUTED_EXPERTS = Preset(parameters=ROUTED_EXPERT_PARAMS)
# The router (`mlp.gate`) is a TopK router module, not an nn.Linear peft can wrap; it is small (experts x hidden per
# layer), so "training the router" means training it in full and saving it with the adapter.
_ROUTER = Preset(save=("mlp.gate",))
_VISION = Preset(modules=(r"^(.*\.)?visual\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.linear_fc1|mlp\.linear_fc2)$",))
_PROJECTOR = Preset(modules=(r"^(.*\.)?visual\.(merger|deepstack_merger_list\.\d+)\.(linear_fc1|linear_fc2)$",))


def _presets(moe: bool, vision: bool) -> dict[str, Preset]:
    mlp = _SHARED_EXPERT + _ROUTED_EXPERTS if moe else _DENSE_MLP
    language = _ATTENTION + _LINEAR_ATTENTION + mlp
    presets = {
        "attention": _ATTENTION,
        "linear_attention": _LINEAR_ATTENTION,
        "mlp": mlp,  # for MoE: the shared expert (+ its gate) and the routed experts
        "language": language,
        # What users mean by "all": every language-model weight matrix, including MoE routed experts. Not the router,
        # embeddings or vision tower: those change behaviour beyond the task and are opted into by name.
        "all": language,
        "embeddings": Preset(save=("embed_tokens",)),
        "lm_head": Preset(save=("lm_head",)),
    }
    if moe:
        presets.update(shared_expert=_SHARED_EXPERT, routed_experts=_ROUTED_EXPERTS, router=_ROUTER)
    if vision:
        presets.update(vision=_VISION, projector=_PROJECTOR)
    return presets


# Every preset name any architecture knows (recipe validation has no model yet, so it checks against this).
ALL_PRESETS = ("attention", "linear_attention", "mlp", "language", "all", "embeddings", "lm_head",
               "shared_expert", "routed_experts", "router", "vision", "projector")  # fmt: skip
# Peft's "all-linear" would skip the fused routed experts of the MoE model (the silent 13.5 MB adapter); here it is
# an alias of "all".
PRESET_ALIASES = {"all-linear": "all"}


@dataclass(frozen=True)
class ModelSpec:
    """What the project needs to know about one architecture family."""

    family: str
    moe: bool
    vision: bool
    presets: dict[str, Preset] = field(default_factory=dict)
    fp32_params: tuple[str, ...] = FP32_PARAM_SUFFIXES
    vision_prefixes: tuple[str, ...] = ()
    mtp_prefix: str = "mtp."


def _spec(family: str, moe: bool, vision: bool) -> ModelSpec:
    prefixes = ("model.visual.",) if vision else ()
    return ModelSpec(family, moe=moe, vision=vision, presets=_presets(moe, vision), vision_prefixes=prefixes)


REGISTRY: dict[str, ModelSpec] = {
    "qwen3_5": _spec("qwen3_5", moe=False, vision=True),
    "qwen3_5_text": _spec("qwen3_5", moe=False, vision=False),
    "qwen3_5_moe": _spec("qwen3_5_moe", moe=True, vision=True),
    "qwen3_5_moe_text": _spec("qwen3_5_moe", moe=True, vision=False),
}


def spec_for(model_type: str) -> ModelSpec:
    """The spec for a transformers model_type, or a clear error for an architecture this project does not know."""
    try:
        return REGISTRY[model_type]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise UserError(f"model_type '{model_type}' is not a Qwen3.5 model qwen35-tune knows: {known}") from None


@dataclass(frozen=True)
class Targets:
    """Resolved adapter targets: one peft ``target_modules`` regex, ``target_parameters``, ``modules_to_save``."""

    regex: str | None
    parameters: tuple[str, ...]
    save: tuple[str, ...]


def resolve_preset_names(target_modules: str | list[str], spec: ModelSpec) -> Targets:
    """Expand preset names and explicit leaf module names into one peft target set for this architecture.

    A plain string that is not a preset name is a regex passed to peft as is; list entries that are not preset names
    are leaf module names (``q_proj``) or dotted suffixes (``linear_attn.out_proj``), matched anywhere.
    """
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    names = [PRESET_ALIASES.get(n, n) for n in names]
    if isinstance(target_modules, str) and names[0] not in spec.presets and names[0] not in ALL_PRESETS:
        return Targets(target_modules, (), ())
    total = Preset()
    for name in names:
        if name in spec.presets:
            total = total + spec.presets[name]
        elif name in ALL_PRESETS:
            raise UserError(f"method.lora.target_modules: preset '{name}' does not apply to {spec.family} "
                            f"({'MoE' if spec.moe else 'dense'}, {'with' if spec.vision else 'no'} vision tower); "
                            f"presets here: {', '.join(spec.presets)}")
        else:
            total = total + Preset(modules=(r"^(.*\.)?" + re.escape(name) + "$",))
    regex = "|".join(f"(?:{m})" for m in dict.fromkeys(total.modules)) or None
    return Targets(regex, tuple(dict.fromkeys(total.parameters)), tuple(dict.fromkeys(total.save)))


def surely_targets_experts(target_modules: str | list[str], target_parameters: list[str] | None) -> bool:
    """True when adapters go on fused expert parameters whatever the model (named preset or explicit parameters)."""
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    return bool(target_parameters) or "routed_experts" in names
