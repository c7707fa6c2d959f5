"""The GRPO stage in recipes: ``stage: grpo``, the ``grpo:`` section (GRPOConfig names checked against the installed
TRL without torch), ``rewards:`` and the checks that tie them to the data and the train section; every bad setting is
an error at its key and line, never a traceback."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_tune.errors import Problem
from qwen35_tune.recipe import RecipeError, load_recipe
from qwen35_tune.recipe.grpo_section import EXTRA_CHOICES, REFUSED, GrpoSection, LossType, grpo_own_arguments

REPO = Path(__file__).resolve().parents[2]
CARDS = REPO / "data_cards"
BASE = f"""name: grpo-test
stage: grpo
model: {{name_or_path: "tiny://dense"}}
data:
  cards: [{{path: "{CARDS}/cot_arithmetic_verifiable.yaml"}}]
rewards: [correct]
"""
NO_REWARDS = BASE.replace("rewards: [correct]\n", "")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def problems(path: Path, overrides=()) -> list[Problem]:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_grpo_recipe_loads_and_keeps_trl_names(tmp_path):
    path = write(tmp_path, BASE + "grpo: {num_generations: 4, epsilon_high: 0.28, top_entropy_quantile: 0.2}\n")
    recipe = load_recipe(path)
    assert recipe.stage == "grpo" and recipe.rewards[0].name == "correct"
    kwargs = recipe.grpo.config_kwargs()
    assert kwargs["num_generations"] == 4 and kwargs["epsilon_high"] == 0.28
    assert kwargs["top_entropy_quantile"] == 0.2  # a GRPOConfig argument without a typed field passes through
    assert load_recipe(path) == recipe


def test_stage_defaults_to_sft_and_sft_recipes_are_unchanged():
    recipe = load_recipe(REPO / "recipes/tiny/sft_lora.yaml")
    assert recipe.stage == "sft" and recipe.rewards == [] and recipe.grpo is None


def test_resolved_recipe_reloads(tmp_path):
    """recipe.yaml as a run writes it (every default spelled out) must load again: merge and resume read it."""
    rewards = "rewards: [correct, {name: format, weight: 0.2}, {name: length, max_tokens: 64}]\n"
    path = write(tmp_path, NO_REWARDS + rewards)
    recipe = load_recipe(path)
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(recipe.to_yaml())
    assert load_recipe(resolved) == recipe
    sft = load_recipe(REPO / "recipes/tiny/sft_lora.yaml")
    (tmp_path / "sft.yaml").write_text(sft.to_yaml())
    assert load_recipe(tmp_path / "sft.yaml") == sft


def test_unknown_grpo_key_gets_a_did_you_mean_at_its_line(tmp_path):
    path = write(tmp_path, BASE + "grpo:\n  num_generation: 4\n")
    [problem] = problems(path)
    assert (problem.key, problem.line) == ("grpo.num_generation", line_of(path, "num_generation:"))
    assert "did you mean 'num_generations'" in problem.message


def test_grpo_values_are_typed_and_choices_checked(tmp_path):
    path = write(tmp_path, BASE + "grpo:\n  loss_type: dapoo\n")
    [problem] = problems(path)
    assert problem.key == "grpo.loss_type" and "did you mean 'dapo'" in problem.message
    [problem] = problems(write(tmp_path, BASE + "grpo:\n  top_entropy_quantile: high\n"))
    assert problem.key == "grpo.top_entropy_quantile" and "expected a number" in problem.message
    [problem] = problems(write(tmp_path, BASE + "grpo:\n  vllm_importance_sampling_mode: token\n"))
    assert "token_truncate" in problem.message
    [problem] = problems(write(tmp_path, BASE + "grpo:\n  num_generations: 1\n"))
    assert problem.key == "grpo.num_generations" and "at least 2" in problem.message


@pytest.mark.parametrize(("key", "value", "words"), [
    ("reward_weights", "[1.0]", "weight"), ("router_aux_loss_coef", "0.01", "train.router_aux_loss_coef"),
    ("chat_template_kwargs", "{enable_thinking: true}", "chat.thinking"), ("learning_rate", "1.0e-6", "train:"),
    ("trust_remote_code", "true", "never"),
])
def test_settings_with_another_home_are_refused_with_where_they_go(tmp_path, key, value, words):
    [problem] = problems(write(tmp_path, BASE + f"grpo:\n  {key}: {value}\n"))
    assert problem.key == f"grpo.{key}" and words in problem.message


def test_packing_with_grpo_is_an_error(tmp_path):
    path = write(tmp_path, BASE + "train: {packing: true}\n")
    [problem] = problems(path)
    assert problem.key == "train.packing" and "packing does not apply" in problem.message
    assert problem.line == line_of(path, "packing: true")


def test_unknown_reward_name_gets_a_did_you_mean(tmp_path):
    path = write(tmp_path, NO_REWARDS + "rewards: [corect, format]\n")
    [problem] = problems(path)
    assert problem.key == "rewards[0].name" and "unknown reward 'corect'" in problem.message
    assert "did you mean 'correct'" in problem.message and problem.line == line_of(path, "corect")


@pytest.mark.parametrize(("rewards", "key", "words"), [
    ("[]", "rewards", "needs at least one reward"),
    ("[{name: length}]", "rewards[0].max_tokens", "token budget"),
    ("[{name: format, max_tokens: 10}]", "rewards[0].max_tokens", "only used by the length reward"),
    ("[{name: format, timeout_s: 3}]", "rewards[0].timeout_s", "only used by the correct reward"),
    ("[{name: length, max_tokens: 600}]", "rewards[0].max_tokens", "below grpo.max_completion_length"),
    ("[correct, correct]", "rewards[1]", "listed twice"),
    ("[{custom: 'my_rewards:brevity'}]", "rewards[0].trust_code", "set trust_code: true"),
    ("[{custom: 'not a function'}]", "rewards[0].custom", "module:function"),
    ("[{custom: 'no_such_module_xyz:f', trust_code: true}]", "rewards[0].custom", "not found"),
    ("[{name: correct, custom: 'm:f', trust_code: true}]", "rewards[0].name", "one of them"),
    ("[{name: format, trust_code: true}]", "rewards[0].trust_code", "only used with custom"),
])
def test_bad_reward_settings(tmp_path, rewards, key, words):
    [problem] = problems(write(tmp_path, NO_REWARDS + f"rewards: {rewards}\n"))
    assert problem.key == key and words in problem.message, problem


def test_custom_reward_module_next_to_the_recipe_is_found(tmp_path):
    (tmp_path / "my_rewards.py").write_text("def brevity(completions, **kwargs):\n"
                                            "    return [0.0] * len(completions)\n")
    recipe = load_recipe(write(tmp_path, NO_REWARDS + "rewards: [{custom: 'my_rewards:brevity', trust_code: true}]\n"))
    assert recipe.rewards[0].label == "my_rewards:brevity"


def test_cards_must_match_the_stage(tmp_path):
    sft_card = f"{CARDS}/cot_arithmetic.yaml"
    path = write(tmp_path, BASE.replace(f"{CARDS}/cot_arithmetic_verifiable.yaml", sft_card))
    [problem] = problems(path)
    assert problem.key == "data.cards[0].path" and "cards of format verifiable" in problem.message
    sft = write(tmp_path, BASE.replace("stage: grpo\n", "").replace("rewards: [correct]\n", ""))
    [problem] = problems(sft)
    assert problem.key == "data.cards[0].path" and "stage: grpo" in problem.message


def test_grpo_settings_in_an_sft_recipe_are_refused(tmp_path):
    text = BASE.replace("stage: grpo\n", "").replace(f"{CARDS}/cot_arithmetic_verifiable.yaml",
                                                     f"{CARDS}/cot_arithmetic.yaml")
    [problem] = problems(write(tmp_path, text))
    assert problem.key == "rewards" and "only used with stage: grpo" in problem.message
    text = text.replace("rewards: [correct]\n", "grpo: {beta: 0.1}\n")
    [problem] = problems(write(tmp_path, text))
    assert problem.key == "grpo" and "settings of stage: grpo" in problem.message


def test_train_extra_keeps_sft_only_and_grpo_keys_out(tmp_path):
    [problem] = problems(write(tmp_path, BASE + "train: {extra: {completion_only_loss: true}}\n"))
    assert problem.key == "train.extra.completion_only_loss" and "not a GRPOConfig argument" in problem.message
    [problem] = problems(write(tmp_path, BASE + "train: {extra: {beta: 0.1}}\n"))
    assert problem.key == "train.extra.beta"


def test_generation_round_must_hold_whole_groups(tmp_path):
    [problem] = problems(write(tmp_path, BASE + "train: {global_batch_size: 12, per_device_train_batch_size: 4}\n"))
    assert problem.key == "train.global_batch_size" and "num_generations (8)" in problem.message


def test_completion_budget_fits_the_length_bound(tmp_path):
    [problem] = problems(write(tmp_path, BASE + "grpo: {max_completion_length: 4096}\ntrain: {max_length: 2048}\n"))
    assert problem.key == "grpo.max_completion_length" and "train.max_length" in problem.message


def test_validate_cli_exits_2_without_traceback(tmp_path, capsys):
    from qwen35_tune.cli import main

    path = write(tmp_path, NO_REWARDS + "rewards: [corect]\ntrain: {packing: true}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown reward 'corect'" in err and "Traceback" not in err


def test_grpo_schema_imports_no_torch():
    code = ("import sys; from qwen35_tune.recipe import load_recipe; "
            f"load_recipe({str(REPO / 'recipes/tiny/grpo_math.yaml')!r}); "
            "from qwen35_tune.recipe.grpo_section import grpo_own_arguments; assert grpo_own_arguments(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ},
                         cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


# ---- canaries: our copies of TRL's string choices, defaults and refusals against the installed TRL source --------
# (read with ast, like the schema itself: nothing here imports torch)

def _trl_file(relative: str) -> str:
    import importlib.util

    root = Path(next(iter(importlib.util.find_spec("trl").submodule_search_locations)))
    return (root / relative).read_text(encoding="utf-8")


def _grpo_config_fields() -> dict[str, ast.AnnAssign]:
    tree = ast.parse(_trl_file("trainer/grpo_config.py"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GRPOConfig")
    return {n.target.id: n for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def test_typed_choices_are_the_installed_trl_ones():
    """Every loss_type / scale_rewards / ... value we accept is one the installed GRPOTrainer handles by name, and
    every loss type its config documents is accepted here."""
    import re
    import typing

    from qwen35_tune.recipe.trainer_options import _field_doc

    strings = {node.value for node in ast.walk(ast.parse(_trl_file("trainer/grpo_trainer.py")))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)}  # fmt: skip
    config_text = _trl_file("trainer/grpo_config.py")
    quoted = set(re.findall(r"[`'](\w+)[`']", config_text))
    for name in ("scale_rewards", "importance_sampling_level", "multi_objective_aggregation", "vllm_mode"):
        for choice in typing.get_args(GrpoSection.model_fields[name].annotation):
            assert choice in strings or choice in quoted, (name, choice)
    losses = set(typing.get_args(LossType))
    assert losses <= strings
    help_text = _field_doc(_grpo_config_fields()["loss_type"].value).help
    documented = set(re.findall(r"'([a-z_]+)'", help_text.split("Supported values are")[1].split(". ")[0]))
    assert documented == losses
    for name, choices in EXTRA_CHOICES.items():
        assert set(choices) <= strings | quoted, name


def test_typed_fields_defaults_and_refusals_match_grpoconfig():
    from qwen35_tune.recipe.trainer_options import _field_doc

    own = grpo_own_arguments()
    assert own is not None
    assert set(GrpoSection.model_fields) <= set(own)
    assert set(REFUSED) - {"remove_unused_columns"} <= set(own)
    fields = _grpo_config_fields()
    for name, info in GrpoSection.model_fields.items():  # our defaults are TRL's
        assert info.default == ast.literal_eval(_field_doc(fields[name].value).default), name
