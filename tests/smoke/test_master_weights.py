"""A bf16 model trains over fp32 master weights: at lr 1e-5 the updates land instead of rounding away in bf16
(before: 2.28% of the weight elements changed in 10 steps, 75.5% with masters); saved weights stay bf16 as loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.sft import run_sft
from tests.smoke.export_kit import load_tensors
from tests.smoke.snapshot import Snapshot

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke
SMALL_LR = ["train.learning_rate=1e-5", "train.lr_scheduler_type=constant", "train.max_steps=2",
            "train.logging_steps=1", "train.per_device_train_batch_size=2", "train.max_length=64",
            "export.merge=false", "data.cards.0.eval_fraction=0", "model.dtype=bfloat16"]  # fmt: skip


@pytest.fixture(scope="module")
def bf16_dense(tmp_path_factory):
    from qwen35_tune.models.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint("dense", tmp_path_factory.mktemp("bf16d") / "ckpt", dtype="bfloat16")


def _changed_fraction(snap: Snapshot, names) -> float:
    total = sum(snap.before[n].numel() for n in names)
    return sum((snap.after[n] != snap.before[n]).sum().item() for n in names) / total


def test_full_fine_tune_of_a_bf16_model_keeps_small_updates(tmp_path, bf16_dense):
    recipe = load_recipe(REPO / "recipes/tiny/sft_lora.yaml",
                         [*SMALL_LR, f"model.name_or_path={bf16_dense}", "method.kind=full"])  # fmt: skip
    snap = Snapshot()
    run_sft(recipe, tmp_path / "run", callbacks=(snap,))
    weights = [n for n in snap.trainable if n.endswith(".weight") and snap.before[n].ndim == 2]
    assert weights and all(snap.after[n].dtype == torch.float32 for n in snap.trainable)  # masters while training
    fraction = _changed_fraction(snap, weights)
    print(f"weight elements changed after 2 steps at lr 1e-5: {fraction:.1%}")
    assert fraction > 0.5  # bf16 weights without masters: 2.28%
    saved = load_tensors(tmp_path / "run" / "model")
    assert saved["model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16  # stored as loaded


def test_modules_trained_in_full_next_to_lora_keep_small_updates(tmp_path, bf16_dense):
    """modules_to_save (here the embeddings) are copies in the base dtype, which peft does not upcast."""
    overrides = [*SMALL_LR, f"model.name_or_path={bf16_dense}", "method.lora.target_modules=[all, embeddings]"]
    recipe = load_recipe(REPO / "recipes/tiny/sft_lora.yaml", overrides)
    snap = Snapshot()
    run_sft(recipe, tmp_path / "run", callbacks=(snap,))
    embeddings = [n for n in snap.trainable if "modules_to_save" in n and "embed_tokens" in n]
    assert embeddings and all(snap.after[n].dtype == torch.float32 for n in embeddings)
    assert _changed_fraction(snap, embeddings) > 0.01  # rows of tokens in the batches moved (bf16: almost none)
    assert all(snap.after[n].dtype == torch.float32 for n in snap.trainable if "lora_" in n)  # peft's own
