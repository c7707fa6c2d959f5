"""The tiny kit writes real-architecture checkpoints that reload through from_pretrained with the right classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qwen35_tune.cli import main
from qwen35_tune.models.load import load_model, load_tokenizer

pytestmark = pytest.mark.smoke

EXPECTED = {
    "dense": ("Qwen3_5ForCausalLM", "qwen3_5_text"),
    "moe": ("Qwen3_5MoeForCausalLM", "qwen3_5_moe_text"),
    "vision": ("Qwen3_5ForConditionalGeneration", "qwen3_5"),
    "moe-vision": ("Qwen3_5MoeForConditionalGeneration", "qwen3_5_moe"),
}


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_tiny_checkpoint_is_the_real_architecture(kind):
    from qwen35_tune.models.tiny import resolve_tiny

    path = resolve_tiny(f"tiny://{kind}")
    config = json.loads((path / "config.json").read_text())
    arch, model_type = EXPECTED[kind]
    assert config["architectures"] == [arch] and config["model_type"] == model_type
    model = load_model(str(path), dtype="float32")
    assert type(model).__name__ == arch
    text = model.config.get_text_config()
    assert "full_attention" in text.layer_types and "linear_attention" in text.layer_types
    assert text.head_dim >= 32 and text.linear_key_head_dim == 128 and text.linear_value_head_dim == 128
    names = {name for name, _ in model.named_parameters()}
    assert any(n.endswith("linear_attn.A_log") for n in names)
    if "vision" in kind:
        assert any(".visual." in n for n in names), "vision tower missing"
    if kind.startswith("moe"):
        assert any(n.endswith("mlp.experts.gate_up_proj") for n in names)
    tokenizer = load_tokenizer(str(path))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[-1] == text.vocab_size and torch.isfinite(logits).all()


def test_vision_checkpoint_ships_a_qwen35_processor():
    from transformers import AutoProcessor

    from qwen35_tune.models.tiny import resolve_tiny

    processor = AutoProcessor.from_pretrained(resolve_tiny("tiny://vision"))
    assert type(processor).__name__ == "Qwen3VLProcessor", "a bare tokenizer means torchvision is missing"
    assert processor.image_processor.patch_size == 16 and list(processor.image_processor.image_mean) == [0.5] * 3


def test_make_tiny_bf16_keeps_gdn_params_fp32(tmp_path):
    from safetensors import safe_open

    assert main(["make-tiny", "dense", str(tmp_path / "tiny"), "--dtype", "bfloat16"]) == 0
    with safe_open(tmp_path / "tiny" / "model.safetensors", "pt") as fh:
        dtypes = {key: fh.get_slice(key).get_dtype() for key in fh.keys()}
    fp32 = {k for k, d in dtypes.items() if d == "F32"}
    assert fp32 and all(k.endswith(("linear_attn.A_log", "linear_attn.norm.weight")) for k in fp32)
    for suffix in ("linear_attn.A_log", "linear_attn.norm.weight"):
        assert any(k.endswith(suffix) for k in fp32), suffix
    assert {d for k, d in dtypes.items() if k not in fp32} == {"BF16"}
    assert (tmp_path / "tiny" / "tokenizer.json").exists()


def test_unknown_tiny_kind_is_a_user_error(capsys):
    recipe = Path(__file__).resolve().parents[2] / "recipes/tiny/sft_lora.yaml"
    assert main(["validate", str(recipe), "model.name_or_path=tiny://huge"]) == 2
    assert "tiny://" in capsys.readouterr().err
