"""DPO's reference policy costs no second model for LoRA / QLoRA (the base with the adapter switched off: TRL gets
no ``ref_model``); only a full fine-tune gets an explicit frozen copy, which training leaves as it started."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwen35_tune.recipe import load_recipe

pytestmark = pytest.mark.smoke

REPO = Path(__file__).resolve().parents[2]
DPO = REPO / "recipes" / "tiny" / "dpo_lora.yaml"
SHORT = ["train.max_steps=1", "train.per_device_train_batch_size=2", "train.max_length=160", "train.logging_steps=1",
         "export.merge=false"]


@pytest.fixture
def trained(monkeypatch):
    """Runs run_dpo and hands back the trainer, with the reference's weights as training starts."""
    from qwen35_tune.train.trainer import QwenDPOTrainer

    seen = {}
    train = QwenDPOTrainer.train

    def watched(self, *args, **kwargs):
        seen["trainer"] = self
        if self.ref_model is not None:
            seen["reference_at_start"] = {k: v.detach().clone() for k, v in self.ref_model.state_dict().items()}
            seen["policy_at_start"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return train(self, *args, **kwargs)

    monkeypatch.setattr(QwenDPOTrainer, "train", watched)

    def run(tmp_path: Path, *overrides: str):
        from qwen35_tune.train.dpo import run_dpo

        run_dpo(load_recipe(DPO, [*SHORT, *overrides]), tmp_path / "run")
        return seen

    return run


def test_lora_reference_is_the_base_with_the_adapter_off(trained, tmp_path):
    seen = trained(tmp_path)
    trainer = seen["trainer"]
    assert trainer.ref_model is None  # no second model: TRL scores the reference under disable_adapter()
    assert list(trainer.model.peft_config) == ["default"]  # and no frozen adapter copy for a fresh adapter
    assert not any("ref" in name.split(".") for name, _ in trainer.model.named_parameters())


def test_full_fine_tune_gets_a_frozen_reference_copy(trained, tmp_path):
    seen = trained(tmp_path, "method.kind=full", "train.learning_rate=1e-3")
    trainer, reference = seen["trainer"], seen["trainer"].ref_model
    assert reference is not None and reference is not trainer.model
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    policy_ptrs = {p.data_ptr() for p in trainer.model.parameters()}
    assert not any(p.data_ptr() in policy_ptrs for p in reference.parameters())  # a copy, not shared storage
    start = seen["reference_at_start"]
    assert set(start) == set(seen["policy_at_start"])
    assert all(torch.equal(start[k], seen["policy_at_start"][k]) for k in start)  # the starting weights
    after = reference.state_dict()
    assert all(torch.equal(after[k], start[k]) for k in start)  # frozen through training
    moved = trainer.model.state_dict()
    assert any(not torch.equal(moved[k], start[k]) for k in start)  # while the policy trained


@pytest.mark.parametrize("kind", ["lora", "qlora"])
def test_adapter_methods_never_load_a_reference(kind):
    """QLoRA (GPU only) takes the adapter path too: no weights are loaded for a reference."""
    from types import SimpleNamespace

    from qwen35_tune.train.dpo import _reference_model

    class NoLoad:
        def load_weights(self, _):
            raise AssertionError("a reference model was loaded")

    recipe = load_recipe(DPO, [f"method.kind={kind}"])
    assert _reference_model(recipe, NoLoad(), SimpleNamespace(precompute_ref_log_probs=False)) is None
    full = load_recipe(DPO, ["method.kind=full", "dpo.precompute_ref_log_probs=true"])
    scored_up_front = SimpleNamespace(precompute_ref_log_probs=True)  # DPOConfig's, from dpo.precompute_ref_log_probs
    assert _reference_model(full, NoLoad(), scored_up_front) is None
