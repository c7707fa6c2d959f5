"""Runtime checks without a training run: real token counts for every batch kind, the step guard's stop and its
num_tokens correction, storage failures in the words of the user, recipe settings refused before the data build,
wandb's folder under the run directory, and published tokenizer configs free of this machine's details."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.step_guard import GuardedSteps, NonFiniteTrainingError, StepGuard, real_tokens

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny" / "sft_lora.yaml"


# -- num_tokens ------------------------------------------------------------------------------------------------------
def test_real_tokens_for_every_batch_kind():
    padded = {"input_ids": torch.ones(2, 5, dtype=torch.long),
              "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    packed_text = {"input_ids": torch.ones(1, 9, dtype=torch.long), "position_ids": torch.arange(9)[None]}
    packed_vision = {"input_ids": torch.ones(1, 307, dtype=torch.long),
                     "position_ids": torch.zeros(4, 1, 307, dtype=torch.long)}  # M-RoPE: TRL counted size(1) = 1
    vision_dummy_tail = {"input_ids": torch.ones(1, 8, dtype=torch.long),
                         "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])}  # ZeRO-3 dummy image masked out
    assert [real_tokens(b) for b in (padded, packed_text, packed_vision, vision_dummy_tail)] == [8, 9, 307, 5]


class _LibraryTrainer:
    """What StepGuard touches on a library trainer: training_step, _get_grad_norm, the callback list, the
    accelerator (GuardedSteps calls up to the first two)."""

    def __init__(self, loss):
        self.loss = loss
        self.callback_handler = SimpleNamespace(callbacks=["default-flow"])
        self.accelerator = SimpleNamespace(optimizer_step_was_skipped=False)
        self.norm = 1.0

    def training_step(self, model, inputs, num_items=None):
        return torch.tensor(self.loss)

    def _get_grad_norm(self, model, grad_norm=None):
        return torch.tensor(self.norm)


class _Trainer(GuardedSteps, _LibraryTrainer):
    """The library trainer with the hooks qwen35-tune's trainer subclass mixes in."""


def _state(step=1, history=()):
    return SimpleNamespace(global_step=step, epoch=0.1, is_world_process_zero=True, log_history=list(history))


def test_step_guard_counts_tokens_and_corrects_num_tokens_before_other_callbacks(tmp_path):
    trainer = _Trainer(loss=2.0)
    guard = StepGuard(tmp_path).install(trainer)
    assert trainer.callback_handler.callbacks[0] is guard  # before metrics.jsonl and the trackers
    args = SimpleNamespace(output_dir=str(tmp_path / "checkpoints"), device="cpu")
    state = _state(history=[{"num_tokens": 100.0, "step": 0}])  # a resumed run continues its count
    guard.on_train_begin(args, state, None)
    batch = {"input_ids": torch.ones(1, 307, dtype=torch.long), "position_ids": torch.zeros(4, 1, 307)}
    trainer.training_step(None, batch)
    trainer.training_step(None, batch)  # two micro-batches of one optimizer step
    guard.on_step_end(args, state, None)
    logs = {"loss": 2.0, "num_tokens": 2.0}  # what TRL would log for packed vision rows
    state.log_history.append({**logs, "step": 1})
    guard.on_log(args, state, None, logs=logs)
    assert logs["num_tokens"] == 100 + 614 and state.log_history[-1]["num_tokens"] == 714


@pytest.mark.parametrize("what", ["loss", "grad_norm"])
def test_step_guard_stops_on_the_first_non_finite_step(what, tmp_path):
    trainer = _Trainer(loss=float("nan") if what == "loss" else 1.0)
    if what == "grad_norm":
        trainer.norm = float("inf")
    guard = StepGuard(tmp_path).install(trainer)
    good = tmp_path / "checkpoints" / "checkpoint-4"
    good.mkdir(parents=True)
    (good / "trainer_state.json").write_text("{}")
    (good / "adapter_model.safetensors").write_bytes(b"")
    args = SimpleNamespace(output_dir=str(tmp_path / "checkpoints"), device="cpu")
    state = _state(step=5)
    guard.on_train_begin(args, state, None)
    trainer.training_step(None, {"input_ids": torch.ones(1, 4, dtype=torch.long)})
    trainer._get_grad_norm(None)
    with pytest.raises(NonFiniteTrainingError) as info:
        guard.on_step_end(args, state, None)
    message = str(info.value)
    assert "step 5" in message and str(good) in message and "metrics.jsonl" in message
    assert ("loss is NaN" if what == "loss" else "gradient norm is inf") in message
    record = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert record["step"] == 5 and record[what] is None and record["nonfinite_keys"][what] in ("nan", "inf")


def test_skipped_optimizer_step_is_not_a_failure(tmp_path):
    trainer = _Trainer(loss=1.0)
    trainer.norm = float("inf")
    trainer.accelerator.optimizer_step_was_skipped = True  # fp16 loss-scale overflow: weights untouched
    guard = StepGuard(tmp_path).install(trainer)
    args = SimpleNamespace(output_dir=str(tmp_path), device="cpu")
    guard.on_train_begin(args, _state(), None)
    trainer._get_grad_norm(None)
    guard.on_step_end(args, _state(), None)


