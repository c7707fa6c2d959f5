"""Values that would ruin a run fail at validate with their key: non-finite numbers, YAML booleans where numbers
belong (and numbers where booleans belong), absurd sizes, misspelt trainer options, and bad `train.extra` entries.

The class tests walk the schema itself, so a field added later is covered without touching this file.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from qwen35_tune.cards import load_card
from qwen35_tune.cli import main
from qwen35_tune.recipe import Recipe, RecipeError, load_recipe
from qwen35_tune.yaml_lines import _strip

FIXTURES = Path(__file__).parent / "fixtures"
BASE = FIXTURES / "recipes" / "base.yaml"


def leaves(model: type[BaseModel], prefix: tuple = ()) -> list[tuple[str, str]]:
    """(dotted override key, 'int' | 'float' | 'number' | 'bool') for every scalar field of the recipe schema."""
    found = []
    for name, field in model.model_fields.items():
        if name == "extends":
            continue
        tp = _strip(field.annotation)
        args = set(typing.get_args(tp))
        key = (*prefix, name)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            found += leaves(tp, key)
        elif typing.get_origin(tp) is list and isinstance(typing.get_args(tp)[0], type) and issubclass(
                typing.get_args(tp)[0], BaseModel):
            if key == ("data", "cards"):  # eval_cards hold the same CardRef; the fixture has one training card
                found += leaves(typing.get_args(tp)[0], (*key, 0))
        elif tp in (int, float, bool):
            found.append((".".join(map(str, key)), tp.__name__))
        elif args == {int, float}:
            found.append((".".join(map(str, key)), "number"))
    return found  # fmt: skip


LEAVES = leaves(Recipe)
NUMBERS = [(key, kind) for key, kind in LEAVES if kind != "bool"]
INTS = [key for key, kind in LEAVES if kind in ("int", "number")]
BOOLS = [key for key, kind in LEAVES if kind == "bool"]


def shown(key: str) -> str:
    return re.sub(r"\.(\d+)", r"[\1]", key)


def problems(overrides: list[str]) -> list:
    with pytest.raises(RecipeError) as info:
        load_recipe(BASE, overrides)
    return info.value.problems


@pytest.fixture(autouse=True)
def _in_fixtures(monkeypatch):
    monkeypatch.chdir(FIXTURES)


def test_the_schema_walk_sees_every_kind_of_field():
    keys = {key for key, _ in LEAVES}
    assert {"train.learning_rate", "train.learning_rates.vision", "data.cards.0.weight", "seed", "method.lora.r",
            "method.lora.lora_alpha", "model.vision.fps", "eval.max_new_tokens", "export.merge"} <= keys  # fmt: skip
    assert len(NUMBERS) > 30 and len(BOOLS) > 15


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
@pytest.mark.parametrize(("key", "kind"), NUMBERS, ids=[k for k, _ in NUMBERS])
def test_every_number_must_be_finite(key, kind, value):
    found = problems([f"{key}={value}"])
    assert any(p.key == shown(key) and ("finite" in p.message or "expected an integer" in p.message) for p in found), (
        found
    )


@pytest.mark.parametrize(("key", "kind"), NUMBERS, ids=[k for k, _ in NUMBERS])
def test_a_yaml_boolean_is_not_a_number(key, kind):
    found = problems([f"{key}=true"])
    assert any(p.key == shown(key) and p.message.startswith("expected ") and "(got True)" in p.message for p in found)


@pytest.mark.parametrize("key", INTS)
def test_every_integer_is_bounded(key):
    found = problems([f"{key}={10**30}"])
    assert any(p.key == shown(key) and "at most" in p.message for p in found), found


@pytest.mark.parametrize("key", BOOLS)
@pytest.mark.parametrize("value", ["1", "yes", "'true'"])
def test_a_boolean_must_be_true_or_false(key, value):
    found = problems([f"{key}={value}"])
    assert any(p.key == shown(key) and "expected true or false" in p.message for p in found), found


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("train.learning_rate=.inf", "train.learning_rate", "expected a finite number (got inf)"),
        ("train.max_steps=1e29", "train.max_steps", "expected an integer"),
        ("train.max_steps=100000000000000000000000000000", "train.max_steps", "must be at most 100000000"),
        ("train.max_steps=0", "train.max_steps", "0 would train whole epochs"),
        ("seed=true", "seed", "expected an integer (got True)"),
        ("seed=4294967296", "seed", "at most 4294967295"),
        ("seed=-1", "seed", "at least 0"),
        ("train.learning_rate=5", "train.learning_rate", "at most 1.0"),
        ("train.weight_decay=100", "train.weight_decay", "at most 1.0"),
        ("method.lora.lora_dropout=1", "method.lora.lora_dropout", "less than 1"),
        ("method.lora.lora_alpha=1e9", "method.lora.lora_alpha", "at most 65536"),
        ("train.warmup_steps=1e12", "train.warmup_steps", "at most 100000000"),
        ("data.cards.0.weight=1e300", "data.cards[0].weight", "at most"),
        ("method.lora.r='8'", "method.lora.r", "expected an integer (got '8')"),
        ("name=" + "a" * 200, "name", "at most 128 characters"),
        ("chat.thinking=maybe", "chat.thinking", "expected true or false"),
        ("method.lora.target_modules='(q_proj'", "method.lora.target_modules", "nor a valid regular expression"),
        ("method.lora.target_modules=[]", "method.lora.target_modules", "name at least one module"),
        ("method.lora.target_modules=[q_proj, '']", "method.lora.target_modules", "name at least one module"),
        ("export.hub_repo_id='me/my model'", "export.hub_repo_id", "must be a Hub repo id"),
        ("output_dir=''", "output_dir", "must not be empty"),
        ("model.revision=''", "model.revision", "must not be empty"),
        ("model.name_or_path=''", "model.name_or_path", "must not be empty"),
    ],
)
def test_values_that_would_ruin_a_run(override, key, words):
    found = problems([override])
    assert any(p.key == key and words in p.message for p in found), found


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("train.lr_scheduler_type=cosin", "train.lr_scheduler_type", "did you mean 'cosine'?"),
        ("train.optim=adamw", "train.optim", "did you mean 'adamw_torch'?"),
        ("train.optim=paged_adamw_8", "train.optim", "did you mean 'paged_adamw_8bit'?"),
        ("train.extra={logging_strategy: step}", "train.extra.logging_strategy", "did you mean 'steps'?"),
        ("train.extra={hub_strategy: every}", "train.extra.hub_strategy", "did you mean 'every_save'?"),
        ("train.extra={loss_type: nlll}", "train.extra.loss_type", "did you mean 'nll'?"),  # field metadata choices
        ("train.extra={warmup_ratio: 0.1}", "train.extra.warmup_ratio", "not an SFTConfig argument (did you mean "
         "'warmup_steps'?)"),
        ("train.extra={adam_beta2: .nan}", "train.extra.adam_beta2", "must be a finite number (got nan)"),
        ("train.extra={lr_scheduler_kwargs: {min_lr: .inf}}", "train.extra.lr_scheduler_kwargs", "finite"),
        ("train.extra={max_grad_norm_x: 1}", "train.extra.max_grad_norm_x", "not an SFTConfig argument"),
        ("train.extra={adam_epsilon: true}", "train.extra.adam_epsilon", "expected a number (got True)"),
        ("train.extra={eval_accumulation_steps: 2.5}", "train.extra.eval_accumulation_steps",
         "expected an integer or null (got 2.5)"),
        ("train.extra={use_liger_kernel: 1}", "train.extra.use_liger_kernel", "expected true or false (got 1)"),
        ("train.extra={use_cpu: true}", "train.extra.use_cpu", "qwen35-tune sets this itself"),
        ("train.extra={data_seed: 1}", "train.extra.data_seed", "set this as seed"),
        ("train.extra={activation_checkpointing: true}", "train.extra.activation_checkpointing",
         "set this as train.gradient_checkpointing"),
        ("train.save_strategy=step", "train.save_strategy", "did you mean 'steps'?"),  # our Literal choices too
        ("method.kind=LORA", "method.kind", "did you mean 'lora'?"),
        ("model.dtype=bf16", "model.dtype", "did you mean 'bfloat16'?"),
        ("tracking.report_to=[wanb]", "tracking.report_to[0]", "did you mean 'wandb'?"),
    ],
)  # fmt: skip
def test_trainer_options_are_checked_against_the_installed_library(override, key, words):
    found = problems([override])
    assert any(p.key == key and words in p.message for p in found), found


def test_good_values_still_load():
    recipe = load_recipe(BASE, [
        "train.lr_scheduler_type=cosine_with_min_lr", "train.optim=paged_adamw_8bit", "seed=0", "train.max_steps=-1",
        "train.warmup_steps=0.05", "method.lora.lora_alpha=16.5", "chat.thinking=off", "train.learning_rate=1",
        "method.lora.target_modules=.*(q|v)_proj", "export.hub_repo_id=me/my-model.v2",
        "train.extra={logging_strategy: epoch, lr_scheduler_kwargs: {min_lr: 1.0e-6}, neftune_noise_alpha: 5, "
        "eval_accumulation_steps: null, dataset_num_proc: 2, debug: ''}",
    ])  # fmt: skip
    assert recipe.train.optim == "paged_adamw_8bit" and recipe.chat.enable_thinking is False
    assert recipe.train.extra["lr_scheduler_kwargs"] == {"min_lr": 1e-6}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("max_bad_fraction: .nan", "finite"),
        ("max_bad_fraction: .inf", "finite"),
        ("max_bad_fraction: true", "expected a number (got True)"),
        ("max_bad_fraction: 2", "at most 1"),
        ("name: 12", "expected a string"),
        ("languages: en", "expected a list"),
        ("format: sharegtp", "did you mean 'sharegpt'?"),
    ],
)
def test_data_card_numbers_and_types(tmp_path, line, words):
    key = line.split(":")[0]
    text = (FIXTURES / "cards" / "chat.yaml").read_text()
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"{key}:"))
    card = tmp_path / "card.yaml"
    card.write_text(text.replace("data/", str(FIXTURES / "cards" / "data") + "/") + f"\n{line}\n")
    with pytest.raises(RecipeError) as info:
        load_card(card)
    [problem] = info.value.problems
    assert (problem.key, problem.line) == (key, len(text.splitlines()) + 1) and words in problem.message


def test_hub_card_flags_are_real_booleans(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("name: hub\nlicense: mit\nsource:\n  hub: org/set\n  streaming: 1\n")
    with pytest.raises(RecipeError) as info:
        load_card(card)
    [problem] = info.value.problems
    assert (problem.key, problem.line) == ("source.streaming", 5) and "expected true or false" in problem.message


def test_validate_reports_a_non_finite_learning_rate_with_file_and_line(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(f"extends: {BASE}\ntrain:\n  learning_rate: .inf\n  optim: adamw\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"r\.yaml:3 train\.learning_rate: expected a finite number \(got inf\)", err), err
    assert re.search(r"r\.yaml:4 train\.optim: unknown value 'adamw' \(did you mean 'adamw_torch'\?", err), err
    assert "Traceback" not in err
