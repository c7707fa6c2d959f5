"""Packed equals unpacked: same weights, per-sample loss and gradients, for the tiny dense, MoE and vision models.

Samples of different lengths (one longer than a 64-token GDN chunk) share one packed row built by our collator.
A negative control removes the boundary handling and shows the leak the patch prevents.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwen35_tune import patches
from qwen35_tune.train.collator import BOUNDARY_KEYS, build_collator, check_packed_batch

LENGTHS = [7, 70, 3, 41]
pytestmark = pytest.mark.skipif(patches.varlen_kernels_available(), reason="checks the torch path (no fla kernels)")


@pytest.fixture
def gdn_patch():
    was_applied = patches._applied.get("gdn_packed_segments", False)
    assert patches.apply_gdn_packed_segments()
    yield
    if not was_applied:
        patches.remove_gdn_packed_segments()


@pytest.fixture(scope="module", params=["dense", "moe", "vision"])
def case(request):
    from qwen35_tune.models.load import load_model

    model = load_model(str(request.getfixturevalue(f"tiny_{request.param}")), "float32")
    model.eval()  # no dropout; gradients still flow
    vocab = model.config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(0)
    samples = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in LENGTHS]
    labels = [[-100] * 2 + s[2:] for s in samples]  # a masked "prompt" at each sample's start
    batch = build_collator(0, packed=True)(
        [{"input_ids": sum(samples, []), "labels": sum(labels, []), "seq_lengths": LENGTHS}]
    )
    check_packed_batch(batch, LENGTHS)
    return model, samples, labels, batch


def _sample_loss(logits: torch.Tensor, labels: list[int]) -> torch.Tensor:
    targets = torch.tensor(labels[1:])
    return F.cross_entropy(logits[0, :-1], targets, ignore_index=-100, reduction="sum") / (targets != -100).sum()


def _losses_and_grads(model, forward) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    losses = forward()
    torch.stack(losses).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return torch.stack(losses).detach(), grads


def _unpacked(model, samples, labels):
    return [_sample_loss(model(input_ids=torch.tensor([s]), use_cache=False).logits, lab)
            for s, lab in zip(samples, labels, strict=True)]  # fmt: skip


def _packed(model, labels, batch, keys):
    logits = model(input_ids=batch["input_ids"], use_cache=False, **{k: batch[k] for k in keys}).logits
    starts = [0, *torch.tensor(LENGTHS).cumsum(0).tolist()]
    return [_sample_loss(logits[:, a:b], lab) for a, b, lab in zip(starts, starts[1:], labels, strict=False)]


def _grad_gap(grads: dict, ref: dict) -> float:
    """Largest gradient difference relative to the largest reference gradient (fp32 sums differ in order)."""
    scale = max(g.abs().max().item() for g in ref.values())
    return max((grads[n] - ref[n]).abs().max().item() for n in ref) / scale


def test_packed_equals_unpacked_loss_and_gradients(case, gdn_patch):
    model, samples, labels, batch = case
    ref_loss, ref_grads = _losses_and_grads(model, lambda: _unpacked(model, samples, labels))
    loss, grads = _losses_and_grads(model, lambda: _packed(model, labels, batch, BOUNDARY_KEYS))
    assert set(grads) == set(ref_grads)
    assert (loss - ref_loss).abs().max().item() <= 1e-5, (loss, ref_loss)
    assert _grad_gap(grads, ref_grads) <= 1e-5


def test_without_boundaries_samples_leak(case):
    """Negative control: position_ids alone (TRL's padding-free contract on this path) mixes the samples."""
    model, samples, labels, batch = case
    was_applied = patches._applied.get("gdn_packed_segments", False)
    patches.remove_gdn_packed_segments()
    try:
        ref_loss, ref_grads = _losses_and_grads(model, lambda: _unpacked(model, samples, labels))
        loss, grads = _losses_and_grads(model, lambda: _packed(model, labels, batch, ["position_ids"]))
    finally:
        if was_applied:
            patches.apply_gdn_packed_segments()
    assert (loss - ref_loss).abs().max().item() > 1e-2
    assert _grad_gap(grads, ref_grads) > 1e-2


def test_upstream_torch_path_still_refuses_boundaries(case):
    """If this fails, transformers' torch fallback now handles packed rows itself: drop patches.gdn_packed_segments."""
    model, _, labels, batch = case
    was_applied = patches._applied.get("gdn_packed_segments", False)
    patches.remove_gdn_packed_segments()
    try:
        with pytest.raises(ValueError, match="can't keep packed sequences apart"), torch.no_grad():
            _packed(model, labels, batch, BOUNDARY_KEYS)
    finally:
        if was_applied:
            patches.apply_gdn_packed_segments()