# -- storage ---------------------------------------------------------------------------------------------------------
def test_storage_errors_name_path_free_space_and_survivor(tmp_path):
    from qwen35_tune.train.guards import describe_storage_error, storage_errors

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "adapter_model.safetensors").write_bytes(b"")
    full = OSError(errno.ENOSPC, "No space left on device", str(run / "checkpoints" / ".staging" / "x"))
    with pytest.raises(UserError) as info, storage_errors(run):
        raise RuntimeError("save failed") from full  # wrapped, as libraries do
    message = str(info.value)
    assert "disk is full" in message and "GiB free" in message and str(ckpt) in message and "--resume auto" in message
    # safetensors' Rust error and a quota carry no OSError
    rust = RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })')
    assert "disk is full" in describe_storage_error(rust, run)
    assert "quota" in describe_storage_error(OSError(errno.EDQUOT, "Disk quota exceeded"), run)
    denied = describe_storage_error(OSError(errno.EROFS, "Read-only file system", str(run / "metrics.jsonl")), run)
    assert "no permission to write" in denied and "another --output-dir" in denied
    assert describe_storage_error(ValueError("unrelated"), run) is None
    with pytest.raises(ValueError), storage_errors(run):  # anything else stays an internal error
        raise ValueError("unrelated")


# -- before the data build -------------------------------------------------------------------------------------------
def test_max_steps_zero_and_missing_trackers_are_refused(monkeypatch):
    import transformers.integrations as integrations

    from qwen35_tune.train.guards import check_recipe_runnable

    with pytest.raises(UserError, match="train.max_steps: 0 would train whole epochs.*-1"):  # at load, by the schema
        load_recipe(TINY, ["train.max_steps=0"])
    check_recipe_runnable(load_recipe(TINY, ["train.max_steps=-1"]))
    monkeypatch.setattr(integrations, "is_wandb_available", lambda: False)
    with pytest.raises(UserError, match=r"tracking.report_to: wandb is not installed \(pip install 'qwen35-tune"):
        check_recipe_runnable(load_recipe(TINY, ["tracking.report_to=[wandb]"]))


def test_wandb_files_go_under_the_run_directory(tmp_path):
    from qwen35_tune.train.tracking import point_wandb_at

    env: dict[str, str] = {}
    assert point_wandb_at(tmp_path / "run1", env) == str((tmp_path / "run1").resolve()) == env["WANDB_DIR"]
    assert point_wandb_at(tmp_path / "run2", env) == str((tmp_path / "run2").resolve())  # the next run moves it
    user = {"WANDB_DIR": "/data/wandb"}
    assert point_wandb_at(tmp_path / "run3", user) == "/data/wandb" and user == {"WANDB_DIR": "/data/wandb"}


# -- published tokenizer configs -------------------------------------------------------------------------------------
def test_saved_tokenizer_and_processor_configs_describe_no_machine(tiny_vision, tmp_path):
    from qwen35_tune.models.load import load_tokenizer
    from qwen35_tune.models.portable_configs import strip_machine_keys
    from qwen35_tune.models.processor import load_processor

    out = tmp_path / "adapter"
    load_processor(str(tiny_vision)).save_pretrained(out)
    load_tokenizer(str(tiny_vision)).save_pretrained(out)
    before = json.loads((out / "tokenizer_config.json").read_text())
    assert before.get("is_local") is True  # what transformers writes after a local/offline load
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.update(name_or_path=str(tiny_vision), tokenizer_file=str(tiny_vision / "tokenizer.json"), cache_dir="/x")
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    assert "tokenizer_config.json" in strip_machine_keys(out)
    after = json.loads((out / "tokenizer_config.json").read_text())
    for key in ("is_local", "local_files_only", "name_or_path", "tokenizer_file", "cache_dir"):
        assert key not in after, key
    assert after["eos_token"] == before["eos_token"] and after["tokenizer_class"] == before["tokenizer_class"]
    for name in ("processor_config.json", "tokenizer_config.json"):
        assert str(tmp_path) not in (out / name).read_text()
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).eos_token == before["eos_token"]  # still loads


def test_finite_value_helpers():
    from qwen35_tune.train.step_guard import _as_float

    assert _as_float(torch.tensor(float("nan"))) is not None and math.isnan(_as_float(torch.tensor(float("nan"))))
    assert _as_float(None) is None


def test_cli_maps_a_full_disk_or_denied_write_in_any_command(tmp_path, monkeypatch, capsys):
    from qwen35_tune import cli

    target = tmp_path / "out" / "data_stats.json"
    for code, expected, exit_code in ((errno.EROFS, "no permission to write", 2), (errno.ENOSPC, "disk is full", 2),
                                      (errno.ENOENT, "internal error", 1)):  # fmt: skip
        def fail(args, code=code):
            raise OSError(code, os.strerror(code), str(target))

        monkeypatch.setitem(cli.COMMANDS, "validate", fail)
        assert cli.main(["validate", str(TINY)]) == exit_code
        err = " ".join(capsys.readouterr().err.split())
        assert expected in err and (exit_code == 1) == ("Traceback" in err), err
