"""The modules and parameter shapes transformers builds for a Qwen3.5 config.json, without torch.

``qwen35-tune plan`` must count what ``train`` will build, and stay instant where torch is not even installed (a
login node). Building the model on the meta device would need torch, transformers and peft (~15 s of imports), so
the planner lists the modules from the config numbers instead, with the names transformers gives them; peft's
matching rules then run over these names (plan_trainable). tests/unit/test_plan_counts.py holds this list equal to
the meta-device model's ``named_parameters`` for both real configs and the tiny ones.

MTP weights (``mtp.*`` in the checkpoints) are not built by transformers, so they are neither loaded nor trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Module:
    """One module that owns parameters: its full name, its kind (what peft can wrap), its own parameter shapes."""

    name: str
    kind: str  # linear | embedding | conv1d | conv3d | experts | router | norm | gdn
    params: tuple[tuple[str, tuple[int, ...]], ...]
    groups: int = 1  # convolution groups (the Gated DeltaNet conv is depthwise)

    @property
    def numel(self) -> int:
        return sum(math.prod(shape) for _, shape in self.params)

    @property
    def weight(self) -> tuple[int, ...]:
        return dict(self.params)["weight"]


def _linear(name: str, d_in: int, d_out: int, bias: bool = False) -> Module:
    params = (("weight", (d_out, d_in)),) + ((("bias", (d_out,)),) if bias else ())
    return Module(name, "linear", params)


def _norm(name: str, dim: int, bias: bool = False) -> Module:
    return Module(name, "norm", (("weight", (dim,)),) + ((("bias", (dim,)),) if bias else ()))


@dataclass(frozen=True)
class ModelShapes:
    """Every parameter-owning module of one model, plus the config numbers the memory model needs."""

    model_type: str
    modules: tuple[Module, ...]
    text: dict
    vision: dict | None
    layer_types: tuple[str, ...]
    layer_prefix: str  # "model.language_model.layers." or "model.layers."

    @cached_property
    def total(self) -> int:
        return sum(m.numel for m in self.modules)

    def named_parameters(self):
        """(full parameter name, shape, module) like ``model.named_parameters()``."""
        for module in self.modules:
            for pname, shape in module.params:
                yield f"{module.name}.{pname}", shape, module

    def layer_modules(self, index: int) -> list[Module]:
        return list(self._by_layer.get(index, ()))

    @cached_property
    def _by_layer(self) -> dict[int, list[Module]]:
        """Modules per decoder layer, sorted out once: the memory model asks per layer and per candidate setting, and
        scanning every module each time was most of a plan's time (a 35B plan took over a second)."""
        out: dict[int, list[Module]] = {}
        for module in self.modules:
            if module.name.startswith(self.layer_prefix):
                index = module.name[len(self.layer_prefix):].partition(".")[0]
                if index.isdigit():
                    out.setdefault(int(index), []).append(module)
        return out

    @property
    def is_moe(self) -> bool:
        return bool(self.text.get("num_experts"))


def layer_types_of(text: dict) -> list[str]:
    """Per decoder layer 'full_attention' or 'linear_attention', as transformers derives them."""
    return list(text.get("layer_types") or [
        "full_attention" if (i + 1) % text.get("full_attention_interval", 4) == 0 else "linear_attention"
        for i in range(text["num_hidden_layers"])
    ])  # fmt: skip


def _attention(prefix: str, t: dict) -> list[Module]:
    h, nh, nkv, hd, bias = t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"], t["head_dim"], bool(
        t.get("attention_bias", False))  # fmt: skip
    return [
        _linear(prefix + "q_proj", h, nh * hd * 2, bias),  # query and its output gate in one projection
        _linear(prefix + "k_proj", h, nkv * hd, bias),
        _linear(prefix + "v_proj", h, nkv * hd, bias),
        _linear(prefix + "o_proj", nh * hd, h, bias),
        _norm(prefix + "q_norm", hd),
        _norm(prefix + "k_norm", hd),
    ]


def _gated_deltanet(prefix: str, t: dict) -> list[Module]:
    h, hv = t["hidden_size"], t["linear_num_value_heads"]
    key_dim = t["linear_num_key_heads"] * t["linear_key_head_dim"]
    value_dim = hv * t["linear_value_head_dim"]
    conv_dim = 2 * key_dim + value_dim
    return [
        Module(prefix[:-1], "gdn", (("dt_bias", (hv,)), ("A_log", (hv,)))),
        Module(prefix + "conv1d", "conv1d", (("weight", (conv_dim, 1, t["linear_conv_kernel_dim"])),), conv_dim),
        _norm(prefix + "norm", t["linear_value_head_dim"]),
        _linear(prefix + "out_proj", value_dim, h),
        _linear(prefix + "in_proj_qkv", h, conv_dim),
        _linear(prefix + "in_proj_z", h, value_dim),
        _linear(prefix + "in_proj_b", h, hv),
        _linear(prefix + "in_proj_a", h, hv),
    ]


