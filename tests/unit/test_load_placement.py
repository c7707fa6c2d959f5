"""Each process of a launched run loads the checkpoint where its strategy needs it, never a full CPU copy per rank:
DDP / ZeRO-1/2 ranks straight onto their GPU, ZeRO-3 through zero.Init, FSDP's non-zero ranks as meta tensors."""

from __future__ import annotations

import pytest

from qwen35_tune.models import load as load_module
from qwen35_tune.models.placement import placement_for

DDP = {"WORLD_SIZE": "8", "LOCAL_RANK": "3", "RANK": "11"}
FSDP = {**DDP, "ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}


@pytest.mark.parametrize(
    ("env", "on_cuda", "quantized", "zero3", "strategy", "kwargs"),
    [
        ({}, False, False, False, "single", {}),
        ({}, True, False, False, "single", {}),  # one process: one copy, the trainer moves it (merge/eval alike)
        (DDP, True, False, False, "ddp", {"device_map": {"": 3}}),  # the LOCAL rank's GPU, not the global rank
        (DDP, True, True, False, "ddp", {"device_map": {"": 3}}),  # QLoRA under DDP: the same GPU, said explicitly
        ({**DDP, "ACCELERATE_USE_DEEPSPEED": "true"}, True, False, False, "ddp", {"device_map": {"": 3}}),  # ZeRO-2
        (DDP, False, False, False, "ddp", {}),  # gloo on CPU: nowhere else to go
        ({**DDP, "ACCELERATE_USE_DEEPSPEED": "true"}, True, False, True, "zero3", {}),  # zero.Init, no device_map
        ({**DDP, "ACCELERATE_USE_DEEPSPEED": "true"}, True, True, True, "zero3", {}),  # ZeRO-3 refuses a device_map
        (FSDP, True, False, False, "fsdp", {"state_dict": {}}),  # weights come from rank 0's broadcast
        ({**FSDP, "LOCAL_RANK": "0", "RANK": "8"}, True, False, False, "fsdp", {}),  # each node's local rank 0 reads
        ({**FSDP, "FSDP_CPU_RAM_EFFICIENT_LOADING": "false"}, True, False, False, "fsdp", {}),  # warned about
        (FSDP, True, True, False, "fsdp", {}),  # quantized: left to bitsandbytes
    ],
)
def test_placement_per_strategy(env, on_cuda, quantized, zero3, strategy, kwargs):
    placement = placement_for(env, on_cuda, quantized, zero3)
    assert (placement.strategy, placement.kwargs) == (strategy, kwargs)
    assert placement.weights_from_rank0 == ("state_dict" in kwargs)


def test_load_model_passes_the_placement_to_from_pretrained(monkeypatch, tiny_dense):
    seen = {}

    class Recorder:
        @classmethod
        def from_pretrained(cls, path, **kwargs):
            seen.update(kwargs)
            raise RuntimeError("stop here")

    monkeypatch.setattr(load_module, "model_class", lambda config: Recorder)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    for key, value in DDP.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match="stop here"):
        load_module.load_model(str(tiny_dense), "float32")
    assert seen["device_map"] == {"": 3}


def test_fsdp_meta_rank_loads_no_weights_but_real_buffers(monkeypatch, tiny_dense):
    """transformers' own rank-0-only path, entered with an empty state dict: parameters stay meta (accelerate fills
    them from rank 0), non-persistent buffers such as the rotary frequencies are real and equal rank 0's."""
    import torch
    import torch.distributed as dist

    from qwen35_tune.models.fp32_params import restore_fp32_params

    rank0 = load_module.load_model(str(tiny_dense), "bfloat16")
    for key, value in FSDP.items():
        monkeypatch.setenv(key, value)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = load_module.load_model(str(tiny_dense), "bfloat16")
    finally:
        dist.destroy_process_group()
    suffixes = ("linear_attn.A_log", "linear_attn.norm.weight")
    for m in (rank0, model):  # the same fp32 islands on every rank, as FSDP's broadcast needs
        restore_fp32_params(m, str(tiny_dense), suffixes)
    assert {n: p.dtype for n, p in model.named_parameters()} == {n: p.dtype for n, p in rank0.named_parameters()}
    params = dict(model.named_parameters())
    assert params and all(p.device.type == "meta" for p in params.values())
    assert {n: p.shape for n, p in params.items()} == {n: p.shape for n, p in rank0.named_parameters()}
    buffers = dict(model.named_buffers())
    assert buffers and all(b.device.type == "cpu" for b in buffers.values())
    expected = dict(rank0.named_buffers())
    assert all(torch.equal(buffers[n], expected[n]) for n in expected)
    assert model.config.name_or_path == str(tiny_dense)
