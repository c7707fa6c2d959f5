"""Per-GPU training memory of one recipe under one launch strategy: the byte model behind ``qwen35-tune plan``.

No library estimates a hybrid Gated DeltaNet / MoE / vision model's training memory (accelerate's
``estimate-memory`` counts weights only), hence this model. The assumptions, per GPU (also in README.md):

- Weights as ``train`` stores them: ``model.dtype`` (bf16 = 2 B), GDN ``A_log`` / gated-norm weight fp32. QLoRA: every
  ``nn.Linear`` but ``lm_head`` in 4 bit (transformers' bitsandbytes loader), and the fused MoE experts too
  (``prepare_model`` → models/quantize.py): 0.5 B + the absmax constants of each 64-value block (1 B, or 4 B without
  double quantization; double quantization adds 4 B per 256 blocks). ``modules_to_save`` keep their original beside
  the trained copy.
- Trained parameters (bytes of weight, gradient, optimizer state): LoRA adapters are fp32 (peft upcasts them) with
  torch AdamW states in the same dtype: 4 + 4 + 8. DeepSpeed casts the model to bf16 and keeps fp32 master + Adam
  states: 2 + 2 + 12 (under ZeRO-3 TRL also creates the adapters in bf16). QLoRA adapters are cast to bf16 by TRL:
  2 + 2 + 4 (bf16 AdamW states; DoRA's magnitude stays fp32). Full fine-tunes: 2 + 2 + 12 (fp32 master and states,
  as DeepSpeed keeps them and as issue #14's fp32-master fix does without it); FSDP2 (accelerate upcasts what
  trains to fp32): 4 + 4 + 8. 8-bit optimizers keep 2 B of state. DDP on several GPUs adds its gradient buckets.
- Sharding: ZeRO-2 divides gradients and optimizer states by the GPU count; ZeRO-3 and FSDP2 also the weights, plus
  two gathered units (the largest decoder layer — the MoE block is a ZeRO-3 leaf, gathered whole — or the LM head)
  being used and prefetched; ZeRO-3 offload keeps weights and optimizer in CPU RAM. QLoRA cannot shard
  (train/strategy_checks.py), so those rows are not applicable.
- Activations (gradient checkpointing as the recipe sets it, each decoder layer a checkpoint): every layer's input
  (hidden × tokens) is kept, and one layer at a time is recomputed with everything its backward needs (listed per
  layer kind in ``_layer_saved``), plus its backward working set: the gradient of its widest tensor, the chunked
  Gated DeltaNet states flash-linear-attention rebuilds in backward (64-token chunks, heads × k × v fp32, twice),
  the MoE expert stacks the layer materialises (4-bit experts dequantized to bf16, plus base + LoRA delta and its
  gradient when the experts carry adapters) and DoRA's full-weight norm. Without checkpointing every layer keeps
  its saved set. The saved sets of gated attention, the dense MLP and the MoE block are within 5% of what autograd
  keeps on CPU at the real widths (benchmarks/plan_layer_activations.py); the Gated DeltaNet kernel's comes from
  what flash-linear-attention saves, not measured here (no GPU). Also: the sdpa attention mask (batch × length²,
  bool), router logits when the aux loss is on, and for vision rows one image per row at
  ``model.vision.max_pixels`` through the tower (kept per block only when the tower trains).
- LM head: TRL's SFTTrainer (1.16) always computes the loss with its chunked LM head (``add_fused_lm_head``): full
  logits are never materialised. It keeps the target positions' hidden states, per-token fp32 statistics and one
  (4096 tokens × 32768 vocab) tile, and in backward an fp32 hidden gradient (plus an fp32 weight gradient when the
  LM head trains). It is added to the activations although the two peaks do not coincide (conservative by ≤1 GB
  for LoRA recipes).
- 8% of each GPU is kept free for the CUDA context, NCCL buffers and fragmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qwen35_tune.plan_shapes import ModelShapes
from qwen35_tune.plan_trainable import Trainable
from qwen35_tune.registry import FP32_PARAM_SUFFIXES
from qwen35_tune.train.strategy_checks import unsupported_reason

GB = 1e9
FP32 = 4
GDN_CHUNK = 64  # flash-linear-attention's chunk length
LM_TOKEN_TILE, LM_VOCAB_TILE = 4096, 32768  # trl.kernels.chunked_logprob tile (TOKEN_CHUNK_SIZE x chunk_size)
DEEPSPEED = ("zero2", "zero3", "zero3_offload")


@dataclass(frozen=True)
class Setup:
    """The knobs of one planned run: what the recipe asks for, or a suggested change to it."""

    method: str  # lora | qlora | full
    micro_batch: int
    seq_len: int  # train.max_length, or train.packing_length when packing
    checkpointing: bool
    dtype_bytes: int = 2
    quant_bytes: float = 0.5 + 1 / 64 + 4 / (64 * 256)  # nf4 + double-quantised block constants
    optim_state_bytes: int = 8  # AdamW's two fp32 moments; 2 for 8-bit optimizers
    attn: str = "sdpa"
    lora_r: int = 16
    lora_dropout: bool = False
    dora: bool = False
    router_logits: bool = False
    image_patches: int = 0  # vision patches per row (one image per row at max_pixels)

    @property
    def tokens(self) -> int:
        return self.micro_batch * self.seq_len


@dataclass(frozen=True)
class Estimate:
    """Per-GPU bytes by component for one strategy (``unsupported``: why it cannot run this method, if it cannot)."""

    strategy: str
    weights: float
    grads: float
    optimizer: float
    activations: float
    lm_head: float
    cpu_offload: float = 0.0
    unsupported: str | None = None

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.lm_head


def _quantized(module) -> bool:
    """What QLoRA stores in 4 bit: transformers' bnb loader skips lm_head; prepare_model adds the fused experts."""
    return (module.kind == "linear" and module.name != "lm_head") or module.kind == "experts"


