"""Chunked cross-entropy equals the full cross-entropy (loss and gradients) and normalises by the given count."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.chunked_loss import chunked_cross_entropy, count_target_tokens


def _case():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 40, 32, generator=gen, requires_grad=True)
    weight = (0.3 * torch.randn(3000, 32, generator=gen)).requires_grad_()
    labels = torch.randint(0, 3000, (2, 40), generator=gen)
    labels[0, :7] = -100
    labels[1, 30:] = -100
    return hidden, weight, labels


def test_chunked_equals_full_cross_entropy():
    hidden, weight, labels = _case()
    loss = chunked_cross_entropy(hidden, weight, labels, vocab_chunk=256)  # 12 vocabulary tiles, one partial
    grads = torch.autograd.grad(loss, (hidden, weight))
    logits = hidden[:, :-1] @ weight.T
    full = F.cross_entropy(logits.reshape(-1, 3000), labels[:, 1:].reshape(-1), ignore_index=-100)
    full_grads = torch.autograd.grad(full, (hidden, weight))
    assert abs(loss.item() - full.item()) <= 1e-5
    for g, ref in zip(grads, full_grads, strict=True):
        assert (g - ref).abs().max().item() <= 1e-5


def test_loss_is_normalised_by_the_effective_batch_count():
    hidden, weight, labels = _case()
    own = count_target_tokens([{"labels": labels}])
    assert own == int((labels[:, 1:] != -100).sum())
    # Two accumulation steps: each micro-batch divides by the total, so the sum is the mean over all tokens.
    total = own * 2
    halved = chunked_cross_entropy(hidden, weight, labels, num_items_in_batch=total)
    assert abs(2 * halved.item() - chunked_cross_entropy(hidden, weight, labels).item()) <= 1e-5
