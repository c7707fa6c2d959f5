"""Freezing and per-part learning rates on the tiny vision model, through transformers' Trainer on image rows:
by default the vision tower and projector leave training bit-identical; ``train.learning_rates.vision`` trains the
tower in its own optimizer group at that rate (and the still-frozen projector stays identical)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
TINY_FULL = REPO / "recipes/tiny/vision_full.yaml"
IMAGES = sorted((REPO / "data_cards/data/shapes_qa").glob("train_000*.png"))[:4]

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def image_rows(tiny_vision):
    """Four one-image rows built with the checkpoint's own processor (labels: the answer only)."""
    from PIL import Image

    from qwen35_tune.models.processor import VisionSettings, load_processor

    processor = load_processor(str(tiny_vision), VisionSettings(min_pixels=4096, max_pixels=4096))
    rows = []
    for i, path in enumerate(IMAGES):
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}]
        text = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        answer = ["red", "blue", "green", "yellow"][i] + "<|im_end|>"
        enc = processor(text=[text + answer], images=[Image.open(path).convert("RGB")], return_tensors="pt",
                        return_mm_token_type_ids=True)
        labels = enc["input_ids"].clone()
        n_answer = len(processor.tokenizer(answer)["input_ids"])
        labels[:, : labels.shape[1] - n_answer] = -100
        rows.append({**enc, "labels": labels})
    return rows


def _train(tiny_vision, rows, overrides, tmp_path):
    """Three steps on the rows with the recipe's freezing and learning rates; returns (before, after, trainer)."""
    from transformers import Trainer, TrainingArguments

    from qwen35_tune.models.load import load_model
    from qwen35_tune.train.model_setup import prepare_model
    from qwen35_tune.train.param_groups import PartLearningRates

    class PartRateTrainer(PartLearningRates, Trainer):
        """transformers' Trainer with the per-part rates qwen35-tune's trainer subclass mixes in."""

    recipe = load_recipe(TINY_FULL, overrides)
    model = load_model(str(tiny_vision), "float32")
    prepare_model(recipe, model, str(tiny_vision))  # the freezing policy, as run_sft applies it
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=1, learning_rate=1e-3,
                             lr_scheduler_type="constant", report_to="none", save_strategy="no", use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True, logging_steps=100)
    trainer = PartRateTrainer(model=model, args=args, train_dataset=rows, data_collator=lambda batch: batch[0])
    trainer.use_part_learning_rates(recipe.train.learning_rates.given())
    trainer.train()
    after = dict(model.named_parameters())
    return before, after, trainer


def _changed(before, after, prefix: str) -> list[bool]:
    import torch

    return [not torch.equal(before[n], after[n].detach()) for n in before if n.startswith(prefix)]


def test_vision_tower_and_projector_bit_identical_by_default(tiny_vision, image_rows, tmp_path):
    before, after, _ = _train(tiny_vision, image_rows, ["method.freeze=null"], tmp_path)
    assert not any(_changed(before, after, "model.visual."))
    assert any(_changed(before, after, "model.language_model."))


def test_vision_learning_rate_trains_the_tower_in_its_own_group(tiny_vision, image_rows, tmp_path):
    overrides = ["method.freeze=null", "train.learning_rates.vision=5e-3"]
    before, after, trainer = _train(tiny_vision, image_rows, overrides, tmp_path)
    blocks = _changed(before, after, "model.visual.blocks.")
    assert blocks and all(blocks), "every vision block parameter should train"
    assert not any(_changed(before, after, "model.visual.merger.")), "the projector stays frozen"
    qkv = after["model.visual.blocks.0.attn.qkv.weight"]
    lm = after["model.language_model.layers.0.mlp.up_proj.weight"]
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert lr_of[id(qkv)] == pytest.approx(5e-3)
    assert lr_of[id(lm)] == pytest.approx(1e-3)