def weight_bytes(shapes: ModelShapes, setup: Setup) -> float:
    """The frozen base as stored (trained copies and adapters are counted with the trained bytes)."""
    total = 0.0
    for name, shape, module in shapes.named_parameters():
        if setup.method == "qlora" and _quantized(module):
            total += math.prod(shape) * setup.quant_bytes
        else:
            total += math.prod(shape) * (FP32 if name.endswith(FP32_PARAM_SUFFIXES) else setup.dtype_bytes)
    return total


def _per_param(setup: Setup, strategy: str, kind: str) -> tuple[float, float, float]:
    """(weight, gradient, optimizer) bytes of one trained parameter of ``kind`` (adapter | base | copy)."""
    states = setup.optim_state_bytes
    if strategy in DEEPSPEED:  # DeepSpeed casts to bf16 and keeps fp32 master + states
        return 2.0, 2.0, 4.0 + states
    if strategy == "fsdp2":  # accelerate's FSDP2 upcasts what trains to fp32
        return 4.0, 4.0, states
    if kind == "adapter" and setup.method == "lora":  # peft's fp32 adapters, torch AdamW states in their dtype
        return 4.0, 4.0, states
    if kind == "adapter":  # QLoRA: TRL casts the adapters to bf16 (AdamW states follow)
        return 2.0, 2.0, states / 2
    if kind == "base":  # full fine-tune: fp32 master weights (issue #14 item 6) and states
        master = FP32 if setup.dtype_bytes < FP32 else 0
        return setup.dtype_bytes, setup.dtype_bytes, master + states
    return setup.dtype_bytes, setup.dtype_bytes, states * setup.dtype_bytes / FP32  # modules_to_save copy


def _largest_unit(shapes: ModelShapes, setup: Setup) -> float:
    """Bytes of the biggest unit ZeRO-3 / FSDP2 gathers at once: a decoder layer, a vision block or the LM head."""
    units = [sum(m.numel for m in shapes.layer_modules(i)) for i in range(len(shapes.layer_types))]
    units += [m.numel for m in shapes.modules if m.kind == "embedding" or m.name == "lm_head"]
    return max(units) * setup.dtype_bytes