def _mlp(prefix: str, t: dict) -> list[Module]:
    h = t["hidden_size"]
    if not t.get("num_experts"):
        inter = t["intermediate_size"]
        return [_linear(prefix + "gate_proj", h, inter), _linear(prefix + "up_proj", h, inter),
                _linear(prefix + "down_proj", inter, h)]  # fmt: skip
    experts, mi, si = t["num_experts"], t["moe_intermediate_size"], t["shared_expert_intermediate_size"]
    shared = prefix + "shared_expert."
    return [
        Module(prefix + "gate", "router", (("weight", (experts, h)),)),
        Module(prefix + "experts", "experts", (("gate_up_proj", (experts, 2 * mi, h)),
                                               ("down_proj", (experts, h, mi)))),
        _linear(shared + "gate_proj", h, si),
        _linear(shared + "up_proj", h, si),
        _linear(shared + "down_proj", si, h),
        _linear(prefix + "shared_expert_gate", h, 1),
    ]


def _text_modules(prefix: str, t: dict, types: list[str]) -> list[Module]:
    h = t["hidden_size"]
    out = [Module(prefix + "embed_tokens", "embedding", (("weight", (t["vocab_size"], h)),))]
    for i, kind in enumerate(types):
        layer = f"{prefix}layers.{i}."
        mixer = _attention(layer + "self_attn.", t) if kind == "full_attention" else _gated_deltanet(
            layer + "linear_attn.", t)  # fmt: skip
        out += mixer + _mlp(layer + "mlp.", t)
        out += [_norm(layer + "input_layernorm", h), _norm(layer + "post_attention_layernorm", h)]
    return out + [_norm(prefix + "norm", h)]


def _vision_modules(prefix: str, v: dict) -> list[Module]:
    vh, vi = v["hidden_size"], v["intermediate_size"]
    kernel = (v["temporal_patch_size"], v["patch_size"], v["patch_size"])
    out = [
        Module(prefix + "patch_embed.proj", "conv3d", (("weight", (vh, v["in_channels"], *kernel)), ("bias", (vh,)))),
        Module(prefix + "pos_embed", "embedding", (("weight", (v["num_position_embeddings"], vh)),)),
    ]
    for i in range(v["depth"]):
        block = f"{prefix}blocks.{i}."
        out += [_norm(block + "norm1", vh, bias=True), _norm(block + "norm2", vh, bias=True),
                _linear(block + "attn.qkv", vh, 3 * vh, bias=True), _linear(block + "attn.proj", vh, vh, bias=True),
                _linear(block + "mlp.linear_fc1", vh, vi, bias=True),
                _linear(block + "mlp.linear_fc2", vi, vh, bias=True)]  # fmt: skip
    merged = vh * v["spatial_merge_size"] ** 2
    return out + [_norm(prefix + "merger.norm", vh, bias=True),
                  _linear(prefix + "merger.linear_fc1", merged, merged, bias=True),
                  _linear(prefix + "merger.linear_fc2", merged, v["out_hidden_size"], bias=True)]  # fmt: skip


def build_shapes(config: dict) -> ModelShapes:
    """The modules of the class named in ``config['architectures']`` (as ``models.load.model_class`` picks it)."""
    text = config.get("text_config", config)
    vision = config.get("vision_config")
    arch = (config.get("architectures") or [""])[0]
    conditional = arch.endswith("ForConditionalGeneration") or (not arch and vision is not None)
    types = layer_types_of(text)
    if conditional:
        lm_prefix, modules = "model.language_model.", _vision_modules("model.visual.", vision)
    else:
        lm_prefix, modules = "model.", []
        vision = None  # a text-only class drops the tower even if the config describes one
    modules = _text_modules(lm_prefix, text, types) + modules
    tied = text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))
    if not tied:  # a tied lm_head shares the embedding matrix (counted once, as named_parameters does)
        modules.append(_linear("lm_head", text["hidden_size"], text["vocab_size"]))
    return ModelShapes(config.get("model_type") or text.get("model_type", ""), tuple(modules), text, vision,
                       tuple(types), lm_prefix + "layers.")  # fmt: skip
