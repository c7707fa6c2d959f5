"""GPU only: the kernels ``train`` selects on this install (fla's grouped-value recurrence, and the varlen
convolution: causal-conv1d, else fla's Triton one bound by qwen35-tune) against transformers' torch path, and packed
rows equal unpacked ones through them on the tiny dense and MoE models. Runs with fla alone; skips without it."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
import torch.nn.functional as F

LENGTHS = [7, 70, 3, 41]


def _select():
    from qwen35_tune import doctor, patches

    choice = doctor.check_kernels("qwen3_5", "sdpa", allow_slow=False, on_cuda=True)
    patches.apply_gdn_packed_segments()  # as train does; it must step aside on the varlen path
    return choice


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selected_convolution_equals_torch_per_sample(fla_required, dtype):
    from qwen35_tune import patches

    choice = _select()
    assert choice.conv.startswith(("fla-triton", "causal-conv1d")) and choice.packed_rows.startswith("varlen")
    modeling = importlib.import_module(patches.DENSE_MODELING)
    bound = modeling.causal_conv1d_fn
    torch_conv = inspect.unwrap(getattr(bound, "_qwen35_tune_original", bound))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, sum(LENGTHS), 256, generator=g).cuda().to(dtype)  # [B, T, D], seen [B, D, T] as in the layer
    weight = torch.randn(256, 4, generator=g).cuda().to(dtype)
    cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    seq_idx = torch.repeat_interleave(torch.arange(4, device="cuda", dtype=torch.int32),
                                      torch.tensor(LENGTHS, device="cuda"))[None]
    got = bound(x.transpose(1, 2), weight, None, activation="silu", cu_seq_lens_q=cu, seq_idx=seq_idx)
    cuts = cu.tolist()
    want = torch.cat([torch_conv(x.transpose(1, 2)[:, :, a:b].float(), weight.float(), None, activation="silu")
                      for a, b in zip(cuts, cuts[1:], strict=False)], dim=2)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_packed_equals_unpacked_through_the_selected_kernels(fla_required, kind, request):
    from qwen35_tune.models.load import load_model
    from qwen35_tune.train.collator import BOUNDARY_KEYS, build_collator

    _select()
    model = load_model(str(request.getfixturevalue(f"tiny_{kind}")), "float32").cuda().eval()
    vocab = model.config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(0)
    samples = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in LENGTHS]
    batch = build_collator(0, packed=True)([{"input_ids": sum(samples, []), "labels": sum(samples, []),
                                             "seq_lengths": LENGTHS}])
    batch = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in batch.items()}

    def loss(logits, ids):
        return F.cross_entropy(logits[0, :-1].float(), torch.tensor(ids[1:], device="cuda"))

    model.zero_grad()
    unpacked = torch.stack([loss(model(input_ids=torch.tensor([s], device="cuda")).logits, s) for s in samples])
    unpacked.sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], **{k: batch[k] for k in BOUNDARY_KEYS}).logits
    cuts = batch["cu_seq_lens_q"].tolist()
    spans = zip(cuts[:-1], cuts[1:], strict=True)
    packed = torch.stack([loss(logits[:, a:b], s) for (a, b), s in zip(spans, samples, strict=True)])
    packed.sum().backward()
    torch.testing.assert_close(packed, unpacked, rtol=2e-3, atol=2e-3)
    scale = max(g.abs().max().item() for g in ref.values())
    assert max((p.grad - ref[n]).abs().max().item() for n, p in model.named_parameters() if n in ref) / scale < 2e-3
