"""Bytes of the MoE routed-expert weights under QLoRA, before and after qwen35_tune.models.quantize (CPU).

  python benchmarks/qlora_moe_memory.py [--layers 2] [--experts 64]

1. tiny://moe loaded the way `method.kind: qlora` loads it (bitsandbytes 4-bit config): whole-model footprint with the
   experts as bitsandbytes leaves them, then after quantize_moe_experts.
2. A random-init MoE with the real Qwen3.5-35B-A3B layer dims (hidden 2048, moe_intermediate 512) in bf16 but fewer
   layers/experts, measured, then scaled per expert to the real 40 layers x 256 experts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from importlib import resources

import torch

from qwen35_tune.models.quantize import EXPERT_PARAMS, expert_bytes, fused_expert_modules, quantize_moe_experts


def _quant_state_bytes(model) -> int:
    """Bytes of the quantization constants (absmax, nested absmax, code) bitsandbytes keeps per stack."""
    total = 0
    for _, module in fused_expert_modules(model):
        for name in EXPERT_PARAMS:
            for p in module.parametrizations[name]:
                state = getattr(p, "quant_state", None)
                if state is not None:
                    total += sum(t.numel() * t.element_size() for t in state.as_dict(packed=True).values()
                                 if torch.is_tensor(t))
    return total


def _mib(n: float) -> str:
    return f"{n / 2**20:10.2f} MiB"


def tiny() -> None:
    from transformers import BitsAndBytesConfig

    from qwen35_tune.models.load import load_model, resolve_model_path

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    model = load_model(resolve_model_path("tiny://moe"), "bfloat16", quantization_config=config)
    footprint, experts = model.get_memory_footprint(), expert_bytes(model)
    quantize_moe_experts(model)
    print("tiny://moe (bf16, bitsandbytes 4-bit load)")
    print(f"  expert weights   before {_mib(experts)}  after {_mib(expert_bytes(model))} "
          f"(+ {_mib(_quant_state_bytes(model))} quant constants)")
    print(f"  whole model      before {_mib(footprint)}  after {_mib(model.get_memory_footprint())}")


def real_dims(layers: int, experts: int) -> None:
    from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    shipped = json.loads(resources.files("qwen35_tune.model_configs").joinpath("qwen3_5_35b_a3b.json").read_text())
    text = {k: v for k, v in shipped["text_config"].items() if k not in ("layer_types", "model_type")}
    real_layers, real_experts = text["num_hidden_layers"], text["num_experts"]
    text.update(num_hidden_layers=layers, num_experts=experts, vocab_size=1024, full_attention_interval=layers)
    with torch.device("cpu"):
        model = Qwen3_5MoeForCausalLM(Qwen3_5MoeTextConfig(**text)).to(torch.bfloat16)
    before = expert_bytes(model)
    started = time.perf_counter()
    stats = quantize_moe_experts(model, "nf4", double_quant=True)
    seconds = time.perf_counter() - started
    after, consts = stats["bytes_after"], _quant_state_bytes(model)
    scale = (real_layers * real_experts) / (layers * experts)
    print(f"random-init 35B-A3B dims (hidden {text['hidden_size']}, moe_intermediate {text['moe_intermediate_size']}),"
          f" {layers} layers x {experts} experts, bf16")
    print(f"  expert weights   before {_mib(before)}  after {_mib(after)} (+ {_mib(consts)} quant constants)  "
          f"ratio {before / (after + consts):.2f}x  quantize {seconds:.1f} s")
    print(f"  scaled to {real_layers} layers x {real_experts} experts: before {before * scale / 2**30:.2f} GiB, "
          f"after {(after + consts) * scale / 2**30:.2f} GiB")
    x = torch.randn(64, text["hidden_size"], dtype=torch.bfloat16)
    block = model.model.layers[0].mlp
    with torch.no_grad():
        started = time.perf_counter()
        block(x[None])
        print(f"  one MoE block forward over 64 tokens with 4-bit experts: {time.perf_counter() - started:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--experts", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("QWEN35_TUNE_CACHE", "/tmp/q35cache-bench")
    tiny()
    real_dims(args.layers, args.experts)


if __name__ == "__main__":
    main()
