"""Preemption-safe runs on the tiny model: SIGTERM saves and exits 0, kill -9 then ``--resume auto`` ends with the
same weights as an uninterrupted run (bit-identical on CPU), a kill during a checkpoint write leaves the previous
checkpoint valid, and keep-last-K frees disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import TrainerCallback

from qwen35_tune.cli import main
from qwen35_tune.train.resume import STAGING, find_resume_checkpoint, list_checkpoints

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny" / "sft_lora.yaml"
OVERRIDES = ["train.max_steps=6", "train.per_device_train_batch_size=2", "train.save_strategy=steps",
             "train.save_steps=2", "train.save_total_limit=2", "train.max_length=128", "train.logging_steps=1",
             "export.merge=false"]  # fmt: skip

pytestmark = pytest.mark.smoke


class SignalAt(TrainerCallback):
    """Send this process a signal at the end of a given step (a deterministic stand-in for the scheduler)."""

    def __init__(self, step: int, sig: int):
        self.step, self.sig = step, sig

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.sig)


def _train(run_dir: Path, *extra: str) -> int:
    return main(["train", str(RECIPE), "--output-dir", str(run_dir), *extra, *OVERRIDES])


def _adapter(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    assert _train(run_dir) == 0
    return run_dir


def test_keep_last_k_and_no_staging_left(reference):
    names = [p.name for p in list_checkpoints(reference / "checkpoints")]
    assert names == ["checkpoint-4", "checkpoint-6"]
    assert not any((reference / "checkpoints" / STAGING).glob("checkpoint-*"))


def test_sigterm_then_kill_9_then_resume_auto_equals_uninterrupted(reference, tmp_path):
    run_dir = tmp_path / "run"
    # 1. SIGTERM (SLURM preemption) at step 3: a checkpoint for step 3, training stops, no final weights.
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.sft import run_sft

    recipe = load_recipe(RECIPE, OVERRIDES)
    summary = run_sft(recipe, run_dir, callbacks=(SignalAt(3, signal.SIGTERM),))
    assert summary["preempted"] == signal.SIGTERM and summary["steps"] == 3
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["checkpoint-2", "checkpoint-3"]
    assert not (run_dir / "adapter").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is removed after training

    # 2. resume in a separate process and kill -9 it at step 5 (after checkpoint-4 was written).
    code = (
        "import os, signal, sys\n"
        "from transformers import TrainerCallback\n"
        "from qwen35_tune.recipe import load_recipe\n"
        "from qwen35_tune.train.sft import run_sft\n"
        "class Kill(TrainerCallback):\n"
        "    def on_step_end(self, args, state, control, **kw):\n"
        "        if state.global_step == 5:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        f"run_sft(load_recipe({str(RECIPE)!r}, {OVERRIDES!r}), __import__('pathlib').Path({str(run_dir)!r}),"
        " callbacks=(Kill(),), resume='auto')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert find_resume_checkpoint("auto", run_dir / "checkpoints").endswith("checkpoint-4")

    # 3. --resume auto through the CLI finishes the run: the same weights as never having stopped.
    assert _train(run_dir, "--resume", "auto") == 0
    expected, got = _adapter(reference), _adapter(run_dir)
    assert expected.keys() == got.keys()
    for key, tensor in expected.items():
        assert got[key].equal(tensor), key