def estimate(shapes: ModelShapes, trainable: Trainable, setup: Setup, strategy: str, world: int) -> Estimate:
    """Per-GPU memory of ``strategy`` on ``world`` GPUs (the module docstring lists every assumption)."""
    base = weight_bytes(shapes, setup)
    params = grads = optim = 0.0
    for kind, table in (("adapter", trainable.adapter), ("base", trainable.base), ("copy", trainable.copies)):
        n = sum(table.values())
        w, g, o = _per_param(setup, strategy, kind)
        if kind == "base":  # trained in place: the stored base copy is replaced by the trained one
            base -= n * setup.dtype_bytes
        params, grads, optim = params + n * w, grads + n * g, optim + n * o
    weights, cpu = base + params, 0.0
    gathered = 2 * _largest_unit(shapes, setup)  # in use + prefetched
    if strategy == "ddp" and world > 1:
        grads *= 2  # DDP's reducer buckets hold a second copy of the gradients
    elif strategy == "zero2":
        grads, optim = grads / world, optim / world
    elif strategy in ("zero3", "fsdp2"):
        weights, grads, optim = weights / world + gathered, grads / world, optim / world
    elif strategy == "zero3_offload":  # gradients stream to the CPU optimizer a bucket at a time
        cpu = (weights + grads + optim) / world
        weights, grads, optim = gathered, min(grads / world, gathered), 0.0
    activations, lm_head = activation_bytes(shapes, trainable, setup)
    reason = unsupported_reason(setup.method, strategy)
    return Estimate(strategy, weights, grads, optim, activations, lm_head, cpu, reason)


def _layer_saved(shapes: ModelShapes, kind: str, setup: Setup) -> tuple[float, float]:
    """(bytes kept per token for one layer's backward, widest tensor's bytes per token) for a layer kind."""
    t, a = shapes.text, setup.dtype_bytes
    h = t["hidden_size"]
    saved = 2 * h * FP32 + 2 * h * a  # two RMSNorms: fp32 input copy + normalised output
    widths = [h]
    if kind == "full_attention":
        q, kv = t["num_attention_heads"] * t["head_dim"], t["num_key_value_heads"] * t["head_dim"]
        # q/k norms (fp32 inputs), normed + rotated q, k, v, attention output, sigmoid gate, gated product
        # (within 5% of what autograd keeps on CPU at the real widths: benchmarks/plan_layer_activations.py)
        saved += (q + kv) * FP32 + (5 * q + 2 * kv) * a
        widths.append(2 * q)
    else:
        hv, dk, dv = t["linear_num_value_heads"], t["linear_key_head_dim"], t["linear_value_head_dim"]
        key_dim, value_dim = t["linear_num_key_heads"] * dk, hv * dv
        conv_dim = 2 * key_dim + value_dim
        # qkv projection and conv output, the kernel's contiguous q/k, z, g/beta (fp32), intra-chunk matrix (fp32),
        # kernel output, gated norm (fp32 output and gate), out_proj input
        saved += 2 * conv_dim * a + 2 * key_dim * a + value_dim * a + 2 * hv * FP32 + hv * GDN_CHUNK * FP32
        saved += value_dim * a + 2 * value_dim * FP32 + value_dim * a
        widths.append(conv_dim)
    if shapes.is_moe:
        e, k, mi, si = t["num_experts"], t["num_experts_per_tok"], t["moe_intermediate_size"], \
            t["shared_expert_intermediate_size"]  # fmt: skip
        # shared expert (+ its gate), router logits + fp32 softmax, per routed slot: gathered input, gate and up
        # halves, activation, product, down and weighted outputs; combined output (benchmarks/plan_layer_activations)
        saved += 4 * si * a + h * a + e * (a + FP32) + k * (3 * h + 4 * mi) * a + h * a
        widths.append(k * 2 * mi)
    else:
        saved += 4 * t["intermediate_size"] * a
        widths.append(t["intermediate_size"])
    return saved, max(widths) * a


def _adapter_saved(shapes: ModelShapes, trainable: Trainable, setup: Setup, layer: int) -> float:
    """Bytes per token LoRA adds in one layer: the rank-r intermediate, dropout's input copy, DoRA's extra outputs."""
    prefix = f"{shapes.layer_prefix}{layer}."
    out = 0.0
    for name, d_in, d_out in trainable.adapted:
        if name.startswith(prefix):
            out += setup.lora_r * FP32 + (d_in * setup.dtype_bytes if setup.lora_dropout else 0)
            out += 2 * d_out * setup.dtype_bytes if setup.dora else 0
    return out


