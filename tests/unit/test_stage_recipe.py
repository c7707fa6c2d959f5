"""Recipe side of the training stages: ``stage: sft | dpo | grpo``, the ``dpo:`` section under TRL DPOConfig's names
(checked against the installed TRL at validate, torch-free), and the settings that mix two stages, each an error
at its key and line."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_tune.recipe import RecipeError, load_recipe
from qwen35_tune.recipe.dpo_section import ELSEWHERE, DPOSection, f_divergence_types, loss_types

REPO = Path(__file__).resolve().parents[2]
DPO = REPO / "recipes" / "tiny" / "dpo_lora.yaml"
SFT = REPO / "recipes" / "tiny" / "sft_lora.yaml"
PREFERENCE_CARD = REPO / "data_cards" / "cot_arithmetic_preference.yaml"


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, overrides=()) -> list:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return info.value.problems


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_stage_defaults_to_sft_and_the_shipped_dpo_twin_validates():
    assert load_recipe(SFT).stage == "sft" and load_recipe(SFT).dpo is None
    recipe = load_recipe(DPO)
    assert recipe.stage == "dpo" and recipe.dpo.beta == 0.1 and recipe.dpo.loss_type == ["sigmoid"]
    assert [card.format for _, card in recipe.card_pairs()] == ["preference"]


def test_unknown_dpo_key_is_a_recipe_error_with_did_you_mean_at_its_line(tmp_path):
    path = write(tmp_path, f"extends: {DPO}\ndpo:\n  betta: 0.2\n")
    [problem] = problems(path)
    assert (problem.key, problem.line) == ("dpo.betta", 3)
    assert "unknown key (did you mean 'beta'?)" in problem.message


@pytest.mark.parametrize("key, home", [("learning_rate", "train.learning_rate"), ("max_length", "train.max_length"),
                                       ("max_prompt_length", "train.max_length"), ("padding_free", "train.packing"),
                                       ("per_device_train_batch_size", "train.per_device_train_batch_size")])
def test_a_key_with_a_place_elsewhere_is_named_with_it(tmp_path, key, home):
    path = write(tmp_path, f"extends: {DPO}\ndpo:\n  {key}: 1\n")
    [problem] = problems(path)
    assert problem.key == f"dpo.{key}" and problem.line == 3 and home in problem.message


def test_dpo_section_on_an_sft_recipe_names_the_key(tmp_path):
    path = write(tmp_path, f"extends: {SFT}\ndpo:\n  beta: 0.2\n")
    [problem] = problems(path)
    assert problem.key == "dpo" and problem.line == 2
    assert "settings of stage: dpo, but this recipe's stage is sft" in problem.message


def test_stage_dpo_on_a_messages_card_names_the_card(tmp_path):
    path = write(tmp_path, f"extends: {SFT}\nstage: dpo\n")
    [problem] = problems(path)
    assert problem.key == "data.cards[0].path"
    assert "data card 'tiny_chat'" in problem.message and "format preference" in problem.message
    assert "format: messages" in problem.message


def test_a_preference_card_under_stage_sft_names_the_stage_it_needs(tmp_path):
    path = write(tmp_path, f"extends: {SFT}\ndata:\n  cards:\n    - path: {PREFERENCE_CARD}\n")
    [problem] = problems(path)
    assert problem.key == "data.cards[0].path" and "train with stage: dpo" in problem.message


def test_dpo_with_packing_is_refused_at_train_packing(tmp_path):
    path = write(tmp_path, f"extends: {DPO}\ntrain:\n  packing: true\n")
    [problem] = problems(path)
    assert problem.key == "train.packing" and "no padding-free path" in problem.message


def test_train_extra_is_checked_against_dpoconfig_under_stage_dpo(tmp_path):
    sft_only = write(tmp_path, f"extends: {DPO}\ntrain:\n  extra:\n    completion_only_loss: true\n", "a.yaml")
    [problem] = problems(sft_only)
    assert problem.key == "train.extra.completion_only_loss" and "not a DPOConfig argument" in problem.message
    dpo_key = write(tmp_path, f"extends: {DPO}\ntrain:\n  extra:\n    beta: 0.3\n", "b.yaml")
    [problem] = problems(dpo_key)
    assert problem.key == "train.extra.beta" and "a DPO setting: set it as dpo.beta" in problem.message
    on_sft = write(tmp_path, f"extends: {SFT}\ntrain:\n  extra:\n    beta: 0.3\n", "d.yaml")
    [problem] = problems(on_sft)
    assert problem.key == "train.extra.beta" and "a DPOConfig one, and this recipe's stage is sft" in problem.message
    fine = write(tmp_path, f"extends: {DPO}\ntrain:\n  extra:\n    pad_to_multiple_of: 8\n", "c.yaml")
    assert load_recipe(fine).train.extra == {"pad_to_multiple_of": 8}


def test_unknown_loss_type_names_the_installed_choices(tmp_path):
    path = write(tmp_path, f"extends: {DPO}\ndpo:\n  loss_type: sigmiod\n")
    [problem] = problems(path)
    assert problem.key.startswith("dpo.loss_type") and "did you mean 'sigmoid'" in problem.message


@pytest.mark.parametrize("section, key, words", [
    ("loss_type: [sigmoid, sft]\n  loss_weights: [1.0]", "dpo.loss_weights", "one weight per loss_type"),
    ("loss_type: exo_pair", "dpo.label_smoothing", "exo_pair needs label_smoothing"),
    ("loss_type: bco_pair\n  f_divergence_type: js_divergence", "dpo.f_divergence_type", "not bco_pair"),
    ("sync_ref_model: true\n  precompute_ref_log_probs: true", "dpo.sync_ref_model", "cannot be precomputed"),
    ("sync_ref_model: true", "dpo.sync_ref_model", "method.kind: full"),
])
def test_combinations_trl_refuses_late_fail_at_validate(tmp_path, section, key, words):
    path = write(tmp_path, f"extends: {DPO}\ndpo:\n  {section}\n")
    [problem] = problems(path)
    assert problem.key == key and words in problem.message


def test_stage_grpo_is_in_the_schema_and_trainable(tmp_path):
    """Every stage the schema offers has a runner; GRPO reads format: verifiable cards, not SFT ones."""
    import typing

    from qwen35_tune.recipe.schema import Recipe
    from qwen35_tune.train.runner import RUNNERS, check_stage

    assert typing.get_args(Recipe.model_fields["stage"].annotation) == ("sft", "dpo", "grpo") == tuple(RUNNERS)
    [problem] = problems(write(tmp_path, f"extends: {SFT}\nstage: grpo\n"))  # GRPO reads format: verifiable cards
    assert problem.key == "data.cards[0].path"
    assert "stage: grpo trains on cards of format verifiable" in problem.message
    check_stage("grpo")


def test_every_dpo_key_is_a_dpoconfig_argument_with_trls_default():
    from trl import DPOConfig

    fields = {f.name: f for f in dataclasses.fields(DPOConfig)}
    ours = DPOSection()
    for name in DPOSection.model_fields:
        assert name in fields, f"dpo.{name} is not a DPOConfig argument"
        field = fields[name]
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert getattr(ours, name) == default, name
    for name in ELSEWHERE:  # what the section points elsewhere is still TRL's (or, for the max_*_length, explains)
        assert name in fields or name in ("max_prompt_length", "max_completion_length"), name


def test_loss_and_divergence_choices_are_the_installed_trls(monkeypatch):
    """Canary: the strings DPOTrainer._compute_loss branches on, read from its source; its error lists them too."""
    import inspect

    from trl.trainer.dpo_trainer import DPOTrainer

    source = inspect.getsource(DPOTrainer._compute_loss)
    assert "sigmoid" in loss_types() and "ipo" in loss_types() and len(loss_types()) >= 10
    for name in loss_types():
        assert f'loss_type == "{name}"' in source
    assert f_divergence_types() == ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def test_validate_of_a_dpo_recipe_imports_no_torch():
    code = ("import sys; from qwen35_tune.recipe import load_recipe; "
            f"r = load_recipe({str(DPO)!r}); assert r.dpo.beta == 0.1; "
            "assert 'torch' not in sys.modules and 'trl' not in sys.modules, sorted(m for m in sys.modules "
            "if m.startswith(('torch', 'trl')))[:5]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_resolved_recipe_round_trips_with_stage_and_dpo(tmp_path):
    recipe = load_recipe(DPO)
    again = load_recipe(write(tmp_path, recipe.to_yaml()))
    assert again == recipe and json.loads(json.dumps(again.dpo.model_dump())) == recipe.dpo.model_dump()
