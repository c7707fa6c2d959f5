"""``stage: grpo`` continues an SFT run (``model.init_from``): the adapter the GRPO trainer holds at step 0 is the SFT
run's final adapter, bit for bit, and the chain of stages is recorded in run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from qwen35_tune.recipe import load_recipe

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parents[2]
SFT = REPO / "recipes" / "tiny" / "sft_lora.yaml"
GRPO = REPO / "recipes" / "tiny" / "grpo_math.yaml"
# GRPO's tiny twin uses r 8; a continued adapter keeps its own shape, so the recipe states the SFT run's (16 / 32)
SHAPE = ["method.lora.r=16", "method.lora.lora_alpha=32"]


class AdapterAtStepZero(TrainerCallback):
    """The trainable adapter's weights when training begins, under the names peft saves them with."""

    weights: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from peft import get_peft_model_state_dict

        self.weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def test_grpo_starts_from_the_sft_adapter_bit_identical(tmp_path):
    from safetensors.torch import load_file

    from qwen35_tune.train.grpo import run_grpo
    from qwen35_tune.train.sft import run_sft

    sft_dir, grpo_dir, watch = tmp_path / "sft", tmp_path / "grpo", AdapterAtStepZero()
    run_sft(load_recipe(SFT, ["train.max_steps=2", "train.per_device_train_batch_size=2", "train.max_length=160",
                              "export.merge=false"]), sft_dir)
    run_grpo(load_recipe(GRPO, [*SHAPE, f"model.init_from={sft_dir}", "train.max_steps=1", "export.merge=false",
                                "grpo.num_generations=2", "train.per_device_train_batch_size=2"]),
             grpo_dir, callbacks=(watch,))
    saved = load_file(sft_dir / "adapter" / "adapter_model.safetensors")
    assert saved and set(watch.weights) == set(saved)
    assert any(torch.count_nonzero(v) for k, v in saved.items() if "lora_B" in k)  # a trained adapter, not a fresh one
    for key, tensor in saved.items():
        assert watch.weights[key].dtype == tensor.dtype and torch.equal(watch.weights[key], tensor), key
    record = json.loads((grpo_dir / "run.json").read_text())
    assert record["stage"] == "grpo" and record["init_kind"] == "adapter" and record["init_from"] == str(sft_dir)
    assert [(s["stage"], s["init"]) for s in record["stages"]] == [("sft", None), ("grpo", "adapter")]
