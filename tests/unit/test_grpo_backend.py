"""``grpo.use_vllm``: generation with vLLM needs the vllm package and CUDA; each missing piece is an error at the key
(exit 2 through the CLI), checked before any data or weights load; transformers generate needs neither."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train import grpo

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "grpo_math.yaml"


@pytest.fixture(scope="module")
def vllm_recipe():
    return load_recipe(RECIPE, ["grpo.use_vllm=true"])


def test_missing_vllm_is_named_at_the_key(monkeypatch, vllm_recipe):
    monkeypatch.setattr(grpo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"^grpo.use_vllm: vLLM is not installed here"):
        grpo.check_generation_backend(vllm_recipe)


def test_vllm_without_cuda_is_named_at_the_key(monkeypatch, vllm_recipe):
    import torch

    monkeypatch.setattr(grpo.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^grpo.use_vllm: vLLM generates on CUDA GPUs"):
        grpo.check_generation_backend(vllm_recipe)


def test_transformers_generate_needs_neither(monkeypatch):
    monkeypatch.setattr(grpo.importlib.util, "find_spec", lambda name: None)
    grpo.check_generation_backend(load_recipe(RECIPE))  # use_vllm: false (the default)


def test_eval_batches_must_hold_whole_groups():
    """Evaluating on held-out prompts samples num_generations completions each: TRL's refusal, said in recipe keys."""
    recipe = load_recipe(RECIPE)  # num_generations: 4
    grpo.check_eval_round(recipe, "steps", 8, 1)
    grpo.check_eval_round(recipe, "no", 3, 1)  # no evaluation, no constraint
    with pytest.raises(UserError, match=r"^train.per_device_eval_batch_size: .* 6 per device x 1 processes"):
        grpo.check_eval_round(recipe, "steps", 6, 1)
    grpo.check_eval_round(load_recipe(RECIPE, ["grpo.num_generations_eval=2"]), "steps", 6, 1)
