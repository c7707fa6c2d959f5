"""The GDN packed-segments patch: version gate, boundary parsing, and the upstream code it relies on."""

from __future__ import annotations

import inspect

import pytest
import torch

from qwen35_tune import patches


def _upstream_forward(cls):
    return getattr(cls.forward, "_qwen35_tune_original", cls.forward)


@pytest.mark.parametrize("module,name", patches._GDN_CLASSES)
def test_upstream_gdn_still_reads_boundaries_from_cu_seq_lens_q(module, name):
    """The patch assumes forward(hidden_states, cache, attention_mask, **kwargs) and kwargs['cu_seq_lens_q']."""
    import importlib

    forward = _upstream_forward(getattr(importlib.import_module(module), name))
    params = list(inspect.signature(forward).parameters)
    assert params[:4] == ["self", "hidden_states", "cache", "attention_mask"]
    source = inspect.getsource(inspect.unwrap(forward))
    assert 'kwargs.pop("cu_seq_lens_q"' in source
    assert "causal_conv1d_fn(" in source and "**kwargs" in source


def test_installed_transformers_is_in_the_tested_range():
    assert patches.transformers_in_range(*patches.GDN_PATCH_VERSIONS)
    assert not patches.transformers_in_range("0.1", "1.0")


def test_apply_and_remove_round_trip():
    from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5GatedDeltaNet

    was_applied = patches._applied.get("gdn_packed_segments", False)
    upstream = _upstream_forward(Qwen3_5GatedDeltaNet)
    assert patches.apply_gdn_packed_segments()
    assert Qwen3_5GatedDeltaNet.forward._qwen35_tune_original is upstream
    patches.remove_gdn_packed_segments()
    assert Qwen3_5GatedDeltaNet.forward is upstream
    if was_applied:
        patches.apply_gdn_packed_segments()


def test_segment_bounds_must_cover_the_row():
    assert patches._segment_bounds(torch.tensor([0, 3, 10]), 10) == [(0, 3), (3, 10)]
    for bad in ([0, 3, 9], [1, 10], [0, 3, 3, 10]):
        with pytest.raises(ValueError, match="does not split"):
            patches._segment_bounds(torch.tensor(bad), 10)
