"""Tiny runs through the real trainer: what a run reports is true and nothing is lost.

- a 1-step run (no step reaches logging_steps) finishes with exit 0 and a loss in its summary;
- one run directory, one run: a second fresh run is refused, --overwrite replaces, --resume checks the recipe, a
  running run's lock refuses another;
- the first NaN loss or infinite gradient norm stops the run at that step, before it is saved, naming the last good
  checkpoint; a full disk during a checkpoint is exit 2 with the surviving checkpoint;
- packed vision rows log the real number of tokens (the same total as unpacked);
- published tokenizer configs carry no is_local / local paths.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from transformers import Trainer, TrainerCallback

from qwen35_tune.cli import main
from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.resume import STAGING, list_checkpoints

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny" / "sft_lora.yaml"
FAST = ["train.per_device_train_batch_size=2", "train.max_length=64", "export.merge=false"]
LOCK_NAME = "run.lock"

pytestmark = pytest.mark.smoke


def strict_rows(path: Path) -> list[dict]:
    def refuse(token):
        raise AssertionError(f"{path} is not strict JSON: {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines() if line.strip()]


def _train(run: Path, *extra: str, capsys=None) -> tuple[int, str]:
    code = main(["train", str(RECIPE), "--output-dir", str(run), *FAST, *extra])
    text = ""
    if capsys is not None:
        out = capsys.readouterr()
        text = " ".join((out.out + out.err).split())
        assert "Traceback" not in text
    return code, text


def test_one_step_run_reports_its_loss(tmp_path, capsys):
    code, text = _train(tmp_path / "run", "train.max_steps=1", capsys=capsys)  # logging_steps is 2
    assert code == 0, text
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["final_loss"] is None and summary["train_loss"] > 0
    assert "mean loss" in text and "done: 1 steps" in text
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released


def test_one_run_per_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "train.max_steps=2", "export.merge=true", capsys=capsys)[0] == 0
    for folder in ("adapter", "merged"):  # what gets published describes no machine
        config = json.loads((run / folder / "tokenizer_config.json").read_text())
        assert not {"is_local", "local_files_only"} & set(config), folder
    first = (run / "metrics.jsonl").read_text()

    code, text = _train(run, "train.max_steps=2", capsys=capsys)
    assert code == 2 and "already holds a run" in text and "--resume auto" in text and "--overwrite" in text
    assert (run / "metrics.jsonl").read_text() == first  # nothing written twice

    code, text = _train(run, "train.max_steps=2", "method.lora.r=4", "--resume", "auto", capsys=capsys)
    assert code == 2 and "method.lora.r: 16 -> 4" in text
    assert _train(run, "train.max_steps=3", "--resume", "auto", capsys=capsys)[0] == 0  # longer: allowed
    assert (run / "recipe.prev-1.yaml").exists() and "max_steps: 2" in (run / "recipe.prev-1.yaml").read_text()

    from qwen35_tune.train.run_lock import RunLock

    with RunLock(run):  # a run in progress
        code, text = _train(run, "--resume", "auto", capsys=capsys)
    assert code == 2 and "in use by another training run" in text

    code, text = _train(run, "train.max_steps=1", "--overwrite", capsys=capsys)
    assert code == 0, text
    assert not (run / "merged").exists() and not (run / "recipe.prev-1.yaml").exists()
    rows = strict_rows(run / "metrics.jsonl")  # the old rows (steps 1-3) are gone; step 1 end + eval rows stay
    assert rows and {r["step"] for r in rows} == {1} and any("eval_loss" in r for r in rows)


class PoisonAfter(TrainerCallback):
    """At the end of step N, make one LoRA weight NaN (the next step's loss is NaN)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            import torch

            with torch.no_grad():
                next(p for n, p in model.named_parameters() if "lora_A" in n).fill_(float("nan"))


class InfiniteGradAt(TrainerCallback):
    """From step N on, every LoRA gradient is infinite (the loss itself stays finite)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.register_hook(lambda g: g * float("inf"))


@pytest.mark.parametrize("callback, stop, what", [(PoisonAfter(2), 3, "the loss is NaN"),
                                                  (InfiniteGradAt(3), 3, "the gradient norm is inf")])
def test_non_finite_training_stops_before_saving(callback, stop, what, tmp_path):
    from qwen35_tune.train.sft import run_sft

    run = tmp_path / "run"
    recipe = load_recipe(RECIPE, [*FAST, "train.max_steps=6", "train.logging_steps=1", "train.save_strategy=steps",
                                  "train.save_steps=1"])  # fmt: skip
    with pytest.raises(UserError) as info:
        run_sft(recipe, run, callbacks=(callback,))
    message = str(info.value)
    assert f"stopped at step {stop}" in message and what in message
    assert str(run / "checkpoints" / f"checkpoint-{stop - 1}") in message
    assert [p.name for p in list_checkpoints(run / "checkpoints")][-1] == f"checkpoint-{stop - 1}"  # no bad one
    rows = strict_rows(run / "metrics.jsonl")
    assert rows[-1]["step"] == stop and rows[-1]["stopped"].startswith("non-finite")
    assert all(r["step"] < stop for r in rows[:-1])  # the steps before it are kept
    assert not (run / "adapter").exists() and not (run / LOCK_NAME).exists()
    report = (run / "report.html").read_text()  # a failed run still gets its report, saying why it failed
    assert '<span class="badge failed">' in report and what in report and f"stopped at step {stop}" in report


def test_disk_full_during_a_checkpoint_is_exit_2_and_the_previous_survives(tmp_path, capsys, monkeypatch):
    original = Trainer._save_checkpoint
    calls = []

    def full_disk(self, model, trial):
        calls.append(self.state.global_step)
        if len(calls) == 1:
            return original(self, model, trial)
        partial = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
        partial.mkdir(parents=True)
        (partial / "adapter_model.safetensors").write_bytes(b"\0" * 1024)  # half written
        raise OSError(errno.ENOSPC, "No space left on device", str(partial / "optimizer.pt"))

    monkeypatch.setattr(Trainer, "_save_checkpoint", full_disk)
    run = tmp_path / "run"
    code, text = _train(run, "train.max_steps=4", "train.save_strategy=steps", "train.save_steps=2", capsys=capsys)
    assert code == 2, text
    assert "disk is full" in text and "GiB free" in text and "--resume auto" in text
    assert "checkpoint-2 is intact" in text
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["checkpoint-2"]
    assert not list((run / "checkpoints" / STAGING).glob("checkpoint-*"))  # the partial one is gone


def test_packed_vision_logs_real_tokens(tmp_path):
    vision = REPO / "recipes" / "tiny" / "vision_lora.yaml"
    common = ["data.cards.0.max_samples=24", "train.max_steps=-1", "train.num_train_epochs=1",
              "train.per_device_train_batch_size=4", "train.logging_steps=1", "export.merge=false"]
    totals = {}
    for packed in (False, True):
        run = tmp_path / f"packed-{packed}"
        extra = ["train.packing=true", "train.packing_length=128"] if packed else []
        assert main(["train", str(vision), "--output-dir", str(run), *common, *extra]) == 0
        counts = [r["num_tokens"] for r in strict_rows(run / "metrics.jsonl") if "loss" in r]
        assert counts == sorted(counts) and counts[0] > 20 * 4 // 2  # cumulative, whole rows (not 1, 2, ...)
        totals[packed] = counts[-1]
    stats = json.loads((tmp_path / "packed-True" / "data_stats.json").read_text())["packing"]
    assert totals[True] == totals[False] == stats["tokens"]


def test_wandb_named_but_missing_is_refused_before_the_data(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    code, text = _train(tmp_path / "run", "tracking.report_to=[wandb]", capsys=capsys)
    assert code == 2 and "tracking.report_to: wandb is not installed" in text
    assert not (tmp_path / "run").exists()
