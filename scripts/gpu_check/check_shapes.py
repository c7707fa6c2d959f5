"""Models and batches for the GPU check: the real Qwen3.5 shapes (the package's shipped configs), tiny under smoke.

The shipped configs carry the numbers the planner reads; the Hub's rope values (the only fields they lack that change
a shape) are added here. Under ``GPU_CHECK_SMOKE=1`` every width shrinks so each stage runs in seconds on a CPU.
"""

from __future__ import annotations

import json
from importlib import resources

import torch

# Qwen3.5's rope (config.json of both checkpoints): 64 of head_dim 256 rotate, split (t, h, w) = 11 + 11 + 10 pairs.
ROPE = {"rope_type": "default", "rope_theta": 10_000_000, "partial_rotary_factor": 0.25, "mrope_interleaved": True,
        "mrope_section": [11, 11, 10]}  # fmt: skip
TINY_TEXT = {"vocab_size": 2048, "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
             "num_key_value_heads": 1, "head_dim": 64, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
             "linear_key_head_dim": 32, "linear_value_head_dim": 32, "moe_intermediate_size": 32,
             "shared_expert_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
             "rope_parameters": {**ROPE, "mrope_section": [3, 3, 2]}}  # fmt: skip
TINY_VISION = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "num_position_embeddings": 16}
MOE_KEYS = ("moe_intermediate_size", "shared_expert_intermediate_size", "num_experts", "num_experts_per_tok")
SHIPPED = {"9b": "qwen3_5_9b.json", "35b-a3b": "qwen3_5_35b_a3b.json"}
FP32_SUFFIXES = ("linear_attn.A_log", "linear_attn.norm.weight")


def shipped(kind: str) -> dict:
    """The package's copy of the real checkpoint's config.json numbers."""
    return json.loads(resources.files("qwen35_tune.model_configs").joinpath(SHIPPED[kind]).read_text())


def layer_types(layers: int) -> list[str]:
    """Qwen3.5's 3:1 hybrid; a model of fewer than 4 layers still gets one full-attention layer (the last)."""
    if layers < 4:
        return ["linear_attention"] * (layers - 1) + ["full_attention"]
    return ["full_attention" if (i + 1) % 4 == 0 else "linear_attention" for i in range(layers)]


def text_config(kind: str, smoke: bool, layers: int | None = None) -> dict:
    """Text config dict (``model_type`` included) of the real ``kind`` ('9b' or '35b-a3b'), tiny under smoke."""
    dropped = ("layer_types", "full_attention_interval")
    text = {k: v for k, v in shipped(kind)["text_config"].items() if k not in dropped}
    text.update(rope_parameters=ROPE, max_position_embeddings=262144, rms_norm_eps=1e-6, hidden_act="silu",
                use_cache=False)
    if smoke:
        moe = "num_experts" in text
        text.update({k: v for k, v in TINY_TEXT.items() if moe or k not in MOE_KEYS})
    n = layers or (4 if smoke else text["num_hidden_layers"])
    text.update(num_hidden_layers=n, layer_types=layer_types(n))
    return text


def full_config(kind: str, smoke: bool, layers: int | None = None) -> dict:
    """The vision-language config (what the Hub checkpoint is), text part as ``text_config``."""
    real = shipped(kind)
    text = text_config(kind, smoke, layers)
    vision = {**real["vision_config"], "out_hidden_size": text["hidden_size"], **(TINY_VISION if smoke else {})}
    return {"model_type": real["model_type"], "architectures": real["architectures"], "text_config": text,
            "vision_config": vision, "tie_word_embeddings": False}


def build(config: dict, dtype, device: str):
    """A random-init model of ``config`` on ``device``, fp32 GDN parameters kept as a real bf16 load keeps them."""
    import transformers
    from transformers import AutoConfig

    fields = dict(config)
    model_type = fields.pop("model_type")
    archs = fields.pop("architectures", None)
    cfg = AutoConfig.for_model(model_type, **fields)
    if archs:
        cls = getattr(transformers, archs[0])
    else:
        cls = transformers.Qwen3_5MoeForCausalLM if "moe" in model_type else transformers.Qwen3_5ForCausalLM
    torch.manual_seed(0)
    with torch.device(device):
        model = cls._from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    for name, param in model.named_parameters():
        if name.endswith(FP32_SUFFIXES):
            param.data = param.data.float()
    model.config.use_cache = False
    model.config.get_text_config().use_cache = False
    return model


def packed_batch(lengths: list[int], vocab: int, seed: int = 0):
    """(samples, batch): random samples packed into one row by the project's own collator (what ``train`` feeds)."""
    from qwen35_tune.train.collator import build_collator

    g = torch.Generator().manual_seed(seed)
    samples = [torch.randint(10, vocab, (n,), generator=g) for n in lengths]
    row = {"input_ids": torch.cat(samples).tolist(), "labels": torch.cat(samples).tolist(), "seq_lengths": lengths}
    return samples, build_collator(0, packed=True)([row])


def to_device(batch: dict, device: str) -> dict:
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
