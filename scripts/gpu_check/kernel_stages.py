"""Kernel stages of the GPU check: the doctor, the bound causal convolution, fla's grouped-value recurrence,
packed rows."""

from __future__ import annotations

import contextlib
import importlib
import io
import time

import check_shapes as shapes
import torch
import torch.nn.functional as F
from check_common import (
    DENSE,
    REPO,
    Ctx,
    backbone_and_head,
    chunked_ce,
    lora_wrap,
    record,
    rel,
    select_kernels,
    spans,
    sync,
    torch_functions,
    torch_reference_fla_conv,
)


def stage_doctor(ctx: Ctx) -> None:
    """Versions, ``qwen35-tune doctor RECIPE`` (offline), and what the train-start check binds and decides."""
    import importlib.metadata as md

    from qwen35_tune import cli, doctor

    versions = {}
    for dist in ("torch", "transformers", "peft", "trl", "accelerate", "flash-linear-attention", "fla-core",
                 "causal-conv1d", "bitsandbytes", "triton", "flash-attn", "einops", "deepspeed", "pydantic"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    device = torch.cuda.get_device_name() if ctx.cuda else "cpu"
    record(ctx, "doctor", device=device, versions=versions)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cli.main(["doctor", str(REPO / "recipes/qwen3_5_9b/lora.yaml"), "train.packing=true"])
    record(ctx, "doctor", cli_rc=code, cli_out=out.getvalue().strip().splitlines())
    try:
        choice, refused = doctor.check_kernels("qwen3_5", "sdpa", allow_slow=False, on_cuda=ctx.cuda).to_dict(), None
    except Exception as exc:  # UserError: what `qwen35-tune train` would print before exiting 2
        choice, refused = doctor.kernel_choice("qwen3_5", "sdpa").to_dict(), str(exc)
    fast = not ctx.cuda or (refused is None and choice["chunk"] != "torch" and choice["conv"] != "torch")
    record(ctx, "doctor", kernels=choice, train_would_refuse=refused, verdict="PASS" if fast and code == 0 else "FAIL")


def stage_conv(ctx: Ctx) -> None:
    """The bound causal convolution (fla's Triton kernel without causal-conv1d) at the real GDN width, called as
    the model calls it with a packed batch's boundaries, vs transformers' torch convolution per sample (and grads)."""
    from qwen35_tune import doctor, patches

    modeling = importlib.import_module(DENSE)
    if ctx.cuda:
        select_kernels(ctx)
        _compare_conv(ctx, modeling, modeling.causal_conv1d_fn, doctor.kernel_choice().conv)
        return
    patches.apply_fla_causal_conv1d(torch_reference_fla_conv)  # CPU dry run: the binding over a torch stand-in
    try:
        _compare_conv(ctx, modeling, modeling.causal_conv1d_fn, "torch stand-in for fla (dry run)")
    finally:
        patches.remove_fla_causal_conv1d()


def _compare_conv(ctx: Ctx, modeling, bound, implementation: str) -> None:
    torch_conv = torch_functions(modeling)[1]
    text = shapes.text_config("9b", ctx.smoke)
    dim = 2 * text["linear_num_key_heads"] * text["linear_key_head_dim"]
    dim += text["linear_num_value_heads"] * text["linear_value_head_dim"]
    lengths = [37, 91, 5, 123] if ctx.smoke else [1000, 2500, 64, 4628]
    _, batch = shapes.packed_batch(lengths, 1000)
    bounds = {k: v for k, v in shapes.to_device(batch, ctx.device).items() if k not in ("input_ids", "labels")}
    cu = batch["cu_seq_lens_q"]
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, sum(lengths), dim, generator=g)  # [B, T, D]: in_proj_qkv's output, as the layer has it
    w0 = torch.randn(dim, text["linear_conv_kernel_dim"], generator=g)
    cotangent = torch.randn(1, dim, sum(lengths), generator=g).to(ctx.device)
    dtype = torch.float32 if ctx.smoke else torch.bfloat16

    def run(per_sample: bool, dt, **kwargs):
        x = x0.to(ctx.device, dt).requires_grad_()
        w = w0.to(ctx.device, dt).requires_grad_()
        channels_first = x.transpose(1, 2)  # the layer's call: a [B, D, T] view of a [B, T, D] tensor
        if per_sample:
            y = torch.cat([torch_conv(channels_first[:, :, a:b], w, None, activation="silu") for a, b in spans(cu)], 2)
        else:
            y = bound(channels_first, w, None, activation="silu", **kwargs)
        (y.float() * cotangent).sum().backward()
        return y.detach(), x.grad, w.grad

    reference = run(True, torch.float32)
    sync(ctx)
    t0 = time.perf_counter()
    got = run(False, dtype, **bounds)
    sync(ctx)
    seconds = time.perf_counter() - t0
    leak = rel(run(False, dtype)[0], reference[0])  # the whole row convolved at once: samples see each other
    errors = {name: rel(a, b) for name, a, b in zip(("out", "grad_x", "grad_weight"), got, reference, strict=True)}
    ok = errors["out"] < 1e-2 and max(errors.values()) < 3e-2 and leak > 10 * max(errors["out"], 1e-7)
    record(ctx, "conv", implementation=implementation, dim=dim, lengths=lengths, dtype=str(dtype), rel_err=errors,
           negative_control_rel_leak=leak, seconds_incl_jit=seconds, verdict="PASS" if ok else "FAIL")


