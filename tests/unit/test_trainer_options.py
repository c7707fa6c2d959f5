"""Canary for recipe/trainer_options.py: what it reads from the trl / transformers source files (without importing
them) equals what the imported libraries say, so validate checks against the installed versions' own enums."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen35_tune.recipe import schema, trainer_options
from qwen35_tune.recipe.trainer_options import (
    argument_problem,
    choice_problem,
    library_arguments,
    sft_argument_docs,
    sft_arguments,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sft_config():
    trl = pytest.importorskip("trl")
    return trl.SFTConfig


def test_reading_the_sources_imports_nothing_heavy():
    code = (
        "import sys\nfrom qwen35_tune.recipe.trainer_options import sft_arguments\nassert sft_arguments()\n"
        "heavy = {'torch', 'transformers', 'trl'} & set(sys.modules)\nassert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=env)


def test_argument_names_are_sft_configs(sft_config):
    fields = {f.name for f in dataclasses.fields(sft_config) if f.init and not f.name.startswith("_")}
    assert set(sft_arguments()) == fields


def test_library_arguments_are_the_classes_own():
    """The argument names `qwen35-tune schema` marks as peft's / transformers' are the imported classes' own."""
    import inspect

    peft = pytest.importorskip("peft")
    from transformers import BitsAndBytesConfig

    lora = {f.name for f in dataclasses.fields(peft.LoraConfig) if f.init and not f.name.startswith("_")}
    assert library_arguments("peft.tuners.lora.config", "LoraConfig") == lora
    bnb = set(inspect.signature(BitsAndBytesConfig.__init__).parameters) - {"self", "kwargs"}
    assert library_arguments("transformers.utils.quantization_config", "BitsAndBytesConfig") >= bnb
    assert library_arguments("no_such_package.config", "Nothing") is None


def test_argument_docs_are_the_fields_own_help_and_defaults(sft_config):
    docs, literal = sft_argument_docs(), 0
    for field in dataclasses.fields(sft_config):
        if field.name.startswith("_") or not field.init:
            continue
        assert " ".join(field.metadata.get("help", "").split()) == docs[field.name].help, field.name
        try:
            written = ast.literal_eval(docs[field.name].default or "")
        except (ValueError, SyntaxError):
            continue  # a name or call (default_optim, list()): shown as written
        default = field.default_factory() if field.default is dataclasses.MISSING else field.default
        assert written == default, field.name
        literal += 1
    assert literal > 100


def test_enum_choices_are_the_library_enums(sft_config):
    from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy, SchedulerType
    from transformers.training_args import OptimizerNames

    read = sft_arguments()
    for name, enum in [("lr_scheduler_type", SchedulerType), ("optim", OptimizerNames),
                       ("logging_strategy", IntervalStrategy), ("eval_strategy", IntervalStrategy),
                       ("save_strategy", SaveStrategy), ("hub_strategy", HubStrategy)]:  # fmt: skip
        assert set(read[name].choices) == {e.value for e in enum}, name


def test_metadata_choices_are_the_fields_own(sft_config):
    read = sft_arguments()
    for field in dataclasses.fields(sft_config):
        choices = field.metadata.get("choices")
        if isinstance(choices, list):
            assert read[field.name].choices == tuple(choices), field.name


def test_plain_types_match_the_dataclass_defaults(sft_config):
    """Each field's default is a value its read types accept (a cheap check that the annotations were read right)."""
    read = sft_arguments()
    for field in dataclasses.fields(sft_config):
        spec = read.get(field.name)
        if spec is None or spec.types is None or field.default is dataclasses.MISSING:
            continue
        if isinstance(field.default, str) and spec.choices and field.default not in spec.choices:
            continue  # e.g. a default spelled through an enum member
        assert argument_problem(field.name, field.default) is None, (field.name, field.default)


def test_keys_the_runner_passes_itself_are_refused_in_extra():
    """train/sft.py and train/stage.py pass these to SFTConfig next to **train.extra: the same key in extra
    would clash there."""
    passed = set()
    for module, function in (("sft.py", "build_sft_config"), ("stage.py", "trainer_arguments")):
        tree = ast.parse((REPO / "qwen35_tune" / "train" / module).read_text())
        build = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
        found = {
            keyword.arg
            for call in ast.walk(build)
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "update"
            for keyword in call.keywords
            if keyword.arg
        }
        assert found, f"{function} no longer passes keys with kwargs.update(...): update this test"
        passed |= found
    refused = set(schema._EXTRA_HOMES) | set(schema._RUNNER_SET) | set(schema.TrainSection.model_fields)
    assert passed <= refused, passed - refused


def test_unreadable_sources_leave_the_checks_to_the_trainer(monkeypatch):
    monkeypatch.setattr(trainer_options, "CONFIG_MODULE", "no_such_package.sft_config")
    sft_arguments.cache_clear()
    try:
        assert sft_arguments() is None
        assert argument_problem("anything_at_all", 1) is None and choice_problem("optim", "nope") is None
        assert argument_problem("anything_at_all", float("nan")) is not None  # finiteness needs no library
    finally:
        monkeypatch.undo()
        sft_arguments.cache_clear()
    assert sft_arguments() is not None
