"""``model.init_from`` at validate (torch-free): what it points at must fit the recipe, and each misfit is an error at
the key to change and its line (``validate``, and ``train`` before any data); plus the DPO chat setting that would
score the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.recipe import RecipeError, load_recipe
from qwen35_tune.rundir import RunDir, RunRecord

REPO = Path(__file__).resolve().parents[2]
DPO = REPO / "recipes" / "tiny" / "dpo_lora.yaml"  # LoRA r=16, lora_alpha=32 on tiny://dense


def _adapter(folder: Path, r: int = 16, alpha: int = 32, peft_type: str = "LORA") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "r": r, "lora_alpha": alpha}))
    return folder


def _run(tmp_path: Path, base: str = "tiny://dense", method: str = "lora") -> Path:
    run_dir = tmp_path / "sft-run"
    _adapter(run_dir / "adapter")
    RunDir(run_dir).write_run(RunRecord(base_model=base, base_path="/nowhere", method=method, weights="adapter"))
    return run_dir


def _problems(tmp_path: Path, init_from: Path, *overrides: str) -> list:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"extends: {DPO}\nmodel:\n  init_from: {init_from}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, list(overrides), check_model=True)  # what validate and train check
    return info.value.problems


def test_a_finished_lora_run_fits_and_is_stored_absolute(tmp_path, monkeypatch):
    run_dir = _run(tmp_path)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(DPO, ["model.init_from=sft-run"])
    assert recipe.model.init_from == str(run_dir)


def test_a_missing_folder_is_named_at_init_from(tmp_path):
    [problem] = _problems(tmp_path, tmp_path / "nope")
    assert problem.key == "model.init_from" and problem.line == 3 and "not found" in problem.message


def test_an_adapter_of_another_base_names_model_name_or_path(tmp_path):
    [problem] = _problems(tmp_path, _run(tmp_path, base="tiny://moe"))
    assert problem.key == "model.name_or_path" and "set model.name_or_path: tiny://moe" in problem.message


def test_a_continued_adapter_keeps_its_shape(tmp_path):
    problems = _problems(tmp_path, _adapter(tmp_path / "a", r=8, alpha=16))
    assert [p.key for p in problems] == ["method.lora.r", "method.lora.lora_alpha"]
    assert "set method.lora.r: 8" in problems[0].message


def test_a_qlora_run_continued_as_lora_names_method_kind(tmp_path):
    [problem] = _problems(tmp_path, _run(tmp_path, method="qlora"))
    assert problem.key == "method.kind" and "set method.kind: qlora" in problem.message


@pytest.mark.parametrize("kind", ["adapter folder", "run without merged weights"])
def test_a_full_fine_tune_cannot_start_from_an_adapter(tmp_path, kind):
    source = _adapter(tmp_path / "a") if kind == "adapter folder" else _run(tmp_path)
    [problem] = _problems(tmp_path, source, "method.kind=full")
    assert problem.key == "model.init_from" and "merge" in problem.message


def test_a_non_lora_adapter_and_an_unfinished_run_say_why(tmp_path):
    [problem] = _problems(tmp_path, _adapter(tmp_path / "ia3", peft_type="IA3"))
    assert "only LoRA adapters can be continued" in problem.message
    unfinished = tmp_path / "running"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text("name: x\n")
    [problem] = _problems(tmp_path, unfinished)
    assert "no finished run" in problem.message


def test_dpo_refuses_training_on_the_prompt(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"extends: {DPO}\nchat:\n  train_on: all\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    [problem] = info.value.problems
    assert problem.key == "chat.train_on" and "never the prompt" in problem.message
