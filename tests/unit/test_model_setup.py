"""The one model-setup step (``train.model_setup``): checks before anything loads, a typed "no processor" with its
reason, weights prepared the way training needs them (fp32 parameters, freezing, adapters), the processor and the
trained template saved in order, and stages that get their model from it alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from qwen35_tune.errors import UserError
from qwen35_tune.models.processor import TEXT_ONLY, NoProcessor, missing_processor
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.model_setup import setup_model

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny" / "sft_lora.yaml"
VISION = REPO / "recipes" / "tiny" / "vision_lora.yaml"
VISION_FULL = REPO / "recipes" / "tiny" / "vision_full.yaml"
FP32 = ("linear_attn.A_log", "linear_attn.norm.weight")


def test_text_only_checkpoint_has_a_typed_no_processor():
    setup = setup_model(load_recipe(TINY))
    assert setup.processor is TEXT_ONLY and "no vision tower" in setup.processor.reason
    assert missing_processor(setup.processor) is TEXT_ONLY and missing_processor(None) is TEXT_ONLY
    assert Path(setup.model_path).is_dir() and setup.tokenizer.chat_template and setup.attention is None


def test_a_vision_processor_that_cannot_load_keeps_its_reason_for_the_media_card(monkeypatch):
    """Text rows still train on that checkpoint; the card with images stops with the reason, naming the card."""
    from qwen35_tune.data.build import build_datasets
    from qwen35_tune.models import processor

    def no_torchvision(*args, **kwargs):
        raise UserError("no torchvision here")

    monkeypatch.setattr(processor, "load_processor", no_torchvision)
    recipe = load_recipe(VISION)
    setup = setup_model(recipe)
    assert setup.processor == NoProcessor("no torchvision here")
    with pytest.raises(UserError, match=r"data card '.*': \d+ rows have images or videos, but no torchvision here"):
        build_datasets(recipe, setup.tokenizer, None, processor=setup.processor)


def test_checks_run_before_anything_loads(monkeypatch):
    from qwen35_tune.models import load

    monkeypatch.setattr(load, "load_tokenizer", lambda *a, **k: pytest.fail("the tokenizer loaded"))
    recipe = load_recipe(TINY, ["model.attn_implementation=flash_attention_2"])
    with pytest.raises(UserError, match="model.attn_implementation: flash_attention_2 needs a CUDA GPU"):
        setup_model(recipe)


def test_lora_weights_come_prepared_with_their_adapter_config():
    """bf16 load: Qwen3.5's fp32 parameters restored, nothing frozen by hand (peft does it), the kernels recorded."""
    loaded = setup_model(load_recipe(TINY, ["model.dtype=bfloat16"])).load_weights(trainer_args=None)
    dtypes = {n: p.dtype for n, p in loaded.model.named_parameters()}
    assert {d for n, d in dtypes.items() if n.endswith(FP32)} == {torch.float32}
    assert dtypes["model.layers.0.mlp.up_proj.weight"] == torch.bfloat16
    assert loaded.peft_config is not None and loaded.peft_config.r == 16
    assert loaded.kernels.chunk == "torch" and not loaded.model.config.use_cache


def test_full_fine_tune_freezes_the_vision_tower_and_has_no_adapter():
    loaded = setup_model(load_recipe(VISION_FULL)).load_weights(trainer_args=None)
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    assert loaded.peft_config is None and trainable
    assert not any(n.startswith("model.visual.") for n in trainable)
    assert any(n.startswith("model.language_model.") for n in trainable)


def test_save_preprocessing_writes_the_processor_then_the_trained_template(tmp_path):
    template = REPO / "qwen35_tune" / "templates" / "qwen3_5_chat.jinja"
    setup = setup_model(load_recipe(VISION, [f"chat.template={template}"]))
    setup.save_preprocessing(tmp_path / "vision")
    assert (tmp_path / "vision" / "processor_config.json").is_file()
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(tmp_path / "vision")
    assert saved.chat_template == template.read_text(encoding="utf-8")
    setup_model(load_recipe(TINY)).save_preprocessing(tmp_path / "text")
    assert not (tmp_path / "text" / "processor_config.json").exists()
    assert (tmp_path / "text" / "tokenizer_config.json").is_file()


def test_the_sft_stage_gets_its_model_from_the_setup_step_only():
    """No loader of the model side is called from a stage module: they all go through train/model_setup.py."""
    loaders = {"load_model", "load_tokenizer", "load_processor", "processor_for_run", "prepare_model",
               "build_lora_config", "prepare_for_strategy", "check_model_before_data", "check_runtime_strategy",
               "check_attn_implementation", "quantization_config", "resolve_model_path"}  # fmt: skip
    def calls(name: str) -> set[str]:
        tree = ast.parse((REPO / "qwen35_tune" / "train" / name).read_text())
        return {n.func.id if isinstance(n.func, ast.Name) else n.func.attr for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute))}

    assert "setup_model" in calls("stage.py")  # the steps every stage shares (run_claimed) set the model up
    for stage in ("stage.py", "sft.py", "dpo.py", "grpo.py"):
        called = calls(stage)
        assert not called & loaders, (stage, called & loaders)
        assert stage == "stage.py" or "load_weights" in called, stage
