"""Per-GPU memory planner: which launch strategy, micro-batch and accumulation fit a recipe on given GPUs.

Everything is derived from the model's config.json numbers (parameter counts per module, activation widths),
never from a size in the model's name. No library estimates a hybrid GDN / MoE / vision model's training memory
(accelerate's ``estimate-memory`` only counts weights), hence this small model of it. Assumptions, all per GPU:
bf16 weights (4-bit linears for QLoRA at ~0.55 byte/param); LoRA adapters fp32 (peft's default upcast) with fp32
grads and AdamW states (16 B/param); full fine-tunes keep bf16 weights + bf16 grads + fp32 master and AdamW states
(2 + 2 + 12 B/param, as DeepSpeed and FSDP mixed precision do); logits cost 10 B per token per vocab entry (bf16
logits, fp32 upcast in the loss, fp32 gradient); 8% of the card is kept free for the CUDA context and fragmentation.
No torch import: the planner reads plain JSON.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from qwen35_tune.errors import UserError

GB = 1e9
STRATEGIES = ("ddp", "zero2", "fsdp2", "zero3", "zero3_offload")
SHIPPED = {
    "qwen/qwen3.5-9b": "qwen3_5_9b.json",
    "qwen/qwen3.5-9b-base": "qwen3_5_9b.json",
    "qwen/qwen3.5-35b-a3b": "qwen3_5_35b_a3b.json",
    "qwen/qwen3.5-35b-a3b-base": "qwen3_5_35b_a3b.json",
}
USABLE = 0.92
QUANT_BYTES = 0.55  # nf4 weight + double-quantised block constants


@dataclass(frozen=True)
class Gpus:
    count: int
    name: str
    memory_gb: float

    @property
    def usable_bytes(self) -> float:
        return self.memory_gb * GB * USABLE


def parse_gpus(text: str) -> Gpus:
    """'8xH100-80GB', '1xH200-141GB', '2x24GB' -> Gpus."""
    match = re.fullmatch(r"(\d+)\s*[xX]\s*(?:([A-Za-z0-9_.]+)-)?(\d+(?:\.\d+)?)\s*GB", text.strip())
    if not match or int(match.group(1)) < 1:
        raise UserError(f"--gpus {text!r}: expected COUNTxNAME-MEMORYGB, e.g. 8xH100-80GB or 1xH200-141GB")
    return Gpus(int(match.group(1)), match.group(2) or "GPU", float(match.group(3)))


def load_model_config(name_or_path: str) -> dict:
    """config.json as a dict: a shipped copy for the real Qwen3.5 hub ids (offline), else a local folder."""
    shipped = SHIPPED.get(name_or_path.lower())
    if shipped:
        return json.loads(resources.files("qwen35_tune.model_configs").joinpath(shipped).read_text())
    if name_or_path.startswith("tiny://"):
        from qwen35_tune.models.tiny import resolve_tiny

        name_or_path = str(resolve_tiny(name_or_path))
    path = Path(name_or_path) / "config.json"
    if not path.is_file():
        known = ", ".join(sorted({k.split("/")[1] for k in SHIPPED}))
        raise UserError(f"model.name_or_path: no config for '{name_or_path}' (the planner knows {known} offline, or "
                        "give a local checkpoint folder)")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Counts:
    """Parameter counts by role, and the widths activations are made of."""

    embed: int  # input embeddings + lm_head
    layers: list  # per decoder layer: (params, linear params, activation elements per token)
    vision: int
    vision_linear: int
    hidden: int
    vocab: int
    num_experts: int = 0

    @property
    def total(self) -> int:
        return self.embed + sum(p for p, _, _ in self.layers) + self.vision


def count_params(config: dict) -> Counts:
    """Parameter counts from config numbers, module by module as transformers' Qwen3.5 modelling code builds them."""
    text = config.get("text_config", config)
    h, vocab = text["hidden_size"], text["vocab_size"]
    types = _layer_types(text)
    nh, nkv, hd = text["num_attention_heads"], text["num_key_value_heads"], text["head_dim"]
    key_dim = text["linear_num_key_heads"] * text["linear_key_head_dim"]
    value_dim = text["linear_num_value_heads"] * text["linear_value_head_dim"]
    conv_dim = 2 * key_dim + value_dim
    v_heads = text["linear_num_value_heads"]
    # (params, linear params, activation elements kept per token for backward)
    attn_linear = h * nh * hd * 2 + 2 * h * nkv * hd + nh * hd * h  # q_proj also carries the output gate
    full = (attn_linear + 2 * hd, attn_linear, 4 * nh * hd + 2 * nkv * hd)
    gdn_linear = h * conv_dim + h * value_dim + 2 * h * v_heads + value_dim * h
    gdn = (gdn_linear + conv_dim * text["linear_conv_kernel_dim"] + 2 * v_heads + text["linear_value_head_dim"],
           gdn_linear, 2 * conv_dim + 4 * value_dim)  # fmt: skip
    experts = text.get("num_experts", 0)
    if experts:
        mi, si, k = text["moe_intermediate_size"], text["shared_expert_intermediate_size"], text["num_experts_per_tok"]
        routed = experts * 3 * h * mi
        shared = 3 * h * si
        mlp = (routed + shared + experts * h + h, shared + h, k * 4 * mi + 4 * si + experts + h)
    else:
        inter = text["intermediate_size"]
        mlp = (3 * h * inter, 3 * h * inter, 4 * inter + h)
    norms = 2 * h
    layers = []
    for kind in types:
        mixer = full if kind == "full_attention" else gdn
        layers.append((mixer[0] + mlp[0] + norms, mixer[1] + mlp[1], mixer[2] + mlp[2] + 2 * h))
    tied = text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))
    embed = vocab * h * (1 if tied else 2) + h
    vision = vision_linear = 0
    if "vision_config" in config:
        v = config["vision_config"]
        vh, vi, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
        block_linear = 4 * vh * vh + 2 * vh * vi
        merged = vh * v["spatial_merge_size"] ** 2
        merger_linear = merged * merged + merged * v["out_hidden_size"]
        patch = v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2 * vh
        vision_linear = depth * block_linear + merger_linear
        vision = vision_linear + depth * (4 * vh + 4 * vh + vi + vh) + patch + vh + 2 * vh + merged + v[
            "out_hidden_size"] + v["num_position_embeddings"] * vh  # fmt: skip
    return Counts(embed, layers, vision, vision_linear, h, vocab, experts)


