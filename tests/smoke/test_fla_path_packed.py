"""The fla-only GPU path on CPU: packed rows take the varlen route (no per-sample fallback) and equal unpacked rows.

With flash-linear-attention but no causal-conv1d, ``check_kernels`` binds fla's convolution; transformers then hands
``cu_seq_lens_q`` to fla's chunk kernel and our adapter hands it to fla's convolution. fla cannot run on CPU, so torch
statements of both fla functions stand in (the convolution's from tests/unit/test_fla_conv_binding.py; the chunk's is
transformers' own torch recurrence run per sequence of ``cu_seqlens``, which is what fla's varlen kernel computes).
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
import torch.nn.functional as F

from qwen35_tune import patches
from qwen35_tune.train.collator import BOUNDARY_KEYS, build_collator, check_packed_batch
from tests.unit.test_fla_conv_binding import reference_fla_causal_conv1d

LENGTHS = [7, 70, 3, 41]


def _reference_varlen_chunk(torch_chunk, calls: list):
    def chunk_gated_delta_rule(query, key, value, g, beta, cu_seqlens=None, initial_state=None,
                               output_final_state=False, use_qk_l2norm_in_kernel=False, **_):
        calls.append(None if cu_seqlens is None else cu_seqlens.tolist())
        cuts = [0, query.shape[1]] if cu_seqlens is None else cu_seqlens.tolist()
        parts = [torch_chunk(query[:, a:b], key[:, a:b], value[:, a:b], g=g[:, a:b], beta=beta[:, a:b],
                             initial_state=initial_state, output_final_state=output_final_state,
                             use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel)[0]
                 for a, b in zip(cuts[:-1], cuts[1:], strict=False)]
        return torch.cat(parts, dim=1), None

    chunk_gated_delta_rule._qwen35_tune_binding = "fla chunk (test reference)"
    return chunk_gated_delta_rule


@pytest.fixture
def fla_path(monkeypatch):
    """fla's chunk kernel 'bound' by transformers and our fla convolution binding applied, as on an fla-only GPU."""
    calls: list = []
    for name, _ in patches._GDN_CLASSES:
        module = importlib.import_module(name)
        chunk = _reference_varlen_chunk(inspect.unwrap(module.torch_chunk_gated_delta_rule), calls)
        monkeypatch.setattr(module, "torch_chunk_gated_delta_rule", chunk)
    patches.remove_fla_causal_conv1d()
    assert patches.apply_fla_causal_conv1d(reference_fla_causal_conv1d)
    was_applied = patches._applied.get("gdn_packed_segments", False)
    patches.apply_gdn_packed_segments()  # installed, as train does before the model exists; it must step aside
    yield calls
    patches.remove_fla_causal_conv1d()
    if not was_applied:
        patches.remove_gdn_packed_segments()


@pytest.fixture(scope="module", params=["dense", "moe"])
def case(request):
    from qwen35_tune.models.load import load_model

    model = load_model(str(request.getfixturevalue(f"tiny_{request.param}")), "float32")
    model.eval()
    vocab = model.config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(0)
    samples = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in LENGTHS]
    labels = [[-100] * 2 + s[2:] for s in samples]
    batch = build_collator(0, packed=True)(
        [{"input_ids": sum(samples, []), "labels": sum(labels, []), "seq_lengths": LENGTHS}]
    )
    check_packed_batch(batch, LENGTHS)
    return request.param, model, samples, labels, batch


def _sample_loss(logits, labels):
    targets = torch.tensor(labels[1:])
    return F.cross_entropy(logits[0, :-1], targets, ignore_index=-100, reduction="sum") / (targets != -100).sum()


def _loss_and_grads(model, losses_fn):
    model.zero_grad()
    losses = torch.stack(losses_fn())
    losses.sum().backward()
    return losses.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fla_path_packed_equals_unpacked_through_the_varlen_kernels(case, fla_path):
    kind, model, samples, labels, batch = case
    modeling = patches.MOE_MODELING if kind == "moe" else patches.DENSE_MODELING
    assert patches.varlen_kernels_available(modeling)  # so the per-sample fallback steps aside

    def unpacked():
        return [_sample_loss(model(input_ids=torch.tensor([s]), use_cache=False).logits, lab)
                for s, lab in zip(samples, labels, strict=True)]  # fmt: skip

    def packed():
        logits = model(input_ids=batch["input_ids"], use_cache=False, **{k: batch[k] for k in BOUNDARY_KEYS}).logits
        cuts = [0, *torch.tensor(LENGTHS).cumsum(0).tolist()]
        return [_sample_loss(logits[:, a:b], lab) for a, b, lab in zip(cuts, cuts[1:], labels, strict=False)]

    ref_loss, ref_grads = _loss_and_grads(model, unpacked)
    fla_path.clear()
    loss, grads = _loss_and_grads(model, packed)
    n_gdn = sum(t == "linear_attention" for t in model.config.get_text_config().layer_types)
    assert fla_path == [batch["cu_seq_lens_q"].tolist()] * n_gdn  # one varlen call per GDN layer, not per sample
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    scale = max(g.abs().max().item() for g in ref_grads.values())
    assert set(grads) == set(ref_grads)
    assert max((grads[n] - ref_grads[n]).abs().max().item() for n in ref_grads) / scale <= 1e-5


def test_fla_binding_changes_nothing_on_an_unpacked_row(case):
    """The bound convolution (layout, weight, activation, dtype) gives transformers' torch logits on a plain row."""
    _, model, samples, _, _ = case
    ids = torch.tensor([samples[1]])
    patches.remove_fla_causal_conv1d()
    with torch.no_grad():
        torch_logits = model(input_ids=ids, use_cache=False).logits
        assert patches.apply_fla_causal_conv1d(reference_fla_causal_conv1d)
        try:
            bound_logits = model(input_ids=ids, use_cache=False).logits
        finally:
            patches.remove_fla_causal_conv1d()
    torch.testing.assert_close(bound_logits, torch_logits, rtol=1e-5, atol=1e-5)
