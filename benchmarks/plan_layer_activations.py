"""What one decoder layer keeps for backward, per token, measured on CPU against the planner's figure.

Builds single Qwen3.5 decoder layers at the real widths (9B gated attention + dense MLP; 35B-A3B attention + MoE
block with 16 of its 256 experts, which changes only the router's width), puts LoRA on every projection as the
recipes do (and on the fused experts through peft target_parameters), runs a bf16 forward with the input requiring
grad and sums the distinct storages autograd saves, parameters excluded. The per-token figure is the slope between
two token counts, so constants (the MoE's base + LoRA expert stacks) drop out. Gated DeltaNet layers are left out:
on CPU they run transformers' fp32 torch fallback, not the flash-linear-attention kernels the planner models.

    python benchmarks/plan_layer_activations.py
"""

from __future__ import annotations

import torch
import transformers
from peft import LoraConfig, get_peft_model

from qwen35_tune.plan import load_model_config
from qwen35_tune.plan_memory import Setup, _adapter_saved, _layer_saved
from qwen35_tune.plan_shapes import build_shapes
from qwen35_tune.plan_trainable import Trainable

PROJECTIONS = r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|shared_expert_gate)"


class _Layer(torch.nn.Module):
    """One decoder layer with its rotary embedding, as a model peft can wrap."""

    def __init__(self, config):
        super().__init__()
        modeling = transformers.models.qwen3_5_moe.modeling_qwen3_5_moe if getattr(config, "num_experts", 0) else \
            transformers.models.qwen3_5.modeling_qwen3_5  # fmt: skip
        decoder = [c for n, c in vars(modeling).items() if n.endswith("DecoderLayer")][0]
        rotary = [c for n, c in vars(modeling).items() if n.endswith("TextRotaryEmbedding")][0]
        self.layer, self.rotary = decoder(config, 0), rotary(config)

    def forward(self, x):
        pos = torch.arange(x.shape[1])[None]
        out = self.layer(x, position_embeddings=self.rotary(x, pos[None].expand(3, 1, -1)), attention_mask=None,
                         position_ids=pos)  # fmt: skip
        return out[0] if isinstance(out, tuple) else out


def saved_bytes(model, tokens: int, hidden: int) -> int:
    """Bytes of distinct non-parameter storages autograd keeps for one forward of ``tokens`` tokens."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    x = torch.randn(1, tokens, hidden, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values()) - x.numel() * x.element_size()  # the layer input is the checkpoint, counted apart


def measure(name: str, overrides: dict, experts: bool) -> None:
    text = dict(load_model_config(name)["text_config"], num_hidden_layers=1, layer_types=["full_attention"],
                **overrides)  # fmt: skip
    text["model_type"] = text["model_type"] if text["model_type"].endswith("_text") else text["model_type"] + "_text"
    config = transformers.AutoConfig.for_model(**text)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layer = _Layer(config).to(torch.bfloat16)
    lora = LoraConfig(r=32, target_modules=PROJECTIONS, target_parameters=["mlp.experts.gate_up_proj",
                      "mlp.experts.down_proj"] if experts else None)  # fmt: skip
    model = get_peft_model(layer, lora).to(torch.bfloat16)
    h = config.hidden_size
    low, high = 256, 512
    at_low, at_high = saved_bytes(model, low, h), saved_bytes(model, high, h)
    measured = (at_high - at_low) / (high - low)
    constant = at_low - measured * low
    shapes = build_shapes({"architectures": ["X"], **text})
    adapted = tuple((m.name, 0, 0) for m in shapes.layer_modules(0) if m.kind == "linear")  # all carry LoRA here
    planned, _ = _layer_saved(shapes, "full_attention", Setup("lora", 1, 1, True, lora_r=32))
    planned += _adapter_saved(shapes, Trainable(adapted=adapted), Setup("lora", 1, 1, True, lora_r=32), 0)
    print(f"{name} full-attention layer ({'MoE, LoRA on experts' if experts else 'dense MLP'}): measured "
          f"{measured / 1024:.1f} KiB/token, planned {planned / 1024:.1f} KiB/token ({planned / measured:.2f}x)")
    if experts:  # kept whatever the token count: the stacks base + B @ A that the expert matmuls read
        stacks = sum(m.numel for m in shapes.layer_modules(0) if m.kind == "experts") * 2
        print(f"  per-layer constant: measured {constant / 2**20:.0f} MiB, base + LoRA expert stacks "
              f"{stacks / 2**20:.0f} MiB (planned as part of the layer's working set, with their gradient)")


if __name__ == "__main__":
    torch.set_num_threads(2)
    measure("Qwen/Qwen3.5-9B", {}, experts=False)
    measure("Qwen/Qwen3.5-35B-A3B", {"num_experts": 16}, experts=True)
