"""Held-out rows are evaluated by default: eval loss every tenth of the run and at its last step when the data build
held rows out, nothing when it held none; train.eval_strategy / eval_steps given in the recipe win."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.eval_schedule import eval_arguments
from qwen35_tune.train.sft import build_sft_config

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes/tiny/sft_lora.yaml"  # data.cards[0].eval_fraction: 0.1


def _config(tmp_path, *overrides, eval_rows=None):
    return build_sft_config(load_recipe(TINY, list(overrides)), tmp_path, eval_rows)


def test_rows_held_out_are_evaluated_by_default(tmp_path):
    config = _config(tmp_path, eval_rows=9)
    assert (config.eval_strategy, config.eval_steps) == ("steps", 0.1)
    assert config.per_device_eval_batch_size == config.per_device_train_batch_size == 8  # not 2 rows at a time
    assert _config(tmp_path).eval_strategy == "steps"  # eval_rows unknown: the recipe holds rows out


def test_no_held_out_rows_no_evaluation(tmp_path):
    assert _config(tmp_path, "data.cards.0.eval_fraction=0").eval_strategy == "no"
    assert _config(tmp_path, eval_rows=0).eval_strategy == "no"  # a fraction too small to hold out a row


def test_recipe_settings_win(tmp_path):
    assert _config(tmp_path, "train.eval_strategy=no", eval_rows=9).eval_strategy == "no"
    config = _config(tmp_path, "train.eval_strategy=steps", "train.eval_steps=7", eval_rows=9)
    assert (config.eval_strategy, config.eval_steps) == ("steps", 7)
    assert _config(tmp_path, "train.eval_strategy=epoch", eval_rows=9).eval_strategy == "epoch"
    assert _config(tmp_path, "train.per_device_eval_batch_size=3", eval_rows=9).per_device_eval_batch_size == 3


def test_an_asked_for_evaluation_without_rows_is_a_user_error():
    train = load_recipe(TINY, ["train.eval_strategy=steps"]).train
    with pytest.raises(UserError, match="train.eval_strategy: 'steps' needs eval rows.*eval_strategy: no"):
        eval_arguments(train, 0)


@pytest.mark.parametrize(("max_steps", "expected"), [(25, [3, 6, 9, 12, 15, 18, 21, 24, 25]), (30, [3 * i for i in
                                                     range(1, 11)]), (4, [1, 2, 3, 4])])  # fmt: skip
def test_the_trainer_evaluates_every_tenth_and_at_the_last_step(tmp_path, max_steps, expected):
    """Canary on transformers: eval_steps below 1 is a fraction of the total steps, and the steps strategy also
    evaluates the last step (what train/eval_schedule.py relies on instead of counting batches itself)."""
    from transformers import TrainerControl, TrainerState
    from transformers.trainer_callback import DefaultFlowCallback

    config = _config(tmp_path, f"train.max_steps={max_steps}", eval_rows=9)
    state = TrainerState(max_steps=max_steps)
    state.compute_steps(config, max_steps)
    flow, evaluated = DefaultFlowCallback(), []
    for step in range(1, max_steps + 1):
        state.global_step, control = step, TrainerControl()
        if flow.on_step_end(config, state, control).should_evaluate:
            evaluated.append(step)
    assert evaluated == expected
