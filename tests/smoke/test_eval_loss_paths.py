"""The default eval loss goes through every batching path (packed text rows, image rows padded and packed, through the
vision collator), and a run that holds no rows out never evaluates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qwen35_tune.cli import main

REPO = Path(__file__).resolve().parents[2]
TEXT = REPO / "recipes" / "tiny" / "sft_lora.yaml"  # eval_fraction: 0.1 of its card
VISION = REPO / "recipes" / "tiny" / "vision_lora.yaml"  # data.eval_cards: shape-QA images
SHORT = ["train.max_steps=2", "train.logging_steps=1", "export.merge=false"]
pytestmark = pytest.mark.smoke


def _train(recipe: Path, run: Path, *overrides: str) -> tuple[list[dict], dict]:
    assert main(["train", str(recipe), *SHORT, *overrides, "--output-dir", str(run)]) == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return metrics, json.loads((run / "summary.json").read_text())


@pytest.mark.parametrize(("recipe", "overrides"), [
    (TEXT, ["train.packing=true", "train.packing_length=512", "train.per_device_train_batch_size=1"]),
    (VISION, []),
    (VISION, ["train.packing=true", "train.packing_length=256", "train.per_device_train_batch_size=2"]),
], ids=["text-packed", "vision", "vision-packed"])
def test_held_out_rows_are_evaluated_on_every_batching_path(tmp_path, recipe, overrides):
    metrics, summary = _train(recipe, tmp_path, *overrides)
    evals = [m for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in evals] == [1, 2], metrics
    assert all(math.isfinite(m["eval_loss"]) and m["eval_loss"] > 0 for m in evals)
    assert summary["eval_loss"] == evals[-1]["eval_loss"]
    if "train.packing=true" in overrides:
        assert json.loads((tmp_path / "data_stats.json").read_text())["packing"]["packed_rows"] > 0


def test_a_run_without_held_out_rows_does_not_evaluate(tmp_path):
    metrics, summary = _train(TEXT, tmp_path, "data.cards.0.eval_fraction=0")
    assert not [key for m in metrics for key in m if key.startswith("eval_")], metrics
    assert summary["eval_loss"] is None and summary["steps"] == 2
