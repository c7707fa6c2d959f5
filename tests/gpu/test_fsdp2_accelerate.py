"""GPU only: the tiny model trains under ``accelerate launch --config_file launch/accelerate/fsdp2.yaml``, bf16 with
its fp32 GDN parameters (on CPU accelerate silently skips FSDP, so this cannot run in CI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.gpu
def test_tiny_lora_trains_under_accelerate_fsdp2(tmp_path, kernel_overrides):
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "launch" / "accelerate" / "fsdp2.yaml"), "--num_processes", str(torch.cuda.device_count()),
           "-m", "qwen35_tune", "train", str(REPO / "recipes" / "tiny" / "sft_lora.yaml"), "--output-dir",
           str(tmp_path), "train.max_steps=4", "train.max_length=128", "model.dtype=bfloat16", "export.merge=false",
           *kernel_overrides]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["world_size"] == torch.cuda.device_count()
    assert summary["final_loss"] == summary["final_loss"]  # not NaN
