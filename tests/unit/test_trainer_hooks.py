"""Canary for the private Trainer methods qwen35-tune's trainer subclass overrides (``patches.TRAINER_PRIVATE_HOOKS``):
they exist with the parameters the overrides pass on, the training loop still calls them, and on a real Trainer the
overrides do their job (checkpoints staged and renamed, keep-last-K, every step's gradient norm seen). Outside the
tested transformers versions, or with a hook's signature changed, the trainer refuses to start and says why."""

from __future__ import annotations

import inspect

import pytest
import torch
import transformers
from transformers import Trainer, TrainingArguments

from qwen35_tune import patches
from qwen35_tune.errors import UserError
from qwen35_tune.train.resume import STAGING, AtomicCheckpoints, list_checkpoints
from qwen35_tune.train.step_guard import GuardedSteps, StepGuard


def test_installed_transformers_is_in_the_tested_range_with_the_hooks():
    from packaging.version import Version
    from trl import SFTTrainer

    low, high = patches.TRAINER_HOOK_VERSIONS
    assert Version(low) <= Version(transformers.__version__) < Version(high)
    for cls in (Trainer, SFTTrainer):
        patches.check_trainer_hooks(cls)


def test_canary_the_training_loop_calls_the_hooks():
    """What the overrides rely on: ``_save_checkpoint`` takes its folder from ``_get_output_dir``, and the loop hands
    each step's norm through ``_get_grad_norm`` to the log."""
    save = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir(" in save and "self.save_model(" in save
    loop = inspect.getsource(transformers.trainer)
    assert "= self._get_grad_norm(model" in loop


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 1)

    def forward(self, x, labels=None):
        return {"loss": ((self.proj(x).squeeze(-1) - labels) ** 2).mean()}


class _Trainer(GuardedSteps, AtomicCheckpoints, Trainer):
    """transformers' Trainer with the two mixins that override private methods."""


def test_hooks_on_a_real_trainer(tmp_path):
    torch.manual_seed(0)
    rows = [{"x": torch.randn(4), "labels": torch.randn(())} for _ in range(8)]
    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints"), max_steps=3, per_device_train_batch_size=2,
                             save_strategy="steps", save_steps=1, save_total_limit=2, logging_steps=1,
                             report_to="none", use_cpu=True, disable_tqdm=True)  # fmt: skip
    trainer = _Trainer(model=_Tiny(), args=args, train_dataset=rows)
    trainer.rotate_checkpoints_atomically()
    norms = []
    guard = StepGuard(tmp_path).install(trainer)
    observe = guard.observe_grad_norm
    guard.observe_grad_norm = lambda norm: (norms.append(float(norm)), observe(norm))
    trainer.train()
    root = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["checkpoint-2", "checkpoint-3"]  # ours: keep-last-2
    assert not list((root / STAGING).glob("checkpoint-*"))  # written there, renamed into place
    logged = [r["grad_norm"] for r in trainer.state.log_history if "grad_norm" in r]
    assert len(norms) == 3 and norms == pytest.approx(logged)  # every step's norm, the one the log shows


def test_outside_the_tested_versions_the_trainer_refuses_to_start(monkeypatch, tmp_path):
    import sys

    from qwen35_tune.train.trainer import QwenSFTTrainer

    low, high = patches.TRAINER_HOOK_VERSIONS
    # the module as imported now (importing TRL may replace transformers' lazy module in sys.modules)
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "6.0.0")
    with pytest.raises(UserError, match=rf"6\.0\.0 is outside {low}\.\.{high}.*install transformers>={low},<{high}"):
        QwenSFTTrainer(run_dir=tmp_path)


def test_a_changed_hook_signature_is_named():
    class Changed(Trainer):
        def _get_grad_norm(self, model):  # upstream dropped the argument the override passes on
            return None

    with pytest.raises(patches.UpstreamChanged, match=r"Changed\._get_grad_norm is \(model\), not \(model, grad_n"):
        patches.check_trainer_hooks(Changed)
