"""Adaptation methods on tiny models: what trains changes, what is frozen stays bit-identical, merges reproduce the
adapter, MoE routed experts really get adapters, the preflight stops an experts-less MoE run, fp32 params stay fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.sft import run_sft
from tests.smoke.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke
FAST = ["train.max_steps=4", "train.logging_steps=1", "train.per_device_train_batch_size=4",
        "train.max_length=128", "export.merge=false", "data.cards.0.eval_fraction=0"]  # fmt: skip


def _train(tmp_path_factory, name: str, overrides: list[str]):
    recipe = load_recipe(REPO / "recipes/tiny/sft_lora.yaml", FAST + overrides)
    snap, run_dir = Snapshot(), tmp_path_factory.mktemp(name)
    run_sft(recipe, run_dir, callbacks=(snap,))
    return snap, run_dir


def _assert_changed_exactly_trainable(snap):
    assert snap.trainable
    for name, before in snap.before.items():
        changed = not before.equal(snap.after[name])
        assert changed == (name in snap.trainable), f"{name}: changed={changed}"


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def moe_run(tmp_path_factory):
    overrides = ["model.name_or_path=tiny://moe", "method.lora.target_modules=[all,router]"]
    return _train(tmp_path_factory, "moe", overrides)


def test_moe_all_trains_routed_experts_router_and_gdn(moe_run):
    snap, run_dir = moe_run
    _assert_changed_exactly_trainable(snap)
    losses = _losses(run_dir)
    assert losses[-1] < losses[0]
    expert_b = [n for n in snap.trainable if "mlp.experts" in n and "lora_B" in n]
    assert expert_b and all(snap.after[n].abs().sum() > 0 for n in expert_b)
    assert any("mlp.gate.modules_to_save" in n for n in snap.trainable)
    report = json.loads((run_dir / "preflight.json").read_text())
    for group in ("routed_experts", "router", "linear_attention", "shared_expert", "attention"):
        assert report["groups"][group]["trainable"] > 0, group
    assert (run_dir / "preflight.txt").read_text().count("routed_experts") == 1
    assert any("aux_loss" in json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines())


def test_moe_merge_changes_expert_weights_and_keeps_logits(moe_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, run_dir = moe_run
    base_path = json.loads((run_dir / "run.json").read_text())["base_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    original = {n: p.detach().clone() for n, p in base.named_parameters() if "mlp.experts" in n}
    adapted = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    ids = torch.randint(0, 4000, (1, 24))
    with torch.no_grad():
        expected = adapted(input_ids=ids).logits
        merged = adapted.merge_and_unload()
        got = merged(input_ids=ids).logits
    assert (expected - got).abs().max().item() <= 1e-4
    merged_params = dict(merged.named_parameters())
    assert original and all(not merged_params[n].equal(p) for n, p in original.items())


def test_preflight_stops_moe_run_that_skips_experts(tmp_path):
    recipe = load_recipe(REPO / "recipes/tiny/sft_lora.yaml",
                         FAST + ["model.name_or_path=tiny://moe", "method.lora.target_modules=[attention]"])
    with pytest.raises(UserError, match="routed_experts and linear_attention untouched"):
        run_sft(recipe, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "preflight.json").read_text())["untouched"] == ["routed_experts",
                                                                                          "linear_attention"]


def test_dora_rslora_on_dense_changes_only_adapters(tmp_path_factory):
    snap, run_dir = _train(tmp_path_factory, "dora", ["method.lora.use_dora=true", "method.lora.use_rslora=true",
                                                      "method.lora.target_modules=all", "train.max_steps=3"])
    _assert_changed_exactly_trainable(snap)
    assert any("lora_magnitude_vector" in n for n in snap.trainable)
    assert _losses(run_dir)[-1] < _losses(run_dir)[0]


def test_bf16_checkpoint_keeps_fp32_params_through_training(tmp_path_factory):
    from qwen35_tune.models.tiny import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint("dense", tmp_path_factory.mktemp("bf16") / "ckpt", dtype="bfloat16")
    snap, _ = _train(tmp_path_factory, "bf16", [f"model.name_or_path={ckpt}", "model.dtype=bfloat16",
                                                "train.max_steps=2"])
    fp32 = [n for n in snap.after if n.endswith(("linear_attn.A_log", "linear_attn.norm.weight"))]
    assert fp32 and all(snap.after[n].dtype == torch.float32 for n in fp32)
    assert snap.after[next(n for n in snap.after if "in_proj_qkv.base_layer" in n)].dtype == torch.bfloat16


def test_qlora_runs_on_cpu_and_trains_only_adapters(tmp_path_factory):
    pytest.importorskip("bitsandbytes")
    snap, _ = _train(tmp_path_factory, "qlora", ["method.kind=qlora", "train.max_steps=2"])
    _assert_changed_exactly_trainable(snap)
    assert all("lora_" in n for n in snap.trainable)
    assert any(type(p).__name__ == "Params4bit" for p in snap.model.parameters())
