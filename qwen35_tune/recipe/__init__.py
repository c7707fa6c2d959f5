"""Recipes: one YAML file (plus `extends` and KEY=VALUE overrides) describing a whole fine-tuning run."""

from qwen35_tune.errors import RecipeError
from qwen35_tune.recipe.load import load_recipe
from qwen35_tune.recipe.schema import CardRef, Recipe

__all__ = ["CardRef", "Recipe", "RecipeError", "load_recipe"]