def lora_params(config: dict, recipe) -> int:
    """Adapter parameters r * (in + out) for every targeted projection of the language model."""
    from qwen35_tune.registry import ATTENTION, LINEAR_ATTENTION, MLP

    lora = recipe.method.lora
    targets = lora.target_modules
    names = set(ATTENTION + LINEAR_ATTENTION + MLP) if targets == "all-linear" or isinstance(targets, str) else set(
        targets)  # a regex string is planned like all-linear  # fmt: skip
    text = config.get("text_config", config)
    h, nh, nkv, hd = text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"], text["head_dim"]
    key_dim = text["linear_num_key_heads"] * text["linear_key_head_dim"]
    value_dim = text["linear_num_value_heads"] * text["linear_value_head_dim"]
    vh = text["linear_num_value_heads"]
    inter = text.get("shared_expert_intermediate_size") or text.get("intermediate_size")
    shapes = {"q_proj": (h, 2 * nh * hd), "k_proj": (h, nkv * hd), "v_proj": (h, nkv * hd), "o_proj": (nh * hd, h),
              "in_proj_qkv": (h, 2 * key_dim + value_dim), "in_proj_z": (h, value_dim), "in_proj_b": (h, vh),
              "in_proj_a": (h, vh), "out_proj": (value_dim, h), "gate_proj": (h, inter), "up_proj": (h, inter),
              "down_proj": (inter, h)}  # fmt: skip
    full_only, linear_only = set(ATTENTION), set(LINEAR_ATTENTION)
    n_full = _layer_types(text).count("full_attention")
    n_linear = text["num_hidden_layers"] - n_full
    total = 0
    for name in names & set(shapes):
        d_in, d_out = shapes[name]
        layers = n_full if name in full_only else n_linear if name in linear_only else text["num_hidden_layers"]
        total += layers * lora.r * (d_in + d_out)
    if lora.target_parameters and text.get("num_experts"):
        mi, experts = text["moe_intermediate_size"], text["num_experts"]
        for param in lora.target_parameters:
            d_in, d_out = (h, 2 * mi) if "gate_up" in param else (mi, h)
            total += text["num_hidden_layers"] * experts * lora.r * (d_in + d_out)
    return total


