"""Under ZeRO-3 the MoE blocks are registered as DeepSpeed leaf modules (on the loaded tiny MoE checkpoint)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.smoke


def test_zero3_registers_moe_blocks_as_leaves(tiny_moe, monkeypatch):
    pytest.importorskip("deepspeed")
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations import deepspeed as hf_ds

    from qwen35_tune.train.distributed import moe_block_classes, prepare_for_strategy

    model = AutoModelForCausalLM.from_pretrained(tiny_moe, dtype=torch.float32)
    assert [c.__name__ for c in moe_block_classes(model)] == ["Qwen3_5MoeSparseMoeBlock"]
    prepare_for_strategy(model)  # not under ZeRO-3: nothing marked
    assert not any(getattr(m, "_z3_leaf", False) for m in model.modules())
    monkeypatch.setattr(hf_ds, "is_deepspeed_zero3_enabled", lambda: True)
    prepare_for_strategy(model)
    leaves = [type(m).__name__ for m in model.modules() if getattr(m, "_z3_leaf", False)]
    assert leaves and set(leaves) == {"Qwen3_5MoeSparseMoeBlock"}
