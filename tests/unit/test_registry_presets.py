"""Presets resolve to what their names promise, per architecture; impossible combinations are recipe errors."""

from __future__ import annotations

import re

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe
from qwen35_tune.registry import REGISTRY, resolve_preset_names
from qwen35_tune.train.freeze import frozen_groups, group_of

TEXT = "model.layers.{}."
VLM = "model.language_model.layers.{}."


def _matches(targets, name: str) -> bool:
    return targets.regex is not None and re.fullmatch(targets.regex, name) is not None


@pytest.mark.parametrize("prefix", [TEXT, VLM])
def test_all_on_moe_includes_routed_experts_gdn_and_shared_expert(prefix):
    targets = resolve_preset_names("all", REGISTRY["qwen3_5_moe"])
    assert set(targets.parameters) == {"mlp.experts.gate_up_proj", "mlp.experts.down_proj"}
    for leaf in ("linear_attn.in_proj_qkv", "linear_attn.in_proj_a", "linear_attn.out_proj", "self_attn.o_proj",
                 "mlp.shared_expert.down_proj", "mlp.shared_expert_gate"):
        assert _matches(targets, prefix.format(0) + leaf), leaf
    assert not _matches(targets, prefix.format(0) + "mlp.gate")  # router is opt-in
    assert not _matches(targets, "model.visual.blocks.0.attn.qkv")


def test_all_linear_is_an_alias_of_all_and_dense_has_no_expert_parameters():
    moe = REGISTRY["qwen3_5_moe_text"]
    assert resolve_preset_names("all-linear", moe) == resolve_preset_names("all", moe)
    dense = resolve_preset_names(["all"], REGISTRY["qwen3_5"])
    assert dense.parameters == ()
    assert _matches(dense, VLM.format(3) + "mlp.gate_proj")


def test_vision_projector_router_and_saved_modules():
    spec = REGISTRY["qwen3_5_moe"]
    vision = resolve_preset_names(["vision"], spec)
    assert _matches(vision, "model.visual.blocks.3.mlp.linear_fc1")
    assert not _matches(vision, "model.visual.merger.linear_fc1")
    projector = resolve_preset_names(["projector"], spec)
    assert _matches(projector, "model.visual.merger.linear_fc2")
    assert not _matches(projector, "model.visual.blocks.0.mlp.linear_fc2")
    saved = resolve_preset_names(["attention", "router", "embeddings", "lm_head"], spec)
    assert saved.save == ("mlp.gate", "embed_tokens", "lm_head")


def test_explicit_modules_mix_with_presets_and_wrong_presets_are_named():
    targets = resolve_preset_names(["attention", "in_proj_z"], REGISTRY["qwen3_5_text"])
    assert _matches(targets, TEXT.format(0) + "linear_attn.in_proj_z")
    assert not _matches(targets, TEXT.format(0) + "linear_attn.in_proj_a")
    with pytest.raises(UserError, match="routed_experts.*does not apply"):
        resolve_preset_names(["routed_experts"], REGISTRY["qwen3_5_text"])


def test_groups_and_freeze_policies():
    assert group_of("model.visual.merger.linear_fc1.weight") == "projector"
    assert group_of("model.visual.blocks.0.attn.qkv.weight") == "vision"
    assert group_of("model.layers.0.mlp.gate.weight") == "router"
    assert group_of("model.layers.0.mlp.shared_expert_gate.weight") == "shared_expert"
    assert group_of("model.layers.0.mlp.experts.gate_up_proj") == "routed_experts"
    assert group_of("model.layers.0.mlp.gate_proj.weight") == "mlp"
    assert frozen_groups(None) == {"vision", "projector"}
    assert {"attention", "routed_experts", "other"} <= frozen_groups(["language_model"])


@pytest.mark.parametrize(("overrides", "key"), [
    (["method.lora.target_modules=[routed_experts]", "method.lora.use_dora=true"], "method.lora.use_dora"),
    (["method.lora.target_parameters=[mlp.experts.down_proj]", "method.lora.lora_dropout=0.1"],
     "method.lora.lora_dropout"),
    (["method.freeze=[vision]"], "method.freeze"),
    (["train.router_aux_loss_coef=-1"], "train.router_aux_loss_coef"),
])
def test_impossible_combinations_are_recipe_errors(overrides, key):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes/tiny/sft_lora.yaml"
    with pytest.raises(UserError, match=re.escape(key)):
        load_recipe(recipe, overrides)
