"""QLoRA on the MoE with the fused routed experts in 4 bit: storage is 4-bit, the forward equals the forward with the
dequantized weights, peft's expert LoRA trains on top, and the peft behaviour our patch works around still exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("bitsandbytes")

from qwen35_tune.models.quantize import (
    EXPERT_PARAMS,
    expert_bytes,
    fused_expert_modules,
    is_quantized,
    parameter_targets_for,
    quantize_moe_experts,
)
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.sft import run_sft
from tests.smoke.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke


def _load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def _expert_lora(model, r: int = 4):
    from peft import LoraConfig, get_peft_model

    params = parameter_targets_for(model, ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"))
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=r"^$",
                                            target_parameters=list(params)))


def test_experts_stored_4bit_and_forward_equals_dequantized(tiny_moe):
    model = _load(tiny_moe).eval()
    before = expert_bytes(model)
    stats = quantize_moe_experts(model)
    modules = fused_expert_modules(model)
    assert stats["stacks"] == 2 * len(modules) > 0
    for _, module in modules:
        for name in EXPERT_PARAMS:
            assert is_quantized(module, name)
            assert module.parametrizations[name].original.dtype == torch.uint8
            assert getattr(module, name).ndim == 3  # the experts forward still sees a 3-D stack
    assert stats["bytes_before"] == before and stats["bytes_after"] * 8 == before  # fp32 -> 4 bit

    reference = _load(tiny_moe).eval()  # same architecture, experts set to the dequantized values
    with torch.no_grad():
        for (_, quantized), (_, plain) in zip(modules, fused_expert_modules(reference), strict=True):
            for name in EXPERT_PARAMS:
                dequantized = getattr(quantized, name)
                assert not dequantized.equal(getattr(plain, name))  # 4 bit is lossy: the comparison means something
                getattr(plain, name).copy_(dequantized)
        ids = torch.randint(0, 4000, (2, 20))
        got, expected = model(input_ids=ids).logits, reference(input_ids=ids).logits
    assert (got - expected).abs().max().item() <= 1e-5


def test_expert_lora_on_4bit_experts_gets_gradients_and_does_not_accumulate(tiny_moe):
    model = _load(tiny_moe)
    quantize_moe_experts(model)
    peft_model = _expert_lora(model).train()
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert len(names) == 4 * len(fused_expert_modules(model))  # A and B for both stacks of every layer
    with torch.no_grad():  # non-zero B so that a delta left behind would change the next forward
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ids = torch.randint(0, 4000, (2, 16))
    first = peft_model(input_ids=ids, labels=ids)
    first.loss.backward()
    second = peft_model(input_ids=ids, labels=ids)
    assert second.loss.item() == pytest.approx(first.loss.item(), abs=1e-6)  # no LoRA delta left registered
    for n, p in peft_model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    base = peft_model.base_model.model.model.layers[0].mlp.experts.get_base_layer()
    assert all(len(base.parametrizations[name]) == 1 for name in EXPERT_PARAMS)


def test_upstream_peft_still_leaves_the_factors_proxy_behind(tiny_moe):
    """Fails when peft removes its own proxy from a stacked parametrization: then our patch should go."""
    from qwen35_tune.patches import apply_peft_stacked_param_lora, remove_peft_stacked_param_lora

    model = _load(tiny_moe)
    quantize_moe_experts(model)
    peft_model = _expert_lora(model).train()
    remove_peft_stacked_param_lora()
    try:
        with pytest.warns(UserWarning, match="Could not find any LoRA parametrization"):
            peft_model(input_ids=torch.randint(0, 4000, (1, 8)))
        base = peft_model.base_model.model.model.layers[0].mlp.experts.get_base_layer()
        assert any(len(base.parametrizations[name]) > 1 for name in EXPERT_PARAMS)
    finally:
        apply_peft_stacked_param_lora()


def test_qlora_step_on_tiny_moe_trains_expert_adapters_over_4bit_experts(tmp_path):
    overrides = ["model.name_or_path=tiny://moe", "method.kind=qlora", "method.lora.target_modules=[all]",
                 "train.max_steps=1", "train.logging_steps=1", "train.per_device_train_batch_size=2",
                 "train.max_length=64", "export.merge=false", "data.cards.0.eval_fraction=0"]
    snap = Snapshot()
    run_sft(load_recipe(REPO / "recipes/tiny/sft_lora.yaml", overrides), tmp_path / "run", callbacks=(snap,))
    expert_b = [n for n in snap.before if "mlp.experts" in n and "lora_B" in n]
    assert len(expert_b) == 2 * len(fused_expert_modules(snap.model))
    assert all(not snap.before[n].equal(snap.after[n]) for n in expert_b)
    for _, module in fused_expert_modules(snap.model):
        assert all(module.parametrizations[name].original.dtype == torch.uint8 for name in EXPERT_PARAMS)
    report = json.loads((tmp_path / "run" / "preflight.json").read_text())
    assert report["groups"]["routed_experts"]["trainable"] > 0
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert any(t.endswith("mlp.experts.gate_up_proj") for t in config["target_parameters"])


def test_load_model_stores_experts_in_4bit_while_loading_same_as_after(tiny_moe):
    """Canary for experts_in_4bit_while_loading: transformers' loader sets each expert stack through setattr, where
    the stack is quantized as it arrives; the result is bit-identical to quantizing the loaded model afterwards."""
    from transformers import BitsAndBytesConfig

    from qwen35_tune.models.load import load_model

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.float32)
    model = load_model(str(tiny_moe), "float32", quantization_config=config)
    modules = fused_expert_modules(model)
    assert modules and all(is_quantized(m, name) for _, m in modules for name in EXPERT_PARAMS)
    reference = _load(tiny_moe)
    quantize_moe_experts(reference)
    for (_, got), (_, expected) in zip(modules, fused_expert_modules(reference), strict=True):
        for name in EXPERT_PARAMS:
            assert got.parametrizations[name].original.equal(expected.parametrizations[name].original)
            assert getattr(got, name).equal(getattr(expected, name))
    assert quantize_moe_experts(model)["stacks"] == 0  # nothing left for the after-load pass
    assert "model.layers.0.mlp.experts.gate_up_proj.absmax" in model.state_dict()  # saved like the after-load path
