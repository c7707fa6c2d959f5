"""train.global_batch_size: the recipe states rows per optimizer step and the accumulation is derived from the process
count at start, so the same recipe trains the same global batch on 1 or 8 GPUs (or stops, naming the numbers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.errors import RecipeError, UserError
from qwen35_tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes/tiny/sft_lora.yaml"
REAL = sorted(p for d in ("qwen3_5_9b", "qwen3_5_35b_a3b", "domains") for p in (REPO / "recipes" / d).glob("*.yaml"))


def _train(*overrides: str):
    return load_recipe(TINY, ["train.per_device_train_batch_size=4", *overrides]).train


def test_accumulation_is_derived_from_the_process_count():
    train = _train("train.global_batch_size=32")
    assert [train.accumulation_for(n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    assert {train.global_batch_for(n) for n in (1, 2, 4, 8)} == {32}


def test_without_a_global_batch_the_accumulation_is_per_process_and_the_batch_grows():
    train = _train("train.gradient_accumulation_steps=8")
    assert [train.accumulation_for(n) for n in (1, 8)] == [8, 8]
    assert [train.global_batch_for(n) for n in (1, 8)] == [32, 256]


def test_a_process_count_that_does_not_divide_names_the_numbers():
    train = _train("train.global_batch_size=32")
    with pytest.raises(UserError) as info:
        train.accumulation_for(3)
    message = str(info.value)
    assert "train.global_batch_size: 32" in message and "3 processes" in message and "(= 12 rows" in message
    assert "24 or 36" in message
    with pytest.raises(UserError, match="multiple of 64 \\(e.g. 64\\)"):
        train.accumulation_for(16)  # more rows per micro-step than the whole global batch


def test_global_batch_and_accumulation_together_is_a_recipe_error():
    with pytest.raises(RecipeError) as info:
        _train("train.global_batch_size=32", "train.gradient_accumulation_steps=8")
    assert "train.gradient_accumulation_steps" in str(info.value) and "global_batch_size: null" in str(info.value)


def test_global_batch_must_hold_whole_micro_batches():
    with pytest.raises(RecipeError, match="train.global_batch_size: 30 is not a multiple of per_device_train_batch"):
        _train("train.global_batch_size=30")


@pytest.mark.parametrize("path", REAL, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_real_recipes_state_their_global_batch(path):
    train = load_recipe(path).train
    assert train.global_batch_size, "real recipes state rows per optimizer step, not per process"
    assert train.global_batch_for(1) == train.global_batch_for(8) == train.global_batch_size


def test_trainer_config_gets_the_derived_accumulation(monkeypatch, tmp_path):
    from qwen35_tune.train import distributed
    from qwen35_tune.train.sft import build_sft_config

    recipe = load_recipe(TINY, ["train.per_device_train_batch_size=4", "train.global_batch_size=32"])
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    assert build_sft_config(recipe, tmp_path).gradient_accumulation_steps == 2
    monkeypatch.setattr(distributed, "world_size", lambda: 1)
    assert build_sft_config(recipe, tmp_path).gradient_accumulation_steps == 8


def test_the_resolved_recipe_of_a_global_batch_run_loads_again(tmp_path):
    """The run directory's recipe.yaml (read again by eval and the model card) must not state both settings."""
    recipe = load_recipe(REPO / "recipes/qwen3_5_9b/lora.yaml")
    written = tmp_path / "recipe.yaml"
    written.write_text(recipe.to_yaml())
    again = load_recipe(written)
    assert again == recipe and again.train.accumulation_for(8) == recipe.train.accumulation_for(8) == 1
