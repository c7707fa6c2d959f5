"""A run directory that already holds a run: a fresh start over it is refused (or --overwrite replaces exactly what
a run wrote); --resume compares the recipe with the run's recipe.yaml, allows only changes that neither are ignored
nor mix two trainings, keeps the old recipe, and sets aside metrics of steps it trains again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.run_claim import prepare_run_dir, recipe_changes, resume_safe, run_markers

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny" / "sft_lora.yaml"


def _trained_run(run_dir: Path, overrides=(), steps=(1, 2, 3, 4)) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(load_recipe(RECIPE, list(overrides)).to_yaml())
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in steps))
    checkpoint = run_dir / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    (checkpoint / "adapter_model.safetensors").write_bytes(b"")
    (run_dir / "adapter").mkdir()
    (run_dir / "summary.json").write_text("{}")
    return run_dir


@pytest.mark.parametrize("key, allowed", [
    ("train.max_steps", True), ("train.num_train_epochs", True), ("train.logging_steps", True),
    ("train.save_steps", True), ("train.save_total_limit", True), ("tracking.report_to", True),
    ("export.merge", True), ("eval.limit", True), ("name", True), ("model.attn_implementation", True),
    ("model.name_or_path", False), ("model.dtype", False), ("method.kind", False), ("method.lora.r", False),
    ("method.lora.target_modules", False), ("data.cards.0.path", False), ("data.cards.#", False),
    ("chat.template", False), ("seed", False), ("train.learning_rate", False), ("train.max_length", False),
    ("train.per_device_train_batch_size", False), ("train.packing", False), ("train.extra.fp16", False),
    ("train.max_stepsX", False),
])  # fmt: skip
def test_resume_safe_keys(key, allowed):
    assert resume_safe(key) is allowed


def test_recipe_changes_name_each_leaf():
    old = load_recipe(RECIPE, []).model_dump(mode="json")
    new = load_recipe(RECIPE, ["method.lora.r=8", "train.max_steps=60"]).model_dump(mode="json")
    assert recipe_changes(old, new) == [("method.lora.r", 16, 8), ("train.max_steps", 30, 60)]
    assert recipe_changes({"train": {"a": 1}}, {"train": {"a": 1, "new_key": None}}) == []  # a new schema default


def test_fresh_run_over_a_run_is_refused_with_what_to_do(tmp_path):
    run = _trained_run(tmp_path / "run")
    recipe = load_recipe(RECIPE, [])
    with pytest.raises(UserError) as info:
        prepare_run_dir(recipe, run, resume=None)
    message = str(info.value)
    assert str(run) in message and "--resume auto" in message and "--overwrite" in message
    assert "metrics.jsonl" in message
    assert (run / "metrics.jsonl").exists() and (run / "adapter").exists()  # nothing touched


def test_overwrite_removes_only_what_a_run_wrote(tmp_path):
    run = _trained_run(tmp_path / "run")
    (run / "recipe.prev-1.yaml").write_text("x: 1\n")
    (run / "my_notes.txt").write_text("keep me")
    (run / "train.sbatch").write_text("#!/bin/bash\n")
    prepare_run_dir(load_recipe(RECIPE, []), run, resume=None, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["my_notes.txt", "train.sbatch"]


def test_a_directory_without_training_is_not_a_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / ".staging").mkdir(parents=True)
    (run / "recipe.yaml").write_text("name: x\n")  # a run that failed before its first step
    (run / "data_stats.json").write_text("{}")
    assert run_markers(run) == []
    prepare_run_dir(load_recipe(RECIPE, []), run, resume=None)  # no refusal


def test_resume_refuses_incompatible_changes_and_keeps_the_recipe(tmp_path):
    run = _trained_run(tmp_path / "run")
    before = (run / "recipe.yaml").read_text()
    for overrides, key in ((["method.lora.r=8"], "method.lora.r"), (["model.name_or_path=tiny://moe"], "model."),
                           (["train.learning_rate=1e-4"], "train.learning_rate"), (["seed=1"], "seed"),
                           (["data.cards.0.eval_fraction=0.2"], "data.cards.0.eval_fraction")):  # fmt: skip
        with pytest.raises(UserError) as info:
            prepare_run_dir(load_recipe(RECIPE, overrides), run, resume="auto")
        assert key in str(info.value) and "--resume" in str(info.value)
    assert (run / "recipe.yaml").read_text() == before
    assert not list(run.glob("recipe.prev-*.yaml"))


def test_resume_allows_harmless_changes_and_keeps_the_old_recipe(tmp_path, caplog):
    run = _trained_run(tmp_path / "run")
    old = (run / "recipe.yaml").read_text()
    with caplog.at_level("WARNING"):
        prepare_run_dir(load_recipe(RECIPE, ["train.max_steps=60", "train.logging_steps=5"]), run, resume="auto")
    assert (run / "recipe.prev-1.yaml").read_text() == old
    assert "train.max_steps: 30 -> 60" in caplog.text and "train.logging_steps: 2 -> 5" in caplog.text
    prepare_run_dir(load_recipe(RECIPE, ["train.max_steps=90"]), run, resume="auto")
    assert (run / "recipe.prev-2.yaml").exists()  # recipe.yaml is the same here (run_sft rewrites it), kept again


def test_resume_sets_aside_metrics_of_steps_trained_again(tmp_path):
    run = _trained_run(tmp_path / "run")  # metrics for steps 1-4, newest checkpoint at step 2
    prepare_run_dir(load_recipe(RECIPE, []), run, resume="auto")
    kept = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    moved = [json.loads(line)["step"] for line in (run / "metrics.discarded.jsonl").read_text().splitlines()]
    assert kept == [1, 2] and moved == [3, 4]
    assert not list(run.glob("recipe.prev-*.yaml"))  # same recipe: nothing to keep


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(UserError, match="--resume .* --overwrite"):
        prepare_run_dir(load_recipe(RECIPE, []), tmp_path, resume="auto", overwrite=True)
