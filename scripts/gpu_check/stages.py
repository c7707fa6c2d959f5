"""Stages of scripts/gpu_check.sh: ``python scripts/gpu_check/stages.py STAGE [STAGE ...]`` (``--list``: the names).

The shell runs one stage per process, so an out-of-memory error or a crash loses only that stage; every result is a
JSON line in ``$OUT/results.jsonl`` (and a ``RESULT {...}`` line on stdout). ``GPU_CHECK_SMOKE=1``: tiny shapes on
CPU (the CI dry run; its numbers mean nothing, its verdicts only that the code runs). Stages use the project's public
functions (doctor, patches, collator, load_model / prepare_model, build_lora_config, the planner's make_plan), so the
check follows the code it validates.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import io
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes  # noqa: E402  (the sibling module; this folder is not a package)

REPO = Path(__file__).resolve().parents[2]
PEAK_BF16 = 989e12  # H100 / H200 SXM dense bf16 FLOP/s (spec), the MFU denominator
DENSE = "transformers.models.qwen3_5.modeling_qwen3_5"


@dataclass(frozen=True)
class Ctx:
    smoke: bool
    out: Path

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @classmethod
    def from_env(cls) -> Ctx:
        out = Path(os.environ.get("OUT", "/tmp/gpu_check_out"))
        out.mkdir(parents=True, exist_ok=True)
        return cls(smoke=os.environ.get("GPU_CHECK_SMOKE") == "1", out=out)


def record(ctx: Ctx, stage: str, **values) -> dict:
    row = {"stage": stage, **values}
    with open(ctx.out / "results.jsonl", "a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
    print("RESULT", json.dumps(row, default=str), flush=True)
    return row


def sync(ctx: Ctx) -> None:
    if ctx.cuda:
        torch.cuda.synchronize()


def memory(ctx: Ctx, reset: bool = False) -> dict:
    if not ctx.cuda:
        return {}
    row = {"alloc_gib": torch.cuda.memory_allocated() / 2**30, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
           "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30}
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return row


def spans(cuts) -> list[tuple[int, int]]:
    """[(start, end)] of each packed sample from cumulative lengths."""
    cuts = cuts.tolist() if torch.is_tensor(cuts) else list(cuts)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def select_kernels(ctx: Ctx, model_type: str = "qwen3_5"):
    """What ``train`` does before the first step: the doctor's check (binds fla's convolution without causal-conv1d)
    and the per-sample GDN fallback for packed rows (it steps aside where the varlen kernels run)."""
    from qwen35_tune import doctor, patches

    choice = doctor.check_kernels(model_type, "sdpa", allow_slow=True, on_cuda=ctx.cuda)
    patches.apply_gdn_packed_segments()
    return choice


def torch_reference_fla_conv(x, weight=None, bias=None, activation=None, cu_seqlens=None, **_):
    """CPU dry run only: a torch statement of fla's causal_conv1d ([B, T, D], per cu_seqlens sequence), standing in
    for the Triton kernel the GPU run binds (tests/unit/test_fla_conv_binding.py holds it to fla)."""
    cuts = [0, x.shape[1]] if cu_seqlens is None else cu_seqlens.tolist()
    parts = [F.conv1d(F.pad(x[:, a:b].transpose(1, 2), (weight.shape[1] - 1, 0)), weight.unsqueeze(1), bias,
                      groups=weight.shape[0]).transpose(1, 2) for a, b in zip(cuts[:-1], cuts[1:], strict=False)]
    y = torch.cat(parts, dim=1)
    return (F.silu(y) if activation in ("silu", "swish") else y), None


def torch_functions(modeling):
    """transformers' own torch recurrence and convolution, under whatever kernel or binding sits in their slots."""
    conv = modeling.causal_conv1d_fn
    return (inspect.unwrap(modeling.torch_chunk_gated_delta_rule),
            inspect.unwrap(getattr(conv, "_qwen35_tune_original", conv)))


def lora_wrap(model, recipe_rel: str, randomize_b: bool = False):
    """peft-wrap ``model`` with the shipped recipe's adapters, built by the project's own ``build_lora_config``."""
    from peft import get_peft_model

    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.peft_setup import build_lora_config

    recipe = load_recipe(REPO / recipe_rel, ["model.allow_slow_kernels=true"])
    wrapped = get_peft_model(model, build_lora_config(recipe, model))
    if randomize_b:  # B = 0 at init would leave every lora_A gradient zero; give both factors signal
        g = torch.Generator().manual_seed(1)
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.data.copy_((torch.randn(param.shape, generator=g) * 0.02).to(param.dtype))
    return wrapped, recipe


def backbone_and_head(model):
    """(decoder returning last_hidden_state, lm_head weight): what TRL's chunked loss projects through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head.weight


def chunked_ce(hidden, weight, labels, n_targets=None):
    """TRL's chunked LM-head loss (the one ``train`` uses; logits never materialised)."""
    from qwen35_tune.train.loss import chunked_cross_entropy

    return chunked_cross_entropy(hidden, weight, labels, num_items_in_batch=n_targets)


