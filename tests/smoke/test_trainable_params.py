"""LoRA training changes every adapter parameter and leaves every base weight bit-identical (watched live)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.sft import run_sft
from tests.smoke.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke


def test_lora_changes_every_adapter_param_and_no_base_weight(tmp_path):
    recipe = load_recipe(REPO / "recipes/tiny/sft_lora.yaml", ["train.max_steps=6", "export.merge=false"])
    snap = Snapshot()
    run_sft(recipe, tmp_path / "run", callbacks=(snap,))
    assert snap.trainable, "nothing was trainable"
    assert all("lora_" in name for name in snap.trainable), "a base weight was left trainable"
    # every linear-attention, attention and MLP projection got an adapter
    for target in ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj", "q_proj", "o_proj", "down_proj"):
        assert any(f".{target}.lora_A" in name for name in snap.trainable), target
    assert not any("visual" in name for name in snap.trainable)
    for name, before in snap.before.items():
        changed = not before.equal(snap.after[name])
        assert changed == (name in snap.trainable), f"{name}: changed={changed}, trainable={name in snap.trainable}"