def _layer_working_set(shapes: ModelShapes, trainable: Trainable, setup: Setup, layer: int) -> float:
    """Bytes one layer's backward needs beyond its saved activations (independent of what other layers keep)."""
    t, kind, a = shapes.text, shapes.layer_types[layer], setup.dtype_bytes
    out = 0.0
    if kind == "linear_attention":  # fla rebuilds the per-chunk states h (and dh) for the whole sequence
        states = t["linear_num_value_heads"] * t["linear_key_head_dim"] * t["linear_value_head_dim"]
        out += 2 * (setup.tokens / GDN_CHUNK) * states * FP32
    prefix = f"{shapes.layer_prefix}{layer}."
    experts = [m for m in shapes.layer_modules(layer) if m.kind == "experts"]
    for module in experts:
        stacks = [math.prod(s) for _, s in module.params]
        if setup.method == "qlora":
            out += sum(stacks) * a  # dequantized for the forward (cached for the whole module call)
        adapted = [math.prod(s) for n, s in module.params if f"{module.name}.{n}" in trainable.adapted_experts]
        if adapted:  # base + B @ A materialised per stack, and its gradient in backward
            out += sum(adapted) * a + max(adapted) * a
    if setup.dora:
        sizes = [d_in * d_out for name, d_in, d_out in trainable.adapted if name.startswith(prefix)]
        out += max(sizes, default=0) * FP32  # DoRA's weight norm over base + delta
    return out


def _vision_bytes(shapes: ModelShapes, trainable: Trainable, setup: Setup) -> float:
    """Vision tower activations for one image per row; kept per block only when the tower trains."""
    v = shapes.vision
    if not v or not setup.image_patches:
        return 0.0
    a, patches = setup.dtype_bytes, setup.micro_batch * setup.image_patches
    vh, vi = v["hidden_size"], v["intermediate_size"]
    block = patches * (8 * vh + 2 * vi) * a  # norms, qkv, attention out, proj, fc1, activation, fc2
    pixels = patches * v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2 * FP32
    merged = patches // v["spatial_merge_size"] ** 2 * v["out_hidden_size"] * a
    if not trainable.by_group().get("vision"):
        return pixels + block + merged  # no gradient through the tower: one block alive at a time
    kept = v["depth"] * (patches * vh * a if setup.checkpointing else block)
    return pixels + kept + block + merged


def activation_bytes(shapes: ModelShapes, trainable: Trainable, setup: Setup) -> tuple[float, float]:
    """(activations, LM head working set) in bytes for one micro-batch."""
    t, a, tokens = shapes.text, setup.dtype_bytes, setup.tokens
    h, layers = t["hidden_size"], range(len(shapes.layer_types))
    per_layer = []
    for i in layers:
        saved, widest = _layer_saved(shapes, shapes.layer_types[i], setup)
        saved = (saved + _adapter_saved(shapes, trainable, setup, i)) * tokens
        per_layer.append((saved, 2 * widest * tokens + _layer_working_set(shapes, trainable, setup, i)))
    if setup.checkpointing:
        kept = len(per_layer) * h * a * tokens + max(s + w for s, w in per_layer)
    else:
        kept = sum(s for s, _ in per_layer) + max(w for _, w in per_layer)
    outside = tokens * h * a + tokens * h * (FP32 + a)  # embedding output, final norm
    full_layers = shapes.layer_types.count("full_attention")
    if full_layers and setup.attn in ("sdpa", "eager"):
        outside += setup.micro_batch * setup.seq_len**2  # dense bool mask (block-diagonal when packed)
    if full_layers and setup.attn == "eager":
        outside += full_layers * setup.micro_batch * t["num_attention_heads"] * setup.seq_len**2 * (a + FP32)
    if setup.router_logits and shapes.is_moe:
        outside += len(per_layer) * tokens * t["num_experts"] * (a + FP32)
    activations = kept + outside + _vision_bytes(shapes, trainable, setup)
    lm_head = tokens * h * (2 * a + FP32) + 8 * tokens * FP32 + min(tokens, LM_TOKEN_TILE) * LM_VOCAB_TILE * a
    if trainable.by_group().get("lm_head"):
        lm_head += t["vocab_size"] * h * (FP32 + a)  # fp32 weight-gradient accumulator, cast to the weight's dtype
    return activations, lm_head
