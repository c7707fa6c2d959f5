"""A bad recipe's error names file:line, key path, what was found and what is expected; all problems at once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_tune.errors import Problem
from qwen35_tune.recipe import RecipeError, load_recipe

FIXTURES = Path(__file__).parent / "fixtures"
RECIPES = FIXTURES / "recipes"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _in_fixtures(monkeypatch):
    monkeypatch.chdir(FIXTURES)


def line_of(path: Path, text: str) -> int:
    """1-based line of the first line containing text."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def problems(path, overrides=()) -> list[Problem]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


def test_unknown_key_with_did_you_mean_and_exact_line():
    [problem] = problems("recipes/unknown_key.yaml")
    line = line_of(RECIPES / "unknown_key.yaml", "rank:")
    assert str(problem) == f"recipes/unknown_key.yaml:{line} method.lora.rank: unknown key (did you mean 'r'?)"


def test_wrong_type_says_what_was_found():
    [problem] = problems("recipes/wrong_type.yaml")
    assert (problem.line, problem.key) == (line_of(RECIPES / "wrong_type.yaml", "max_steps:"), "train.max_steps")
    assert problem.message == "expected an integer (got 'lots')"


def test_missing_data_card_file():
    [problem] = problems("recipes/missing_card.yaml")
    assert problem.file == "recipes/missing_card.yaml"
    assert problem.line == line_of(RECIPES / "missing_card.yaml", "does_not_exist")
    assert problem.key == "data.cards[1].path"
    assert "data card not found: cards/does_not_exist.yaml" in problem.message


def test_bad_key_inside_a_data_card_names_the_card_file():
    found = problems("recipes/bad_card.yaml")
    bad = next(p for p in found if p.key == "licence")
    assert bad.file == "cards/bad_key.yaml" and bad.line == line_of(FIXTURES / "cards" / "bad_key.yaml", "licence")
    assert "did you mean 'license'" in bad.message


def test_yaml_syntax_error_has_a_line():
    [problem] = problems("recipes/syntax_error.yaml")
    assert problem.file == "recipes/syntax_error.yaml" and problem.line in (4, 5)
    assert problem.message.startswith("YAML syntax error")


def test_several_errors_reported_at_once():
    found = problems("recipes/many_errors.yaml")
    path = RECIPES / "many_errors.yaml"
    got = {(p.file, p.line, p.key) for p in found}
    assert ("recipes/many_errors.yaml", line_of(path, "float8"), "model.dtype") in got
    assert ("recipes/many_errors.yaml", line_of(path, "rank:"), "method.lora.rank") in got
    assert ("recipes/many_errors.yaml", line_of(path, "weight: -1"), "data.cards[0].weight") in got
    assert ("recipes/many_errors.yaml", line_of(path, "nowhere"), "data.cards[1].path") in got
    assert ("recipes/many_errors.yaml", line_of(path, "max_steps"), "train.max_steps") in got
    assert ("recipes/many_errors.yaml", line_of(path, "epochs"), "train.epochs") in got
    assert ("cards/bad_key.yaml", line_of(FIXTURES / "cards" / "bad_key.yaml", "licence"), "licence") in got
    assert len(found) == 8  # the seven above plus the card's missing license
    message = str(RecipeError(found))
    assert message.startswith("8 problems in the recipe:")


def test_full_fine_tune_with_quantization_is_refused_at_the_quantization_key():
    [problem] = problems("recipes/qlora_full.yaml")
    assert (problem.line, problem.key) == (
        line_of(RECIPES / "qlora_full.yaml", "quantization:"),
        "method.quantization",
    )
    assert problem.message == "QLoRA quantization cannot be combined with a full fine-tune"


def test_qlora_needs_4bit():
    [problem] = problems("recipes/base.yaml", ["method.kind=qlora", "method.quantization.load_in_4bit=false"])
    assert problem.key == "method.quantization.load_in_4bit" and "load_in_4bit: true" in problem.message


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("model.name_or_path=tiny://mo", "model.name_or_path", "unknown tiny model"),
        ("export.push_to_hub=true", "export.hub_repo_id", "needs hub_repo_id"),
        ("train.eval_strategy=steps", "train.eval_strategy", "needs eval data"),
        ("chat.template=recipes/templates/nope.jinja", "chat.template", "template file not found"),
        ("chat.template=recipes/base.yaml", "chat.template", "must be a .jinja file"),
        ("train.extra={seed: 1}", "train.extra.seed", "set this as seed"),
        ("method.lora.lora_alpha=abc", "method.lora.lora_alpha", "expected an integer or a number (got 'abc')"),
        ("method.lora.target_modules=[1]", "method.lora.target_modules[0]", "expected a string (got 1)"),
        ("tracking.report_to=[none, wandb]", "tracking.report_to", "cannot be combined"),
        ("method.kind=adapter", "method.kind", "expected one of 'lora', 'qlora' or 'full'"),
    ],
)
def test_checks_report_at_the_right_key(override, key, words):
    [problem] = problems("recipes/base.yaml", [override])
    assert problem.key == key and words in problem.message


def test_missing_required_key_reports_its_parent_mapping(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "name: x\ndata:\n  cards: [{path: " + str(FIXTURES / "cards/chat.yaml") + "}]\nmodel:\n  dtype: auto\n"
    )
    [problem] = problems(path)
    assert (problem.line, problem.key, problem.message) == (4, "model.name_or_path", "required key is missing")


def test_duplicate_keys_are_reported(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: a\nname: b\n")
    [problem] = problems(path)
    assert (problem.line, problem.key) == (2, "name") and "duplicate key (also on line 1)" in problem.message


def test_missing_recipe_file():
    [problem] = problems("recipes/nope.yaml")
    assert problem.file == "recipes/nope.yaml" and "not found" in problem.message


def test_schema_modules_do_not_import_torch():
    code = (
        "import sys, qwen35_tune.recipe, qwen35_tune.cards, qwen35_tune.yaml_lines\n"
        "heavy = {'torch', 'transformers', 'peft', 'trl', 'datasets', 'accelerate'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
