"""Dotted KEY=VALUE overrides: typed through the schema; bad ones are problems at <override> quoting the text."""

from pathlib import Path

import pytest

from qwen35_tune.recipe import RecipeError, load_recipe

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _in_fixtures(monkeypatch):
    monkeypatch.chdir(FIXTURES)


def problems(overrides):
    with pytest.raises(RecipeError) as info:
        load_recipe("recipes/base.yaml", overrides)
    return info.value.problems


def test_overrides_set_nested_keys_list_items_and_mappings():
    recipe = load_recipe(
        "recipes/base.yaml",
        ["train.learning_rate=1e-4", "data.cards.0.weight=2", "model.name_or_path=tiny://moe",
         'train.extra={"neftune_noise_alpha": 5}', "method.lora.target_modules=[q_proj]",
         "tracking.report_to=[wandb]"],
    )  # fmt: skip
    assert recipe.train.learning_rate == pytest.approx(1e-4)
    assert recipe.data.cards[0].weight == 2.0
    assert recipe.model.tiny_kind == "moe"
    assert recipe.train.extra == {"neftune_noise_alpha": 5}
    assert recipe.method.lora.target_modules == ["q_proj"]
    assert recipe.tracking.report_to == ["wandb"]


def test_override_card_path_is_relative_to_the_working_directory():
    recipe = load_recipe("recipes/base.yaml", ["data.cards.0.path=cards/hub.yaml"])
    assert recipe.card_pairs()[0][1].name == "hub-chat"


def test_override_without_equals():
    [problem] = problems(["train.learning_rate"])
    assert problem.file == "<override>" and "'train.learning_rate' is not KEY=VALUE" in problem.message


def test_override_unknown_key_suggests_the_right_one():
    [problem] = problems(["train.lr=1e-4"])
    assert (problem.file, problem.line, problem.key) == ("<override>", None, "train.lr")
    assert "unknown key (did you mean 'learning_rate'?)" in problem.message
    assert "train.lr=1e-4" in problem.message


def test_override_unknown_section():
    [problem] = problems(["trian.max_steps=1"])
    assert problem.key == "trian" and "did you mean 'train'" in problem.message


def test_override_wrong_type():
    [problem] = problems(["train.max_steps=abc"])
    assert problem.key == "train.max_steps" and problem.file == "<override>"
    assert "expected an integer (got 'abc')" in problem.message


def test_override_list_index_out_of_range():
    [problem] = problems(["data.cards.3.weight=2"])
    assert problem.key == "data.cards[3].weight" and "has no item 3" in problem.message


def test_all_bad_overrides_reported_together():
    found = problems(["oops", "train.lr=1", "train.max_steps=abc", "method.lora.r=0"])
    assert {p.key for p in found} == {"", "train.lr", "train.max_steps", "method.lora.r"}
    assert all(p.file == "<override>" for p in found)
