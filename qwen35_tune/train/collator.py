"""Batch collation for SFT: padded batches, or packed rows flattened into one boundary-carrying row.

Both are TRL's ``DataCollatorForLanguageModeling``. Its padding-free mode, given rows that carry ``seq_lengths``
(from ``data.packing.pack_rows``), already emits everything each Qwen3.5 layer type needs to keep packed samples
apart: ``position_ids`` reset per sample (rotary positions, and the block-diagonal causal mask transformers derives
for the full-attention layers), ``cu_seq_lens_q/k`` + ``max_length_q/k`` (flash-attention varlen and the Gated
DeltaNet kernels), ``seq_idx`` (the causal convolution), and labels ``-100`` on each sample's first token, so no
sample is trained to predict the next one. On the torch path the GDN layers honour the boundaries through
``qwen35_tune.patches``. ``check_packed_batch`` states those invariants; the tests hold the collator to them.
"""

from __future__ import annotations

BOUNDARY_KEYS = ("position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")


def build_collator(pad_token_id: int, packed: bool):
    """The collator for padded rows (``packed=False``) or for packed rows with ``seq_lengths`` (``packed=True``)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    # No pad_to_multiple_of when packed: a padding tail would read as extra one-token samples in the boundaries.
    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=packed)


def check_packed_batch(batch: dict, seq_lengths: list[int]) -> None:
    """Raise AssertionError unless ``batch`` is one flat row whose boundaries match ``seq_lengths`` exactly."""
    import torch

    missing = [k for k in BOUNDARY_KEYS if k not in batch]
    assert not missing, f"packed batch lacks {missing}"
    assert "attention_mask" not in batch, "a packed batch must not carry an attention mask (it hides position_ids)"
    total = sum(seq_lengths)
    shape = tuple(batch["input_ids"].shape)
    assert shape == (1, total), f"expected one row of {total} tokens, got {shape}"
    cuts = torch.tensor([0, *seq_lengths]).cumsum(0)
    assert batch["cu_seq_lens_q"].tolist() == cuts.tolist() == batch["cu_seq_lens_k"].tolist()
    assert batch["max_length_q"] == batch["max_length_k"] == max(seq_lengths)
    positions = torch.cat([torch.arange(n) for n in seq_lengths])
    assert batch["position_ids"][0].tolist() == positions.tolist()
    sample_index = torch.repeat_interleave(torch.arange(len(seq_lengths)), torch.tensor(seq_lengths))
    assert batch["seq_idx"][0].tolist() == sample_index.tolist()
    starts = cuts[:-1]
    assert (batch["labels"][0, starts] == -100).all(), "a sample's first label must be -100 (the row boundary)"
