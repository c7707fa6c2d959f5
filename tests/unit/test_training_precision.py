"""Which trainable parameters become fp32 masters, where (not under DeepSpeed / FSDP, which keep their own), when a
run is refused instead, and that the final save gets the load dtype back."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from qwen35_tune.errors import UserError
from qwen35_tune.train.precision import keep_fp32_master_weights


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trained = torch.nn.Linear(4, 4).to(torch.bfloat16)
        self.frozen = torch.nn.Linear(4, 4).to(torch.bfloat16).requires_grad_(False)
        self.adapter = torch.nn.Linear(4, 4)  # fp32 already (peft's autocast_adapter_dtype)


def _trainer(bf16=True, fp16=False, deepspeed=False, fsdp=False):
    callbacks = []
    return SimpleNamespace(model=_Model(), args=SimpleNamespace(bf16=bf16, fp16=fp16), is_deepspeed_enabled=deepspeed,
                           is_fsdp_enabled=fsdp, add_callback=callbacks.append, callbacks=callbacks)


def test_trainable_half_parameters_become_fp32_and_go_back_after_training():
    trainer = _trainer()
    before = trainer.model.trained.weight.detach().clone()
    param = trainer.model.trained.weight
    assert keep_fp32_master_weights(trainer, torch.bfloat16) == 2  # weight and bias
    assert param.dtype == torch.float32 and param.equal(before.float()) and trainer.model.trained.weight is param
    assert trainer.model.frozen.weight.dtype == torch.bfloat16  # frozen: no optimizer, no master needed
    assert trainer.model.adapter.weight.dtype == torch.float32
    (callback,) = trainer.callbacks
    callback.on_train_end(None, None, None)
    assert param.dtype == torch.bfloat16


@pytest.mark.parametrize("strategy", ["deepspeed", "fsdp"])
def test_deepspeed_and_fsdp_keep_their_own_masters(strategy):
    trainer = _trainer(**{strategy: True})
    assert keep_fp32_master_weights(trainer, torch.bfloat16) == 0
    assert trainer.model.trained.weight.dtype == torch.bfloat16 and not trainer.callbacks


def test_half_adapters_on_an_fp32_model_become_fp32_without_autocast():
    """QLoRA: TRL casts the adapters of a quantized model to bf16; the model computes in fp32, so fp32 is safe."""
    trainer = _trainer(bf16=False)
    assert keep_fp32_master_weights(trainer, torch.float32) == 2
    assert trainer.model.trained.weight.dtype == torch.float32


@pytest.mark.parametrize("deepspeed", [False, True])  # DeepSpeed without bf16 keeps no masters either
def test_a_half_model_without_mixed_precision_is_refused_with_the_fix(deepspeed):
    with pytest.raises(UserError, match="train.bf16: false with model.dtype bfloat16.*Set train.bf16: true"):
        keep_fp32_master_weights(_trainer(bf16=False, deepspeed=deepspeed), torch.bfloat16)


def test_under_deepspeed_frozen_fp32_params_are_read_back_at_train_begin(tiny_dense):
    """ZeRO-1/2 casts every parameter to bf16 in deepspeed.initialize, before on_train_begin; frozen fp32 ones
    (LoRA) come back from the checkpoint there, trained ones stay with DeepSpeed (tests/smoke/test_deepspeed_*)."""
    from safetensors.torch import load_file

    from qwen35_tune.models.load import load_model
    from qwen35_tune.train.precision import keep_training_precision

    model = load_model(str(tiny_dense), "float32").requires_grad_(False)
    recipe = SimpleNamespace(model=SimpleNamespace(dtype="bfloat16", revision=None))
    trainer = SimpleNamespace(model=model, args=SimpleNamespace(bf16=True, fp16=False), is_deepspeed_enabled=True,
                              is_fsdp_enabled=False, callbacks=[])
    trainer.add_callback = trainer.callbacks.append
    keep_training_precision(trainer, recipe, str(tiny_dense))
    (callback,) = trainer.callbacks
    model.to(torch.bfloat16)  # what DeepSpeed's engine does to every parameter
    callback.on_train_begin(None, None, None, model=model)
    stored = load_file(tiny_dense / "model.safetensors")
    suffixes = ("linear_attn.A_log", "linear_attn.norm.weight")
    islands = {n: p for n, p in model.named_parameters() if n.endswith(suffixes)}
    assert islands and all(p.dtype == torch.float32 and p.equal(stored[n]) for n, p in islands.items())
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16  # the rest as the engine left it


@pytest.mark.parametrize("bf16", [True, False])
def test_fsdp_says_when_the_fp32_params_compute_from_bf16_copies(bf16, caplog):
    """accelerate's FSDP2 casts every unit to the compute dtype, A_log and the gated norm weight included."""
    from qwen35_tune.train.precision import keep_training_precision

    trainer = _trainer(bf16=bf16, fsdp=True)
    trainer.model.config = SimpleNamespace(model_type="qwen3_5")
    recipe = SimpleNamespace(model=SimpleNamespace(dtype="float32", revision=None))
    with caplog.at_level("WARNING", logger="qwen35_tune.train.precision"):
        keep_training_precision(trainer, recipe, "unused")
    warned = [r.getMessage() for r in caplog.records if "FSDP computes" in r.getMessage()]
    assert bool(warned) == bf16 and not trainer.callbacks
    assert not warned or "linear_attn.A_log" in warned[0] and "from bf16 copies" in warned[0]
