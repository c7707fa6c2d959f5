"""Atomic checkpoints without training: a save that dies half-way leaves the previous checkpoint the one that
``--resume auto`` picks, and keep-last-K only ever deletes finished checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.train.resume import STAGING, AtomicCheckpoints, find_resume_checkpoint, list_checkpoints


class Died(Exception):
    """Stands in for the process dying in the middle of a write."""


class _LibraryTrainer:
    """The parts of a transformers Trainer that checkpointing touches; saving writes files one by one."""

    def __init__(self, root: Path, die_at: int | None = None):
        self.root, self.die_at = root, die_at
        self.args = SimpleNamespace(should_save=True, save_total_limit=3)
        self.state = SimpleNamespace(global_step=0)
        self.accelerator = SimpleNamespace(wait_for_everyone=lambda: None)

    def _get_output_dir(self, trial=None):
        return str(self.root)

    def _save_checkpoint(self, model, trial):
        out = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        out.mkdir(parents=True)
        (out / "adapter_model.safetensors").write_bytes(b"weights")
        if self.state.global_step == self.die_at:
            raise Died
        (out / "trainer_state.json").write_text(json.dumps({"global_step": self.state.global_step}))


class _Trainer(AtomicCheckpoints, _LibraryTrainer):
    """The library trainer with qwen35-tune's atomic checkpoints mixed in."""


def _fake_trainer(root: Path, die_at: int | None = None, keep_last: int = 1) -> _Trainer:
    trainer = _Trainer(root, die_at)
    trainer.args.save_total_limit = keep_last  # the recipe's train.save_total_limit, as SFTConfig holds it
    trainer.rotate_checkpoints_atomically()
    return trainer


def test_dying_during_a_write_leaves_the_previous_checkpoint(tmp_path):
    trainer = _fake_trainer(tmp_path, die_at=4, keep_last=1)
    assert trainer.args.save_total_limit is None  # the Trainer's own rotation is off; ours runs after the rename
    trainer.state.global_step = 2
    trainer._save_checkpoint(None, None)
    trainer.state.global_step = 4
    with pytest.raises(Died):
        trainer._save_checkpoint(None, None)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert find_resume_checkpoint("auto", tmp_path) == str(tmp_path / "checkpoint-2")
    # a write that fails with an exception (disk full) removes its half-written folder, freeing the space
    assert not (tmp_path / STAGING / "checkpoint-4").exists()
    # a process killed mid-write leaves it in .staging, out of sight of --resume auto
    (tmp_path / STAGING / "checkpoint-4").mkdir(parents=True)
    (tmp_path / STAGING / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"half")
    # the restarted run saves step 4 again: the leftover is replaced, and keep-last-1 drops step 2
    trainer2 = _fake_trainer(tmp_path, keep_last=1)
    trainer2.state.global_step = 4
    trainer2._save_checkpoint(None, None)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4"]


def test_half_written_checkpoint_in_place_is_not_valid(tmp_path):
    """A checkpoint-N folder without trainer_state.json (e.g. from a writer without staging) is skipped."""
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-2" / "model.safetensors").write_bytes(b"w")
    (tmp_path / "checkpoint-6").mkdir()
    (tmp_path / "checkpoint-6" / "model.safetensors").write_bytes(b"w")
    assert find_resume_checkpoint("auto", tmp_path).endswith("checkpoint-2")


def test_resume_auto_without_checkpoints_starts_fresh(tmp_path):
    assert find_resume_checkpoint("auto", tmp_path / "nothing") is None
    assert find_resume_checkpoint(None, tmp_path) is None


def test_resume_from_a_bad_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--resume"):
        find_resume_checkpoint(str(tmp_path), tmp_path)
