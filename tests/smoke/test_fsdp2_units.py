"""FSDP2 on the tiny Qwen3.5 models, with ``fully_shard`` called directly on CPU (gloo): accelerate and the Trainer
silently skip FSDP on CPU, so the accelerate-FSDP training run is a GPU test. Shows the wrap units (decoder layers,
vision blocks, fp32 gated-norm islands) and that the fp32 Gated DeltaNet parameters no longer break FSDP2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("fsdp2_probe.py")
REPO = Path(__file__).resolve().parents[2]
LAUNCH_FSDP2 = REPO / "launch" / "accelerate" / "fsdp2.yaml"

pytestmark = pytest.mark.smoke


def _port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="module")
def probed() -> dict:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": _port(), "RANK": "0", "WORLD_SIZE": "1"}
    cases = ["dense:naive", "dense:full", "dense:lora", "vision:full"]
    result = subprocess.run([sys.executable, str(PROBE), *cases], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
    assert result.returncode == 0 and line, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(line[-1].removeprefix("RESULT "))


def test_naive_layer_wrapping_breaks_on_the_fp32_gdn_params(probed):
    # What upstream FSDP2 does today; if this stops failing, qwen35_tune.train.fsdp2 can become plain wrapping.
    assert "uniform original parameter dtype" in probed["dense:naive"]["error"]


def test_full_finetune_units_and_fp32_gated_norm(probed):
    r = probed["dense:full"]
    kinds = [(name, kind) for name, kind, _, _ in r["units"]]
    assert kinds == [("model.layers.0.linear_attn.norm", "fp32_island"), ("model.layers.0", "block"),
                     ("model.layers.1.linear_attn.norm", "fp32_island"), ("model.layers.1", "block"),
                     ("model.layers.2.linear_attn.norm", "fp32_island"), ("model.layers.2", "block"),
                     ("model.layers.3", "block"), ("<root>", "root")]  # fmt: skip
    seen = r["seen"]
    assert {v for k, v in seen.items() if k.endswith("norm.weight")} == {"Parameter:float32"}  # computes in fp32
    assert {v for k, v in seen.items() if k.endswith("in_proj_z.weight")} == {"Parameter:bfloat16"}
    assert r["stored"] == ["A_log:float32", "dt_bias:float32", "weight:float32"]  # fp32 masters, uniform units
    assert r["grads_finite"] and len(r["with_grad"]) == r["num_trainable"]
    assert r["loss"] == pytest.approx(r["reference_loss"], rel=1e-2)


def test_lora_keeps_frozen_fp32_params_exact(probed):
    r = probed["dense:lora"]
    assert sum(kind == "fp32_island" for _, kind, _, _ in r["units"]) == 3
    # A_log is frozen: left out of sharding, it computes in fp32 as stored; the frozen base stays bf16
    assert {v for k, v in r["seen"].items() if k.endswith("A_log")} == {"Parameter:float32"}
    assert {v for k, v in r["seen"].items() if k.endswith("in_proj_z.weight")} == {"Parameter:bfloat16"}
    assert "dt_bias:bfloat16" in r["stored"]
    assert r["grads_finite"] and r["num_trainable"] == len(r["with_grad"]) > 0
    assert all("lora_" in name for name in r["with_grad"])
    assert r["loss"] == pytest.approx(r["reference_loss"], rel=1e-2)


def test_vision_blocks_are_units_too(probed):
    r = probed["vision:full"]
    blocks = [name for name, kind, _, _ in r["units"] if kind == "block"]
    assert blocks[:2] == ["model.visual.blocks.0", "model.visual.blocks.1"]
    assert sum(n.startswith("model.language_model.layers.") for n in blocks) == 4
    assert r["grads_finite"] and any(n.startswith("model.language_model") for n in r["with_grad"])


def test_launch_config_wraps_the_same_block_classes():
    """launch/accelerate/fsdp2.yaml names every class transformers lists as unsplittable, for all Qwen3.5 variants."""
    import transformers
    import yaml

    config = yaml.safe_load(LAUNCH_FSDP2.read_text())["fsdp_config"]
    assert config["fsdp_version"] == 2 and config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    listed = set(config["fsdp_transformer_layer_cls_to_wrap"].split(","))
    wanted: set[str] = set()
    for name in ("Qwen3_5ForConditionalGeneration", "Qwen3_5ForCausalLM", "Qwen3_5MoeForConditionalGeneration",
                 "Qwen3_5MoeForCausalLM"):  # fmt: skip
        wanted |= set(getattr(transformers, name)._no_split_modules)
    assert wanted and wanted <= listed, wanted - listed