# ---------------------------------------------------------------------------------------------------------- stages
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


def stage_throughput(ctx: Ctx, only_packed: bool = False) -> None:
    """The real 9B (vision tower included, random bf16) with the shipped LoRA recipe's adapters, gradient
    checkpointing, AdamW and TRL's chunked loss, 8192 tokens a step: tokens/s, 6N MFU and peak memory for one 8k
    sample (A), 8 samples packed (B: the kernels ``train`` selects) and padded 4 per micro-batch (C), vs ``plan``."""
    choice = select_kernels(ctx)
    model = shapes.build(shapes.full_config("9b", ctx.smoke), torch.bfloat16, ctx.device)
    text = model.config.get_text_config()
    flop_params = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and "visual" not in n)
    flop_params += model.lm_head.weight.numel()
    peft_model, recipe = lora_wrap(model, "recipes/qwen3_5_9b/lora.yaml")
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.enable_input_require_grads()
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4,
                                  fused=ctx.cuda)
    backbone, head = backbone_and_head(peft_model)
    lengths = [20, 12, 7, 3] if ctx.smoke else [2048, 1536, 1200, 1000, 900, 700, 508, 300]
    n_full = text.layer_types.count("full_attention")

    def attention_flops(lens):  # causal QK^T and AV of the full-attention layers, forward
        return sum(n_full * 2 * 2 * text.num_attention_heads * text.head_dim * n * n / 2 for n in lens)

    def step(inputs, labels):
        with torch.autocast(ctx.device, dtype=torch.bfloat16, enabled=ctx.cuda):
            loss = chunked_ce(backbone(**inputs).last_hidden_state, head, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def measure(name, micro_batches, tokens, attn, steps=1 if ctx.smoke else 4, warmup=0 if ctx.smoke else 2):
        for _ in range(warmup):
            for inputs, labels in micro_batches:
                step(inputs, labels)
        sync(ctx)
        memory(ctx, reset=True)
        t0 = time.perf_counter()
        for _ in range(steps):
            for inputs, labels in micro_batches:
                loss = step(inputs, labels)
        sync(ctx)
        seconds = (time.perf_counter() - t0) / steps
        mfu = (6 * flop_params * tokens + 3 * attn) / seconds / PEAK_BF16
        record(ctx, "throughput", config=name, kernels=choice.to_dict(), step_s=seconds, real_tokens=tokens,
               tokens_per_s=tokens / seconds, mfu_6N=mfu, loss=loss, **memory(ctx))

    g = torch.Generator().manual_seed(0)
    seq = sum(lengths) if ctx.smoke else 8192
    if not only_packed:
        ids = torch.randint(10, text.vocab_size, (1, seq), generator=g).to(ctx.device)
        measure("A one 8k sample", [({"input_ids": ids}, ids)], seq, attention_flops([seq]))
    samples, batch = shapes.packed_batch(lengths, text.vocab_size)
    batch = shapes.to_device(batch, ctx.device)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    measure(f"B {len(lengths)} samples packed ({choice.packed_rows})", [(inputs, batch["labels"])], sum(lengths),
            attention_flops(lengths))
    if only_packed:
        return
    from qwen35_tune.train.collator import build_collator

    padded = []
    half = len(samples) // 2
    for group in (samples[:half], samples[half:]):  # the recipe default: packing off, 4 rows per micro-batch
        rows = build_collator(0, packed=False)([{"input_ids": s.tolist(), "labels": s.tolist()} for s in group])
        padded.append(({"input_ids": rows["input_ids"].to(ctx.device),
                        "attention_mask": rows["attention_mask"].to(ctx.device)}, rows["labels"].to(ctx.device)))
    measure(f"C the same samples padded, {half} per micro-batch", padded, sum(lengths), attention_flops(lengths))
    record_plan(ctx, "throughput", "recipes/qwen3_5_9b/lora.yaml", ["train.max_length=8192",
                "train.per_device_train_batch_size=1"])  # fmt: skip


def record_plan(ctx: Ctx, stage: str, recipe_rel: str, overrides: list[str], gpus: str = "1xH200-141GB") -> None:
    """What ``qwen35-tune plan`` says for the shape just measured (its public functions; the text as printed)."""
    from qwen35_tune.plan import format_plan, load_model_config, make_plan, parse_gpus
    from qwen35_tune.recipe import load_recipe

    recipe = load_recipe(REPO / recipe_rel, overrides)
    plan = make_plan(recipe, load_model_config(recipe.model.name_or_path), parse_gpus(gpus))
    record(ctx, stage, planner=format_plan(plan, recipe.model.name_or_path).splitlines(),
           note="compare the planner's ddp total (GB) with the measured peak_gib")


def stage_qlora_moe(ctx: Ctx) -> None:
    """A 35B-A3B-shaped model (2 layers, all 256 experts, real vocabulary) saved and loaded the way ``train`` loads it
    (load_model + prepare_model): memory after load and after preparation (4-bit experts), step time, for bf16 LoRA
    and QLoRA with the shipped recipes' adapters."""
    import bitsandbytes  # noqa: F401  (missing: the stage errors out cleanly, the others still run)

    from qwen35_tune.models.load import load_model
    from qwen35_tune.models.quantize import expert_bytes, quantize_moe_experts
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.preflight import prepare_model

    layers = 2
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_moe_"))
    seed_model = shapes.build(shapes.text_config("35b-a3b", ctx.smoke, layers=layers), torch.bfloat16, "cpu")
    seed_model.save_pretrained(folder)
    bf16_expert_bytes = expert_bytes(seed_model)
    vocab = seed_model.config.vocab_size
    del seed_model
    gc.collect()
    ids = torch.randint(10, vocab, (1, 32) if ctx.smoke else (2, 2048), generator=torch.Generator().manual_seed(0))
    ids = ids.to(ctx.device)
    for method in ("lora", "qlora"):
        recipe = load_recipe(REPO / f"recipes/qwen3_5_35b_a3b/{method}.yaml",
                             [f"model.name_or_path={folder}", "model.allow_slow_kernels=true"])
        memory(ctx, reset=True)
        model = load_model(str(folder), recipe.model.dtype, None, "sdpa", quantization_config=bnb_config(recipe))
        if method == "lora" or not ctx.cuda:
            model.to(ctx.device)
        after_load = {**memory(ctx), "expert_bytes": expert_bytes(model)}
        prepare_model(recipe, model, str(folder))  # train's path: kernels, fp32 params, 4-bit experts for QLoRA
        quantized_here = False
        if method == "qlora" and expert_bytes(model) >= bf16_expert_bytes:  # the train path no longer quantizes?
            quant = recipe.method.quantization
            quantize_moe_experts(model, quant.bnb_4bit_quant_type, quant.bnb_4bit_use_double_quant)
            quantized_here = True
        if ctx.cuda:
            torch.cuda.empty_cache()
        after_prepare = {**memory(ctx), "expert_bytes": expert_bytes(model)}
        peft_model, _ = lora_wrap(model, f"recipes/qwen3_5_35b_a3b/{method}.yaml")
        steps = train_steps(ctx, peft_model, ids, cast_adapters_bf16=method == "qlora", steps=2 if ctx.smoke else 3)
        record(ctx, "qlora_moe", method=method, layers=layers, after_load=after_load, after_prepare=after_prepare,
               quantized_by_the_check_not_train=quantized_here, bf16_expert_bytes=bf16_expert_bytes, **steps,
               **memory(ctx), note="x20 the per-layer expert bytes for the real 40 layers")
        del peft_model, model
        gc.collect()
        if ctx.cuda:
            torch.cuda.empty_cache()


def bnb_config(recipe):
    """The recipe's BitsAndBytesConfig for QLoRA (None otherwise), as ``train`` builds it."""
    if recipe.method.kind != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    quant = recipe.method.quantization.model_dump()
    quant["bnb_4bit_compute_dtype"] = getattr(torch, quant["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**quant)


def train_steps(ctx: Ctx, peft_model, ids, cast_adapters_bf16: bool, steps: int = 3) -> dict:
    if cast_adapters_bf16:  # TRL's SFTTrainer casts a 4-bit model's adapters to bf16
        for param in peft_model.parameters():
            if param.requires_grad:
                param.data = param.data.to(torch.bfloat16)
    peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.enable_input_require_grads()
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    backbone, head = backbone_and_head(peft_model)
    times, losses = [], []
    for _ in range(steps):
        sync(ctx)
        t0 = time.perf_counter()
        with torch.autocast(ctx.device, dtype=torch.bfloat16, enabled=ctx.cuda):
            loss = chunked_ce(backbone(input_ids=ids).last_hidden_state, head, ids)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(ctx)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    expert_lora = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "mlp.experts" in n)
    return {"step_s": min(times[1:]), "first_loss": losses[0], "trainable": sum(p.numel() for p in trainable),
            "expert_lora_params": expert_lora}


STAGES = {"doctor": stage_doctor, "conv": stage_conv, "gva": stage_gva, "packed": stage_packed,
          "throughput": stage_throughput, "throughput_packed": lambda ctx: stage_throughput(ctx, only_packed=True),
          "qlora_moe": stage_qlora_moe}  # fmt: skip


def run_stage(ctx: Ctx, name: str) -> int:
    """Run one stage; its failure is recorded (status error/oom) and returned as exit code 1, never raised."""
    t0 = time.perf_counter()
    try:
        STAGES[name](ctx)
    except Exception as exc:
        traceback.print_exc()
        oom = ctx.cuda and isinstance(exc, torch.cuda.OutOfMemoryError)
        record(ctx, name, status="oom" if oom else "error", error=f"{type(exc).__name__}: {exc}"[:2000],
               seconds=time.perf_counter() - t0, **memory(ctx))
        return 1
    record(ctx, name, status="ok", seconds=time.perf_counter() - t0)
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--list"]:
        print("\n".join(STAGES))
        return 0
    unknown = [name for name in argv if name not in STAGES]
    if unknown or not argv:
        print(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    ctx = Ctx.from_env()
    return max(run_stage(ctx, name) for name in argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
