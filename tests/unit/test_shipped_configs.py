"""Every recipe and data card the project ships validates (one parametrized test, as new files are added)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.cards import load_card
from qwen35_tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
CARDS = sorted((REPO / "data_cards").glob("*.yaml"))


def test_something_is_shipped():
    assert (REPO / "recipes/tiny/sft_lora.yaml") in RECIPES
    assert (REPO / "recipes/qwen3_5_9b/lora.yaml") in RECIPES
    assert (REPO / "recipes/qwen3_5_35b_a3b/lora.yaml") in RECIPES
    assert CARDS


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO)))
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name
    if "tiny" in path.parts:
        assert recipe.model.name_or_path.startswith("tiny://"), "tiny recipes must train offline"
    else:
        assert recipe.model.name_or_path.startswith("Qwen/Qwen3.5-"), "real recipes point at the hub ids"


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.name)
def test_data_card_validates(path):
    card = load_card(path)
    assert card.name and card.license
