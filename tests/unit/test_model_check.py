"""The model is checked from its config before the data build and before any weight download: an architecture the
registry does not know is refused by name, and a model this machine cannot hold (a 9B recipe on a CPU box, weights
larger than the GPU) is exit 2 with what to do; tiny models run anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from qwen35_tune.cli import main
from qwen35_tune.errors import UserError
from qwen35_tune.models.load import resolve_model_path
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train import model_check

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny" / "sft_lora.yaml"


def _train(argv, capsys) -> tuple[int, str]:
    code = main(["train", *argv])
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())
    assert "Traceback" not in text, text
    return code, text


@pytest.mark.parametrize("model_type", ["qwen3_next", "llama", "qwen3"])
def test_unsupported_architecture_is_refused_before_the_data_build(model_type, tmp_path, capsys):
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    run = tmp_path / "run"
    code, text = _train([str(TINY), f"model.name_or_path={folder}", "--output-dir", str(run)], capsys)
    assert code == 2, text
    assert f"is a {model_type} checkpoint" in text and "qwen3_5" in text and "model.name_or_path" in text
    assert not run.exists()  # no data built, no run directory, nothing loaded


def test_nine_b_recipe_on_a_cpu_box_is_refused_before_any_download(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(model_check.ALLOW_CPU_ENV, raising=False)
    for recipe in ("qwen3_5_9b/lora.yaml", "qwen3_5_35b_a3b/qlora.yaml"):
        code, text = _train([str(REPO / "recipes" / recipe), "--output-dir", str(tmp_path / "run")], capsys)
        assert code == 2 and "no CUDA GPU is visible" in text and "tiny://dense" in text, text
        assert "B parameters" in text and "qwen35-tune plan" in text
    assert not (tmp_path / "run").exists()


def test_cpu_memory_bound_applies_even_when_cpu_training_is_allowed(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(model_check.ALLOW_CPU_ENV, "1")
    monkeypatch.setattr(model_check, "_ram_bytes", lambda: 8e9)
    recipe = load_recipe(REPO / "recipes" / "qwen3_5_9b" / "lora.yaml")
    config = json.loads((REPO / "qwen35_tune" / "model_configs" / "qwen3_5_9b.json").read_text())
    with pytest.raises(UserError, match=r"needs at least 1\d\.\d GB for its weights alone .* 8\.0 GB of RAM"):
        model_check.check_fits(recipe, config, "Qwen/Qwen3.5-9B")
    model_check.check_model_before_data(load_recipe(TINY), resolve_model_path("tiny://dense"))  # tiny: fine on CPU


def _fake_gpu(monkeypatch, gib: float):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda _: SimpleNamespace(total_memory=int(gib * 2**30), name="FakeGPU"))  # fmt: skip


def test_gpu_weights_bound_and_sharding(monkeypatch):
    config = json.loads((REPO / "qwen35_tune" / "model_configs" / "qwen3_5_35b_a3b.json").read_text())
    recipe = load_recipe(REPO / "recipes" / "qwen3_5_35b_a3b" / "lora.yaml")
    for var in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    _fake_gpu(monkeypatch, 24)
    with pytest.raises(UserError, match=r"per GPU for its weights alone under ddp on 1 GPU.*FakeGPU"):
        model_check.check_fits(recipe, config, "Qwen/Qwen3.5-35B-A3B")
    # ZeRO-3 over 8 GPUs shards the weights: the bound no longer refuses (the estimate may still warn).
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(REPO / "launch" / "deepspeed" / "zero3.json"))
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert model_check.launch_sharding() == ("zero3", 8, False)
    model_check.check_fits(recipe, config, "Qwen/Qwen3.5-35B-A3B")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(REPO / "launch" / "deepspeed" / "zero3_offload.json"))
    assert model_check.launch_sharding() == ("zero3_offload", 8, True)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(REPO / "launch" / "deepspeed" / "zero2.json"))
    assert model_check.launch_sharding() == ("zero2", 1, False)


def test_nine_b_fits_an_80gb_gpu(monkeypatch):
    for var in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    _fake_gpu(monkeypatch, 80)
    config = json.loads((REPO / "qwen35_tune" / "model_configs" / "qwen3_5_9b.json").read_text())
    model_check.check_fits(load_recipe(REPO / "recipes" / "qwen3_5_9b" / "lora.yaml"), config, "Qwen/Qwen3.5-9B")
