"""Training stages of the GPU check: real-9B LoRA throughput against ``plan``, 35B-shaped QLoRA memory."""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import check_shapes as shapes
import torch
from check_common import (
    PEAK_BF16,
    REPO,
    Ctx,
    backbone_and_head,
    chunked_ce,
    lora_wrap,
    memory,
    record,
    select_kernels,
    sync,
)


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
    from qwen35_tune.train.model_setup import prepare_model, quantization_config

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
        model = load_model(str(folder), recipe.model.dtype, None, "sdpa",
                           quantization_config=quantization_config(recipe))
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
