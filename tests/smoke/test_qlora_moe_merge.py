"""QLoRA on the MoE, merged: the routed experts were trained as 4-bit fused stacks, so the default merge rebuilds each
stack from the per-expert checkpoint tensors, round-trips it through 4 bit exactly as training did, merges the expert
adapters into that, and the merged model reproduces the trained 4-bit+adapter model (verify runs inside train)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("bitsandbytes")

from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.sft import run_sft
from tests.smoke.export_kit import load_tensors

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def moe_qlora_run(tmp_path_factory):
    overrides = ["model.name_or_path=tiny://moe", "method.kind=qlora", "method.lora.target_modules=[all]",
                 "method.quantization.bnb_4bit_compute_dtype=float32", "train.max_steps=2",
                 "train.logging_steps=1", "train.per_device_train_batch_size=2", "train.max_length=64",
                 "data.cards.0.eval_fraction=0"]
    run = tmp_path_factory.mktemp("moe-qlora") / "run"
    run_sft(load_recipe(REPO / "recipes/tiny/sft_lora.yaml", overrides), run)
    return run


def test_merged_moe_qlora_reproduces_the_trained_4bit_model(moe_qlora_run):
    report = json.loads((moe_qlora_run / "merged_verify.json").read_text())
    assert report["problems"] == [] and report["max_abs_logit_diff"] <= 1e-4
    manifest = json.loads((moe_qlora_run / "merged" / "export_manifest.json").read_text())
    assert manifest["qlora_merge_base"] == "dequantized"
    touched = set(manifest["touched"])
    assert "model.layers.0.mlp.experts.3.gate_proj.weight" in touched
    assert "model.layers.0.mlp.experts.3.down_proj.weight" in touched
    # every dequantised (and adapted) tensor was checked against bitsandbytes' own dequantisation + peft's delta
    assert report["expected_changed"] == len(touched) == report["changed"]


def test_expert_round_trip_equals_the_4bit_stacks_training_held(moe_qlora_run):
    from qwen35_tune.export.qlora import Dequantizer, quantized_reference
    from qwen35_tune.models.quantize import fused_expert_modules
    from qwen35_tune.rundir import RunDir

    run = RunDir(moe_qlora_run)
    base = Path(run.run.base_path)
    dequantizer, tensors = Dequantizer(base, run.view.quantization, run.view.dtype), load_tensors(base)
    model = quantized_reference(run, base)
    modules = fused_expert_modules(model)
    assert len(modules) == len(dequantizer.experts.groups) // 2 > 0
    for name, module in modules:
        head = name.removeprefix("base_model.model.").replace(".base_layer", "")
        gate_up, down = module.parametrizations["gate_up_proj"], module.parametrizations["down_proj"]
        gate_up, down = gate_up[0](gate_up.original), down[0](down.original)  # bitsandbytes' dequantized stacks
        for expert in range(gate_up.shape[0]):
            gate = dequantizer(f"{head}.{expert}.gate_proj.weight", tensors[f"{head}.{expert}.gate_proj.weight"])
            up = dequantizer(f"{head}.{expert}.up_proj.weight", tensors[f"{head}.{expert}.up_proj.weight"])
            assert torch.cat([gate, up]).equal(gate_up[expert]), (head, expert)
            got = dequantizer(f"{head}.{expert}.down_proj.weight", tensors[f"{head}.{expert}.down_proj.weight"])
            assert got.equal(down[expert]), (head, expert)
            assert not got.equal(tensors[f"{head}.{expert}.down_proj.weight"])  # 4 bit is lossy: not a no-op
    assert dequantizer.experts._ready == {}  # every stack handed out completely, nothing held back