def stage_gva(ctx: Ctx) -> None:
    """fla's chunk kernel at Qwen3.5's grouped-value shapes (16 qk / 32 v heads), varlen, vs the torch reference."""
    from qwen35_tune import patches

    modeling = importlib.import_module(DENSE)
    kernel = patches.kernel_bound(modeling.torch_chunk_gated_delta_rule)
    fn, reference = modeling.torch_chunk_gated_delta_rule, torch_functions(modeling)[0]
    text = shapes.text_config("9b", ctx.smoke)
    H, HV, K = text["linear_num_key_heads"], text["linear_num_value_heads"], text["linear_key_head_dim"]
    lengths = [37, 91, 5, 123] if ctx.smoke else [1000, 2500, 64, 4628]
    total = sum(lengths)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, total, h, K, generator=g) for h in (H, H, HV))
    gate = -F.softplus(torch.randn(1, total, HV, generator=g) + 2.0)  # log-space decay, as the GDN layer makes it
    beta = torch.sigmoid(torch.randn(1, total, HV, generator=g))
    cotangent = torch.randn(1, total, HV, K, generator=g).to(ctx.device)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=ctx.device)

    def run(function, per_sample: bool, dtype):
        leaves = [t.to(ctx.device, dtype if i != 3 else torch.float32).requires_grad_()
                  for i, t in enumerate((q, k, v, gate, beta))]
        qq, kk, vv, gg, bb = leaves
        if per_sample:
            out = torch.cat([function(qq[:, a:b], kk[:, a:b], vv[:, a:b], g=gg[:, a:b], beta=bb[:, a:b],
                                      use_qk_l2norm_in_kernel=True)[0] for a, b in spans(cu)], 1)
        else:
            out = function(qq, kk, vv, g=gg, beta=bb, use_qk_l2norm_in_kernel=True, cu_seqlens=cu)[0]
        (out.float() * cotangent).sum().backward()
        return out.detach(), [t.grad for t in leaves]

    t0 = time.perf_counter()
    ref_out, ref_grads = run(reference, True, torch.float32)
    out, grads = run(fn, not kernel, torch.float32 if ctx.smoke else torch.bfloat16)
    sync(ctx)
    grad_err = {n: rel(a, b) for n, a, b in zip(("q", "k", "v", "g", "beta"), grads, ref_grads, strict=True)}
    out_err = rel(out, ref_out)
    ok = out_err < 3e-2 and max(grad_err.values()) < 5e-2 and (kernel or not ctx.cuda)
    record(ctx, "gva", kernel_bound=kernel, shapes={"H": H, "HV": HV, "K": K, "lengths": lengths},
           out_rel_err=out_err, grad_rel_err=grad_err, seconds_incl_jit=time.perf_counter() - t0,
           verdict="PASS" if ok else "FAIL", note="fla < 0.5 has no grouped value heads (HV > H): expect FAIL there")


