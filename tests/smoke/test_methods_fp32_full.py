"""bf16 runs end to end: Qwen3.5's fp32 parameters stay fp32 in a saved full fine-tune and in merged output, and a
full fine-tune leaves its frozen groups (vision tower, projector) bit-identical while every trainable weight moves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from qwen35_tune.export.merge import merge_run
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.sft import run_sft
from tests.smoke.export_kit import load_tensors
from tests.smoke.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke
FP32_SUFFIXES = ("linear_attn.A_log", "linear_attn.norm.weight")
FAST = ["train.max_steps=2", "train.logging_steps=1", "train.per_device_train_batch_size=2", "train.max_length=64",
        "export.merge=false", "data.cards.0.eval_fraction=0", "model.dtype=bfloat16"]  # fmt: skip


def _fp32_keys(tensors: dict) -> list[str]:
    return [k for k in tensors if k.endswith(FP32_SUFFIXES)]


@pytest.fixture(scope="module")
def bf16_vision(tmp_path_factory):
    from qwen35_tune.models.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint("vision", tmp_path_factory.mktemp("bf16v") / "ckpt", dtype="bfloat16")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, bf16_vision):
    recipe = load_recipe(REPO / "recipes/tiny/vision_full.yaml",
                         FAST + [f"model.name_or_path={bf16_vision}", "train.gradient_checkpointing=false"])
    snap, run_dir = Snapshot(), tmp_path_factory.mktemp("full") / "run"
    run_sft(recipe, run_dir, callbacks=(snap,))
    return snap, run_dir


def test_full_fine_tune_freezes_vision_bit_identical_and_moves_every_trainable(full_run):
    snap, _ = full_run
    frozen = [n for n in snap.before if n not in snap.trainable]
    assert frozen and all(".visual." in n or n.startswith("model.visual.") for n in frozen)
    assert any("visual.merger" in n for n in frozen)  # the projector is frozen too
    assert all(snap.after[n].equal(snap.before[n]) for n in frozen)
    moved = [n for n in snap.trainable if not snap.after[n].equal(snap.before[n])]
    assert sorted(moved) == sorted(snap.trainable)  # every trainable tensor changed (incl. fp32 GDN params)
    assert all(snap.after[n].dtype == torch.float32 for n in snap.after if n.endswith(FP32_SUFFIXES))


def test_saved_full_fine_tune_and_its_export_keep_fp32_params(full_run, bf16_vision):
    _, run_dir = full_run
    saved, base = load_tensors(run_dir / "model"), load_tensors(bf16_vision)
    keys = _fp32_keys(saved)
    assert keys and all(saved[k].dtype == torch.float32 for k in keys)
    assert all(base[k].dtype == torch.float32 for k in _fp32_keys(base))  # the checkpoint stores them in fp32
    assert saved["model.language_model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    assert all(saved[k].equal(base[k]) for k in base if k.startswith("model.visual."))
    merged = load_tensors(merge_run(run_dir, verify=False))
    assert all(merged[k].dtype == torch.float32 for k in _fp32_keys(merged))
    assert any(not merged[k].equal(base[k]) for k in _fp32_keys(merged))  # trained values, not the base's


def test_merged_bf16_lora_run_keeps_fp32_params(tmp_path):
    from qwen35_tune.models.tiny import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint("dense", tmp_path / "ckpt", dtype="bfloat16")
    recipe = load_recipe(REPO / "recipes/tiny/sft_lora.yaml", FAST + [f"model.name_or_path={ckpt}"])
    run_sft(recipe, tmp_path / "run")
    merged, base = load_tensors(merge_run(tmp_path / "run", verify=False)), load_tensors(ckpt)
    keys = _fp32_keys(merged)
    assert keys and all(merged[k].dtype == torch.float32 and merged[k].equal(base[k]) for k in keys)
    changed = [k for k in merged if not merged[k].equal(base[k])]
    assert changed and all(merged[k].dtype == torch.bfloat16 for k in changed)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["method"] == "lora"
