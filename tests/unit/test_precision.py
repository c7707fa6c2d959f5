"""The recipe decides a run's precision: a launcher's ACCELERATE_MIXED_PRECISION (a launch config's
``mixed_precision: bf16``, or ``accelerate launch --mixed_precision bf16``) no longer turns an fp32 recipe into a bf16
autocast run, under DDP/FSDP (the Accelerator's precision) or DeepSpeed (the JSON's ``bf16.enabled: auto``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from qwen35_tune.launch import LAUNCH_DIR
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.launch_precision import ENV, enforce_recipe_precision

REPO = Path(__file__).resolve().parents[2]
TINY_FP32 = REPO / "recipes" / "tiny" / "sft_lora.yaml"  # model.dtype float32, train.bf16 unset: fp32 on CPU


@pytest.fixture
def launcher_says_bf16(monkeypatch):
    monkeypatch.setenv(ENV, "bf16")


def test_fp32_recipe_under_a_bf16_launcher(launcher_says_bf16, tmp_path, caplog):
    from qwen35_tune.train.sft import build_sft_config

    with caplog.at_level(logging.WARNING, logger="qwen35_tune.train.launch_precision"):
        config = build_sft_config(load_recipe(TINY_FP32), tmp_path)
    assert config.bf16 is False and config.mixed_precision == "no"
    assert "mixed_precision=bf16" in caplog.text and "the recipe decides" in caplog.text
    import os

    assert os.environ[ENV] == "no"


def test_bf16_recipe_stays_bf16_and_no_launcher_value_is_silent(monkeypatch, caplog):
    monkeypatch.setenv(ENV, "no")  # what every accelerate launch exports by default
    with caplog.at_level(logging.WARNING):
        assert enforce_recipe_precision(bf16=True) == "bf16"
    assert caplog.text == ""
    monkeypatch.setenv(ENV, "fp16")
    with caplog.at_level(logging.WARNING):
        assert enforce_recipe_precision(bf16=True) == "bf16"
    assert "mixed_precision=fp16" in caplog.text


def test_deepspeed_bf16_auto_follows_the_recipe(launcher_says_bf16, monkeypatch, tmp_path):
    pytest.importorskip("deepspeed")
    from qwen35_tune.train.sft import build_sft_config

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(LAUNCH_DIR / "deepspeed" / "zero2.json"))
    config = build_sft_config(load_recipe(TINY_FP32), tmp_path)
    ds = config.deepspeed_plugin.deepspeed_config
    assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False


@pytest.mark.parametrize("name", ["zero2.json", "zero3.json", "zero3_offload.json"])
def test_deepspeed_json_leaves_precision_to_the_recipe(name):
    config = json.loads((LAUNCH_DIR / "deepspeed" / name).read_text())
    assert config["bf16"]["enabled"] == "auto" and "fp16" not in config
