"""extends: multi-level deep merge, lists replaced, problems named in the file that set them, cycles, missing files."""

from pathlib import Path

import pytest

from qwen35_tune.recipe import RecipeError, load_recipe

FIXTURES = Path(__file__).parent / "fixtures"
RECIPES = FIXTURES / "recipes"


@pytest.fixture(autouse=True)
def _in_fixtures(monkeypatch):
    monkeypatch.chdir(FIXTURES)


def line_of(path: Path, text: str) -> int:
    """1-based line of the first line containing text (keeps tests true when a fixture gains a comment)."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def problems(path, overrides=()):
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


def test_multi_level_extends_deep_merges():
    recipe = load_recipe("recipes/grandchild.yaml")
    assert recipe.name == "grandchild"
    assert recipe.train.max_steps == 3  # grandchild
    assert recipe.train.learning_rate == pytest.approx(1e-4)  # child
    assert recipe.train.logging_steps == 5  # base
    assert recipe.method.lora.r == 4 and recipe.method.lora.lora_alpha == 32  # child over base, key by key
    assert recipe.source_files == (
        RECIPES / "grandchild.yaml",
        RECIPES / "domain" / "child.yaml",
        RECIPES / "base.yaml",
    )


def test_card_path_resolves_against_the_file_that_set_it():
    recipe = load_recipe("recipes/grandchild.yaml")  # the card is named in base.yaml, one folder up from child
    assert recipe.data.cards[0].path == str(FIXTURES / "cards" / "chat.yaml")


def test_lists_replace_rather_than_merge(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {RECIPES / 'valid.yaml'}\nmethod:\n  lora:\n    target_modules: [o_proj]\n")
    recipe = load_recipe(child)
    assert recipe.method.lora.target_modules == ["o_proj"]
    assert recipe.method.lora.r == 8


def test_extends_list_applies_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  max_steps: 1\n  logging_steps: 7\n")
    (tmp_path / "b.yaml").write_text("train:\n  max_steps: 2\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: [{RECIPES / 'base.yaml'}, a.yaml, b.yaml]\n")
    recipe = load_recipe(child)
    assert (recipe.train.max_steps, recipe.train.logging_steps) == (2, 7)


def test_bad_key_in_parent_names_parent_file_and_line():
    [problem] = problems("recipes/extends_bad_parent.yaml")
    assert problem.file == "recipes/bad_parent.yaml"
    assert problem.line == line_of(RECIPES / "bad_parent.yaml", "learning_rat:")
    assert problem.key == "train.learning_rat"
    assert "did you mean 'learning_rate'" in problem.message


def test_child_that_fixes_the_parents_bad_value_is_fine(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {RECIPES / 'wrong_type.yaml'}\ntrain:\n  max_steps: 4\n")
    assert load_recipe(child).train.max_steps == 4


def test_extends_cycle_names_the_chain():
    [problem] = problems("recipes/cycle_a.yaml")
    assert "recipes/cycle_a.yaml -> recipes/cycle_b.yaml -> recipes/cycle_a.yaml" in problem.message
    assert problem.file == "recipes/cycle_b.yaml" and problem.line == 1 and problem.key == "extends"


def test_missing_extends_target_is_reported_at_the_extends_line():
    [problem] = problems("recipes/extends_missing.yaml")
    assert problem.file == "recipes/extends_missing.yaml"
    assert problem.line == line_of(RECIPES / "extends_missing.yaml", "extends:")
    assert "recipes/no_such_parent.yaml" in problem.message


def test_broken_parent_does_not_also_report_missing_keys(tmp_path):
    (tmp_path / "parent.yaml").write_text("model: [oops\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\nname: c\ntrain:\n  max_step: 1\n")
    found = problems(child)
    assert sorted(p.key for p in found) == ["", "train.max_step"]  # and no "model: required key is missing"
    assert any("YAML syntax error" in p.message and p.file.endswith("parent.yaml") for p in found)
