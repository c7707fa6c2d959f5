"""``model.init_from``: a stage continues an earlier run. Its adapter is trained further with its weights exactly as
saved (bit-identical at step 0, DPO's reference a frozen copy of it), or its merged weights become the base; the chain
of stages lands in run.json and the merged model's card."""

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
DPO = REPO / "recipes" / "tiny" / "dpo_lora.yaml"
SHORT = ["train.max_steps=1", "train.per_device_train_batch_size=2", "train.max_length=160", "train.logging_steps=1"]


class AtStepZero(TrainerCallback):
    """What the trainer holds when training begins: every adapter's weights, under the names peft saves them."""

    adapters: dict[str, dict[str, torch.Tensor]]
    model = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from peft import get_peft_model_state_dict

        self.model = model
        self.adapters = {name: {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=name)
                                .items()} for name in getattr(model, "peft_config", {})}  # fmt: skip


def _saved(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def _assert_identical(found: dict, saved: dict) -> None:
    assert set(found) == set(saved) and saved
    for key, tensor in saved.items():
        assert found[key].dtype == tensor.dtype and torch.equal(found[key], tensor), key


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory) -> Path:
    from qwen35_tune.train.sft import run_sft

    run_dir = tmp_path_factory.mktemp("sft") / "run"
    run_sft(load_recipe(SFT, [*SHORT, "train.max_steps=2"]), run_dir)  # merged too (export.merge: true)
    return run_dir


def test_dpo_continues_the_sft_adapter_bit_identical_and_records_the_chain(sft_run, tmp_path):
    from qwen35_tune.train.dpo import run_dpo

    watch, run_dir = AtStepZero(), tmp_path / "dpo"
    run_dpo(load_recipe(DPO, [*SHORT, f"model.init_from={sft_run}"]), run_dir, callbacks=(watch,))
    sft_adapter = _saved(sft_run / "adapter")
    _assert_identical(watch.adapters["default"], sft_adapter)  # the trainable adapter starts as the SFT one
    _assert_identical(watch.adapters["ref"], sft_adapter)  # DPO's reference: a frozen copy of it (no second model)
    assert not any(p.requires_grad for n, p in watch.model.named_parameters() if ".ref." in n)
    trained = _saved(run_dir / "adapter")
    assert set(trained) == set(sft_adapter) and not (run_dir / "adapter" / "ref").exists()
    assert any(not torch.equal(trained[k], sft_adapter[k]) for k in trained)  # and one step moved it
    sft_record, record = (json.loads((d / "run.json").read_text()) for d in (sft_run, run_dir))
    assert record["stage"] == "dpo" and record["init_kind"] == "adapter" and record["init_from"] == str(sft_run)
    assert record["base_path"] == sft_record["base_path"]  # merged onto the base the adapter was trained on
    assert [(s["stage"], s["path"], s["init"]) for s in record["stages"]] == [
        ("sft", str(sft_run.resolve()), None), ("dpo", str(run_dir.resolve()), "adapter")]
    card = (run_dir / "merged" / "README.md").read_text()  # exported and verified like an SFT run
    assert "## Stages" in card and "| 1 | sft | lora | run |" in card and "| 2 | dpo | lora | dpo |" in card
    assert "DPO settings (TRL names): beta 0.1, loss_type ['sigmoid']" in card
    assert (run_dir / "merged_verify.json").is_file()


def test_a_second_sft_continues_the_first(sft_run, tmp_path):
    from qwen35_tune.train.sft import run_sft

    watch, run_dir = AtStepZero(), tmp_path / "sft2"
    run_sft(load_recipe(SFT, [*SHORT, f"model.init_from={sft_run / 'adapter'}", "export.merge=false"]), run_dir,
            callbacks=(watch,))
    _assert_identical(watch.adapters["default"], _saved(sft_run / "adapter"))
    assert list(watch.adapters) == ["default"]
    record = json.loads((run_dir / "run.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["sft", "sft"] and record["init_kind"] == "adapter"


def test_merged_weights_become_the_base_of_a_fresh_adapter(sft_run, tmp_path):
    from safetensors.torch import load_file

    from qwen35_tune.train.dpo import run_dpo

    merged, watch, run_dir = sft_run / "merged", AtStepZero(), tmp_path / "dpo-on-merged"
    run_dpo(load_recipe(DPO, [*SHORT, f"model.init_from={merged}"]), run_dir, callbacks=(watch,))
    record = json.loads((run_dir / "run.json").read_text())
    assert record["init_kind"] == "weights" and record["base_path"] == str(merged)
    assert record["base_model"] == "tiny://dense"  # the lineage the card names; the weights are merged/'s
    base = watch.model.get_base_model().state_dict()
    expected = load_file(merged / "model.safetensors")
    key = next(k for k in expected if k.endswith("self_attn.q_proj.weight"))
    assert torch.equal(base[key.replace(".weight", ".base_layer.weight")], expected[key])  # not the tiny base's
    assert all(torch.count_nonzero(v) == 0 for k, v in watch.adapters["default"].items() if "lora_B" in k)  # fresh
    card = (run_dir / "merged" / "README.md").read_text()
    assert "| 2 | dpo | lora | dpo-on-merged | its weights as the base |" in card
