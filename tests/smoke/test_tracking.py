"""Tracking: one tiny run with ``tracking.report_to: [tensorboard, wandb]`` (wandb offline). Each tracker gets the run
config (recipe name, model, data cards, git revision) from rank 0, and no token from the environment is written
anywhere: run directory, tensorboard events, wandb files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from qwen35_tune.cli import main
from qwen35_tune.train.tracking import git_revision

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny" / "sft_lora.yaml"
SECRET = "hf_DoNotLogMe0123456789abcdef"
HAS_WANDB = importlib.util.find_spec("wandb") is not None  # the [wandb] extra; tensorboard is in [dev]

pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("tensorboard")
    trackers = "[tensorboard,wandb]" if HAS_WANDB else "[tensorboard]"
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", SECRET)
        mp.setenv("WANDB_API_KEY", SECRET[::-1])
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_DIR", str(root / "wandb"))
        mp.delenv("WANDB_PROJECT", raising=False)  # restored after: the run sets it from tracking.project
        (root / "wandb").mkdir()
        code = main(["train", str(RECIPE), "--output-dir", str(root / "run"), f"tracking.report_to={trackers}",
                     "tracking.project=qwen35-tests", "train.max_steps=2", "train.per_device_train_batch_size=2",
                     "train.max_length=64", "export.merge=false"])  # fmt: skip
        if HAS_WANDB:
            import wandb

            wandb.finish()  # what process exit does; flushes the offline run
    assert code == 0
    return root / "run", root / "wandb"


def test_run_config_in_the_run_dir(tracked):
    config = json.loads((tracked[0] / "run_config.json").read_text())
    assert config["recipe"] == "tiny-sft-lora" and config["model"] == "tiny://dense"
    assert [c["name"] for c in config["data_cards"]] == ["tiny_chat"]
    assert config["git_revision"] == git_revision()


def test_tensorboard_event_has_run_config_and_metrics(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = json.loads((tracked[0] / "run_config.json").read_text())
    events = list((tracked[0] / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]), size_guidance={"tensors": 0})
    acc.Reload()
    logged = json.loads(acc.Tensors("qwen35_tune/run_config/text_summary")[0].tensor_proto.string_val[0])
    assert logged == config and logged["recipe"] == "tiny-sft-lora"
    if config["git_revision"]:  # None only outside a git checkout
        assert logged["git_revision"] == config["git_revision"]
    assert "train/loss" in acc.Tags()["scalars"]


@pytest.mark.skipif(not HAS_WANDB, reason="wandb not installed (pip install 'qwen35-tune[wandb]')")
def test_wandb_offline_run_has_provenance(tracked):
    runs = list(tracked[1].rglob("run-*.wandb"))
    assert len(runs) == 1, "wandb wrote no offline run"
    text = runs[0].read_bytes().decode("utf-8", "replace")
    assert "qwen35_tune" in text and "tiny-sft-lora" in text and "tiny_chat" in text and "git_revision" in text
    assert "qwen35-tests" in text  # tracking.project became the wandb project


def test_no_token_written_anywhere(tracked):
    files = [p for folder in tracked for p in folder.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data and SECRET[::-1].encode() not in data, path
