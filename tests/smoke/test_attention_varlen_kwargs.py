"""Packed rows and flash-attention's varlen path: what a flash-style attention receives from our packed batches.

flash-attention cannot run on CPU, so a stand-in registered through transformers' ``AttentionInterface`` (with the
flash mask function, as ``flash_attention_2`` gets) records its keyword arguments and attends per sequence of
``cu_seq_lens_q``, the way ``flash_attn_varlen_func`` does. The full-attention layers must receive the collator's
boundaries with no dense mask, and the packed logits must equal the unpacked ones.
"""

from __future__ import annotations

import pytest
import torch

from qwen35_tune import patches
from qwen35_tune.train.collator import BOUNDARY_KEYS, build_collator

LENGTHS = [9, 33, 4, 20]
VARLEN_KEYS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")
SPY = "qwen35_varlen_spy"
seen: list[dict] = []


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Causal attention per packed sequence (query/key/value: [batch, heads, tokens, dim]); records its kwargs."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    seen.append({"mask": attention_mask, **{k: kwargs.get(k) for k in VARLEN_KEYS}})
    cuts = kwargs["cu_seq_lens_q"].tolist() if kwargs.get("cu_seq_lens_q") is not None else [0, query.shape[2]]
    parts = [sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None,
                                    dropout=dropout, scaling=scaling, is_causal=True)[0]
             for a, b in zip(cuts[:-1], cuts[1:], strict=False)]
    return torch.cat(parts, dim=1), None


@pytest.fixture(scope="module")
def model(tiny_dense):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    from qwen35_tune.models.load import load_model

    AttentionInterface.register(SPY, varlen_attention)
    AttentionMaskInterface.register(SPY, flash_attention_mask)
    loaded = load_model(str(tiny_dense), "float32", attn_implementation=SPY)
    loaded.eval()
    return loaded


def test_packed_batch_gives_full_attention_the_varlen_kwargs_and_no_mask(model):
    was_applied = patches._applied.get("gdn_packed_segments", False)
    patches.apply_gdn_packed_segments()  # CPU: the GDN layers take the per-sample path
    try:
        vocab = model.config.get_text_config().vocab_size
        gen = torch.Generator().manual_seed(0)
        samples = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in LENGTHS]
        batch = build_collator(0, packed=True)(
            [{"input_ids": sum(samples, []), "labels": sum(samples, []), "seq_lengths": LENGTHS}]
        )
        seen.clear()
        with torch.no_grad():
            packed = model(input_ids=batch["input_ids"], use_cache=False, **{k: batch[k] for k in BOUNDARY_KEYS})
            calls = list(seen)
            unpacked = [model(input_ids=torch.tensor([s]), use_cache=False).logits for s in samples]
    finally:
        if not was_applied:
            patches.remove_gdn_packed_segments()
    n_full = model.config.get_text_config().layer_types.count("full_attention")
    assert len(calls) == n_full >= 1
    for call in calls:  # what transformers' _flash_attention_forward needs for flash_attn_varlen_func
        assert call["mask"] is None
        assert call["cu_seq_lens_q"].tolist() == call["cu_seq_lens_k"].tolist() == batch["cu_seq_lens_q"].tolist()
        assert call["max_length_q"] == call["max_length_k"] == max(LENGTHS)
    torch.testing.assert_close(packed.logits, torch.cat(unpacked, dim=1), rtol=1e-5, atol=1e-5)