def _layer_types(text: dict) -> list[str]:
    return text.get("layer_types") or [
        "full_attention" if (i + 1) % text.get("full_attention_interval", 4) == 0 else "linear_attention"
        for i in range(text["num_hidden_layers"])
    ]


@dataclass(frozen=True)
class Setup:
    """The knobs the plan varies: what the recipe asks for, or a suggested change to it."""

    method: str  # lora | qlora | full
    micro_batch: int
    max_length: int
    checkpointing: bool
    trainable: int  # trainable parameters (adapter or full)


@dataclass(frozen=True)
class Estimate:
    """Per-GPU bytes by component for one strategy."""

    strategy: str
    weights: float
    grads: float
    optimizer: float
    activations: float
    logits: float
    cpu_offload: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.logits


def estimate(counts: Counts, setup: Setup, strategy: str, world: int) -> Estimate:
    """Per-GPU memory of one strategy on ``world`` GPUs (see the module docstring for the byte counts)."""
    linear = sum(lin for _, lin, _ in counts.layers) + counts.vision_linear
    base = counts.total * 2.0 if setup.method != "qlora" else (counts.total - linear) * 2.0 + linear * QUANT_BYTES
    if setup.method == "full":
        weights, grads, optim = base, setup.trainable * 2.0, setup.trainable * 12.0
    else:
        weights, grads, optim = base + setup.trainable * 4.0, setup.trainable * 4.0, setup.trainable * 8.0
    cpu = 0.0
    # ZeRO-3 / FSDP gather one layer (plus one prefetched) at a time; the embeddings are the largest unit here.
    largest = max([p for p, _, _ in counts.layers] + [counts.embed // 2]) * 2.0 * 2
    if strategy in ("zero2",):
        grads, optim = grads / world, optim / world
    elif strategy in ("zero3", "fsdp2"):
        weights, grads, optim = weights / world + largest, grads / world, optim / world
    elif strategy == "zero3_offload":
        cpu = (weights + optim) / world  # this GPU's share of the CPU copies
        weights, grads, optim = largest, grads / world, 0.0
    tokens = setup.micro_batch * setup.max_length
    per_layer = [act * 2.0 * tokens for _, _, act in counts.layers]
    if setup.checkpointing:  # layer inputs kept, one layer's activations rebuilt at a time
        activations = len(per_layer) * counts.hidden * 2.0 * tokens + max(per_layer)
    else:
        activations = sum(per_layer)
    logits = tokens * counts.vocab * 10.0
    return Estimate(strategy, weights, grads, optim, activations, logits, cpu)


@dataclass(frozen=True)
class Plan:
    gpus: Gpus
    setup: Setup
    estimates: dict
    recommended: str | None  # strategy name, None when nothing fits
    micro_batch: int | None
    grad_accum: int | None
    global_batch: int
    suggestion: str | None  # the smallest change that fits, when nothing does as written


def setup_from_recipe(recipe, config: dict) -> Setup:
    method = recipe.method.kind
    trainable = count_params(config).total if method == "full" else lora_params(config, recipe)
    return Setup(method, recipe.train.per_device_train_batch_size, recipe.train.max_length,
                 recipe.train.gradient_checkpointing, trainable)


def _fits(counts, setup, gpus, strategy) -> bool:
    return estimate(counts, setup, strategy, gpus.count).total <= gpus.usable_bytes


def _first_fit(counts, setup, gpus, offload: bool = True) -> tuple[str | None, int | None]:
    """Cheapest strategy that fits (least sharding first) and the largest micro-batch up to the recipe's."""
    order = ("ddp", "zero2", "zero3") if gpus.count > 1 else ("ddp",)
    order += ("zero3_offload",) if offload else ()
    for strategy in order:
        for micro in range(setup.micro_batch, 0, -1):
            if _fits(counts, replace(setup, micro_batch=micro), gpus, strategy):
                return strategy, micro
    return None, None


def make_plan(recipe, config: dict, gpus: Gpus) -> Plan:
    counts = count_params(config)
    setup = setup_from_recipe(recipe, config)
    estimates = {s: estimate(counts, setup, s, gpus.count) for s in STRATEGIES}
    global_batch = recipe.train.global_batch_for(1)  # train.global_batch_size, or per device x accumulation
    strategy, micro = _first_fit(counts, setup, gpus)
    accum = max(1, math.ceil(global_batch / (micro * gpus.count))) if micro else None
    # Offloading to CPU RAM works but is slow: when it is the only way, also name the change that avoids it.
    suggestion = None if strategy not in (None, "zero3_offload") else _smallest_change(counts, setup, gpus)
    return Plan(gpus, setup, estimates, strategy, micro, accum, global_batch, suggestion)


def _smallest_change(counts, setup, gpus) -> str:
    """One change at a time, least disruptive first; then more GPUs of the same kind."""
    candidates = []
    if not setup.checkpointing:
        candidates.append(("train.gradient_checkpointing: true", replace(setup, checkpointing=True)))
    if setup.method == "lora":
        candidates.append(("method.kind: qlora", replace(setup, method="qlora")))
    length = setup.max_length // 2
    while length >= 512:
        candidates.append((f"train.max_length: {length}", replace(setup, max_length=length)))
        length //= 2
    for text, changed in candidates:
        strategy, micro = _first_fit(counts, changed, gpus, offload=False)
        if strategy:
            return f"{text} (then {strategy}, micro-batch {micro})"
    for factor in (2, 4, 8, 16):
        more = replace(gpus, count=gpus.count * factor)
        strategy, micro = _first_fit(counts, setup, more, offload=False)
        if strategy:
            return f"{more.count}x{gpus.name}-{gpus.memory_gb:g}GB (then {strategy}, micro-batch {micro})"
    return "larger GPUs: no single change up to 16x the GPUs fits without CPU offload"


def format_plan(plan: Plan, model: str) -> str:
    """The table and verdict the CLI prints."""
    g = plan.gpus
    lines = [f"{model}: {plan.setup.method}, {plan.setup.trainable / 1e6:,.1f}M trainable parameters, micro-batch "
             f"{plan.setup.micro_batch} x {plan.setup.max_length} tokens, gradient checkpointing "
             f"{'on' if plan.setup.checkpointing else 'off'}; {g.count}x{g.name} {g.memory_gb:g} GB "
             f"({g.usable_bytes / GB:.1f} GB usable each)",
             f"{'strategy':<14}{'weights':>9}{'grads':>9}{'optim':>9}{'activ':>9}{'logits':>9}{'total':>9}  fits"]
    for name, e in plan.estimates.items():
        fits = "yes" if e.total <= g.usable_bytes else "no"
        cpu = f"  (+{e.cpu_offload / GB:.0f} GB CPU RAM per GPU)" if e.cpu_offload else ""
        lines.append(f"{name:<14}" + "".join(f"{v / GB:>9.1f}" for v in (e.weights, e.grads, e.optimizer,
                                                                       e.activations, e.logits, e.total))
                     + f"  {fits}{cpu}")  # fmt: skip
    if plan.recommended:
        lines.append(f"recommended: --launch {plan.recommended}, train.per_device_train_batch_size="
                     f"{plan.micro_batch}, train.gradient_accumulation_steps={plan.grad_accum} "
                     f"(global batch {plan.micro_batch * plan.grad_accum * g.count}; recipe asks "
                     f"{plan.global_batch})")
        if plan.suggestion:
            lines.append(f"without CPU offload (faster): {plan.suggestion}")
    else:
        lines.append(f"does not fit: even micro-batch 1 with zero3_offload needs more than {g.memory_gb:g} GB. "
                     f"Smallest change that fits: {plan.suggestion}")
    return "\n".join(lines)
