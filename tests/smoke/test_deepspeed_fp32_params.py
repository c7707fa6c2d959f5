"""Qwen3.5's fp32 parameters under DeepSpeed (2 gloo processes on CPU, bf16 on): ZeRO-1/2 casts every parameter to
bf16 when the engine starts, and frozen fp32 ones (LoRA) are read back; ZeRO-3 holds them as bf16 shards from the
load on, which is reported instead of claimed. Both keep fp32 master copies of what trains (no double upcast)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.smoke
REPO = Path(__file__).resolve().parents[2]
SUFFIXES = ("linear_attn.A_log", "linear_attn.norm.weight")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A bf16 tiny checkpoint whose fp32 parameters hold values bf16 cannot represent (so rounding shows)."""
    import torch
    from safetensors.torch import load_file, save_file

    from qwen35_tune.models.tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint("dense", tmp_path_factory.mktemp("ds") / "ckpt", dtype="bfloat16")
    tensors = load_file(path / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    for name in [n for n in tensors if n.endswith(SUFFIXES)]:
        tensors[name] = tensors[name] + 1e-3 * torch.rand(tensors[name].shape, generator=generator)
        assert not tensors[name].equal(tensors[name].bfloat16().float())
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _probe(stage: int, mode: str, checkpoint: Path, out: Path) -> dict:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(REPO / "tests/smoke/deepspeed_probe.py"), str(stage), mode, str(checkpoint), str(out)]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(out.read_text())


def test_zero2_reads_frozen_fp32_params_back_after_the_engine_cast(checkpoint, tmp_path):
    report = _probe(2, "frozen", checkpoint, tmp_path / "zero2.json")
    params = report["params"]
    assert params and all(p["dtype"] == "float32" and p["equal_checkpoint"] for p in params.values())
    assert any("after DeepSpeed's bf16 cast" in line for line in report["logs"])
    assert report["master_dtypes"] == ["float32"]  # DeepSpeed's own masters for what trains


def test_zero3_says_the_fp32_params_are_bf16_shards(checkpoint, tmp_path):
    report = _probe(3, "full", checkpoint, tmp_path / "zero3.json")
    params = report["params"]
    assert params and all(p["dtype"] == "bfloat16" and not p["equal_checkpoint"] for p in params.values())
    assert any(line.startswith("WARNING: DeepSpeed ZeRO-3 holds") for line in report["logs"])
    assert not any("in fp32" in line and line.startswith("INFO: kept") for line in report["logs"])
    assert report["master_dtypes"] == ["float32"]
