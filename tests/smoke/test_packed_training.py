"""train.packing: true trains the tiny recipe end to end through the CLI (packed rows, boundary-aware collator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.cli import main

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.smoke


def test_packed_tiny_run_trains_and_loss_falls(tmp_path):
    overrides = ["train.packing=true", "train.packing_length=512", "train.max_steps=6", "train.logging_steps=1",
                 "train.per_device_train_batch_size=1", "export.merge=false"]
    assert main(["train", str(REPO / "recipes/tiny/sft_lora.yaml"), *overrides, "--output-dir", str(tmp_path)]) == 0
    packing = json.loads((tmp_path / "data_stats.json").read_text())["packing"]
    assert packing["packed_rows"] < packing["samples"] and packing["target_length"] == 512
    assert packing["tokens"] <= packing["packed_rows"] * 512
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 6 and sum(losses[-2:]) < 0.95 * sum(losses[:2]), losses