def stage_packed(ctx: Ctx) -> None:
    """Packed == unpacked through the kernels ``train`` selects: per-sample loss and LoRA grads on a 4-layer
    9B-shaped fp32 model; the position_ids-only control leaks; kernel vs torch hidden states on one sample."""
    from qwen35_tune.doctor import kernel_choice

    choice = select_kernels(ctx)
    modeling = importlib.import_module(DENSE)
    model = shapes.build(shapes.text_config("9b", ctx.smoke, layers=4), torch.float32, ctx.device)
    peft_model, _ = lora_wrap(model, "recipes/qwen3_5_9b/lora.yaml", randomize_b=True)
    peft_model.train()
    backbone, head = backbone_and_head(peft_model)
    lengths = [9, 30, 3, 70] if ctx.smoke else [1000, 2500, 64, 4628]
    samples, batch = shapes.packed_batch(lengths, peft_model.config.vocab_size)
    batch = shapes.to_device(batch, ctx.device)
    cuts = batch["cu_seq_lens_q"].tolist()
    lora = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]

    def take_grads():
        grads = {n: p.grad.detach().clone() for n, p in lora if p.grad is not None}
        peft_model.zero_grad(set_to_none=True)
        return grads

    def sample_losses(hidden):
        losses = []
        for a, b in spans(cuts):
            labels = torch.full_like(batch["labels"], -100)
            labels[:, a:b] = batch["labels"][:, a:b]
            losses.append(chunked_ce(hidden, head, labels))
        return losses

    unpacked = []
    for sample in samples:
        ids = sample[None].to(ctx.device)
        labels = ids.clone()
        labels[:, 0] = -100
        loss = chunked_ce(backbone(input_ids=ids).last_hidden_state, head, labels)
        loss.backward()
        unpacked.append(loss.item())
    grads_unpacked = take_grads()
    boundaries = {k: v for k, v in batch.items() if k not in ("labels",)}
    packed = sample_losses(backbone(**boundaries).last_hidden_state)
    torch.stack(packed).sum().backward()
    grads_packed = take_grads()
    loss_err = max(abs(a.item() - b) / abs(b) for a, b in zip(packed, unpacked, strict=True))
    grad_err = max(rel(grads_packed[n], grads_unpacked[n]) for n in grads_unpacked)
    with torch.no_grad():
        mixed = backbone(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).last_hidden_state
        leak = [abs(a.item() - b) / abs(b) for a, b in zip(sample_losses(mixed), unpacked, strict=True)]
        one = samples[1][None].to(ctx.device)
        kernel_hidden = backbone(input_ids=one).last_hidden_state
        slots = modeling.torch_chunk_gated_delta_rule, modeling.causal_conv1d_fn
        modeling.torch_chunk_gated_delta_rule, modeling.causal_conv1d_fn = torch_functions(modeling)
        try:
            torch_hidden = backbone(input_ids=one).last_hidden_state
        finally:
            modeling.torch_chunk_gated_delta_rule, modeling.causal_conv1d_fn = slots
    kernel_vs_torch = rel(kernel_hidden, torch_hidden)
    ok = loss_err < 1e-3 and grad_err < 1e-2 and max(leak[1:]) > 10 * max(loss_err, 1e-6) and kernel_vs_torch < 2e-2
    record(ctx, "packed", kernels=kernel_choice("qwen3_5", "sdpa").to_dict(), selected=choice.to_dict(),
           lengths=lengths, per_sample_loss_rel_diff=loss_err, lora_grad_rel_diff=grad_err,
           negative_control_rel_leak=leak, kernel_vs_torch_hidden_rel=kernel_vs_torch,
           verdict="PASS" if ok else "FAIL")
