"""Peak GPU memory of a real training step per adaptation method, on random-init models with the real Qwen3.5 dims.

  python benchmarks/gpu_methods_memory.py [--layers 4] [--seq 2048] [--batch 1] [--only 35b-a3b] [--methods lora,qlora]

Needs one CUDA GPU (run it in one go on a lent machine). For each shape ("9b": Qwen3.5-9B dims, "35b-a3b": the MoE's
dims with all 256 experts) it saves a bf16 random-init checkpoint with fewer layers, then for each shipped recipe
method loads it the way `qwen35-tune train` does (load_model + prepare_model + build_lora_config: QLoRA includes the
4-bit routed experts) and runs training steps as the trainer does: bf16 autocast, the recipe's gradient
checkpointing, TRL's chunked LM-head loss (logits never materialised) and an AdamW step. The peak is that of the
last step (optimizer states allocated), so it is what a run holds, not a forward pass. Peaks scale roughly linearly
with layers; compare methods at the same --layers. (4-bit adapters are cast to bf16, as TRL's SFTTrainer does.)
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHAPES = {"9b": ("qwen3_5_9b.json", "qwen3_5_9b", ("lora", "dora", "qlora", "full")),
          "35b-a3b": ("qwen3_5_35b_a3b.json", "qwen3_5_35b_a3b", ("lora", "qlora", "full"))}  # fmt: skip


def write_checkpoint(shape: str, layers: int, out: Path, device: str) -> Path:
    """A text-only bf16 random-init model with the shipped config's dims and ``layers`` layers (one full attention)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    shipped = json.loads(resources.files("qwen35_tune.model_configs").joinpath(SHAPES[shape][0]).read_text())
    text = {k: v for k, v in shipped["text_config"].items() if k != "layer_types"}
    text.update(num_hidden_layers=layers, full_attention_interval=min(4, layers))
    config = AutoConfig.for_model(text.pop("model_type"), **text)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    from qwen35_tune.models.tiny_tokenizer import build_tiny_tokenizer

    build_tiny_tokenizer().save_pretrained(out)
    del model
    empty_cache(device)
    return out


def empty_cache(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def prepared_model(recipe, checkpoint: Path, device: str):
    """The model as ``train`` hands it to the trainer: loaded, prepared, adapters attached."""
    from peft import get_peft_model

    from qwen35_tune.models.load import load_model
    from qwen35_tune.train.model_setup import prepare_model, quantization_config
    from qwen35_tune.train.peft_setup import build_lora_config

    model = load_model(str(checkpoint), recipe.model.dtype, None, recipe.model.attn_implementation,
                       quantization_config=quantization_config(recipe))
    if recipe.method.kind != "qlora" or device != "cuda":
        model.to(device)
    prepare_model(recipe, model, str(checkpoint))
    lora = build_lora_config(recipe, model)
    if lora is not None:
        model = get_peft_model(model, lora)
        if recipe.method.kind == "qlora":
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    return model


def train_steps(recipe_path: Path, checkpoint: Path, seq: int, batch: int, device: str, steps: int = 2) -> dict:
    """Peak memory and time of the last of ``steps`` full optimizer steps (forward, backward, AdamW)."""
    from chunked_loss import chunked_cross_entropy  # sibling module (benchmarks/ is sys.path[0] when run as a script)

    from qwen35_tune.models.quantize import expert_bytes
    from qwen35_tune.recipe import load_recipe

    recipe = load_recipe(recipe_path, [f"model.name_or_path={checkpoint}", "model.allow_slow_kernels=true"])
    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = prepared_model(recipe, checkpoint, device)
    loaded = torch.cuda.memory_allocated() if cuda else 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.train.learning_rate, fused=cuda)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids = torch.randint(0, 4000, (batch, seq), device=device)
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            hidden = base.model(input_ids=ids).last_hidden_state
            loss = chunked_cross_entropy(hidden, base.lm_head.weight, ids)  # TRL's chunked loss, as train uses
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        step_s = time.perf_counter() - started
    row = {"method": recipe_path.stem, "loaded_gib": loaded / 2**30, "step_s": step_s, "loss": loss.item(),
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
           "after_step_gib": torch.cuda.memory_allocated() / 2**30 if cuda else 0.0,
           "trainable_m": sum(p.numel() for p in trainable) / 1e6, "expert_mib": expert_bytes(model) / 2**20}
    del model, optimizer
    empty_cache(device)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--only", choices=sorted(SHAPES))
    parser.add_argument("--methods", help="comma-separated subset, e.g. lora,qlora")
    parser.add_argument("--device", default="cuda", help="cuda (the figures); cpu only checks that the script runs")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    from qwen35_tune.doctor import check_kernels

    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device: {name}  layers={args.layers} seq={args.seq} batch={args.batch}")
    kernels = check_kernels("qwen3_5_moe", "sdpa", allow_slow=True, on_cuda=args.device == "cuda")
    print(f"  kernels: {kernels.to_dict()}")
    wanted = set(args.methods.split(",")) if args.methods else None
    for shape, (_, folder, methods) in SHAPES.items():
        if args.only and shape != args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = write_checkpoint(shape, args.layers, Path(tmp) / shape, args.device)
            print(f"{shape} ({args.layers} layers)")
            for method in methods:
                if wanted and method not in wanted:
                    continue
                try:
                    row = train_steps(REPO / "recipes" / folder / f"{method}.yaml", checkpoint, args.seq, args.batch,
                                      args.device)
                except torch.cuda.OutOfMemoryError:
                    print(f"  {method:6s} out of memory")
                    empty_cache(args.device)
                    continue
                print(f"  {row['method']:6s} loaded {row['loaded_gib']:6.2f} GiB  step peak {row['peak_gib']:6.2f} GiB"
                      f"  after step {row['after_step_gib']:6.2f} GiB  step {row['step_s']:5.2f} s  trainable "
                      f"{row['trainable_m']:8.1f}M  routed experts stored {row['expert_mib']:9.1f} MiB")


if __name__ == "__main__":
    main()
