"""Peak GPU memory of one training step per adaptation method, on random-init models with the real Qwen3.5 layer dims.

  python benchmarks/gpu_methods_memory.py [--layers 4] [--seq 2048] [--batch 1] [--only 35b-a3b]

Needs one CUDA GPU (run it in one go on a lent machine). For each shape ("9b": Qwen3.5-9B dims, "35b-a3b": the MoE's
dims with all 256 experts) it saves a bf16 random-init checkpoint with fewer layers, then for each shipped recipe
method loads it the way `qwen35-tune train` does (load_model + prepare_model + build_lora_config: QLoRA includes the
4-bit routed experts), runs one forward/backward, and prints the peak allocated memory, the per-layer expert bytes and
the doctor's kernel report. Peaks scale roughly linearly with layers; compare methods at the same --layers.
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


def write_checkpoint(shape: str, layers: int, out: Path) -> Path:
    """A text-only bf16 random-init model with the shipped config's dims and ``layers`` layers (one full attention)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    shipped = json.loads(resources.files("qwen35_tune.model_configs").joinpath(SHAPES[shape][0]).read_text())
    text = {k: v for k, v in shipped["text_config"].items() if k != "layer_types"}
    text.update(num_hidden_layers=layers, full_attention_interval=min(4, layers))
    config = AutoConfig.for_model(text.pop("model_type"), **text)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    from qwen35_tune.models.tiny_tokenizer import build_tiny_tokenizer

    build_tiny_tokenizer().save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def one_step(recipe_path: Path, checkpoint: Path, seq: int, batch: int) -> dict:
    from peft import get_peft_model

    from qwen35_tune.models.load import load_model
    from qwen35_tune.models.quantize import expert_bytes
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.peft_setup import build_lora_config
    from qwen35_tune.train.preflight import prepare_model
    from qwen35_tune.train.sft import _quantization_config

    recipe = load_recipe(recipe_path, [f"model.name_or_path={checkpoint}", "model.allow_slow_kernels=true"])
    torch.cuda.reset_peak_memory_stats()
    model = load_model(str(checkpoint), recipe.model.dtype, None, recipe.model.attn_implementation,
                       quantization_config=_quantization_config(recipe))
    if recipe.method.kind != "qlora":
        model.to("cuda")
    prepare_model(recipe, model, str(checkpoint))
    lora = build_lora_config(recipe, model)
    if lora is not None:
        model = get_peft_model(model, lora)
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    loaded = torch.cuda.memory_allocated()
    ids = torch.randint(0, 4000, (batch, seq), device="cuda")
    started = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    torch.cuda.synchronize()
    row = {"method": recipe_path.stem, "loaded_gib": loaded / 2**30,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "step_s": time.perf_counter() - started,
           "expert_mib": expert_bytes(model) / 2**20}
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--only", choices=sorted(SHAPES))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    from qwen35_tune.doctor import describe, inspect_kernels

    print(f"device: {torch.cuda.get_device_name()}  layers={args.layers} seq={args.seq} batch={args.batch}")
    for line in describe(inspect_kernels("qwen3_5_moe"), on_cuda=True):
        print(f"  doctor: {line}")
    for shape, (_, folder, methods) in SHAPES.items():
        if args.only and shape != args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = write_checkpoint(shape, args.layers, Path(tmp) / shape)
            print(f"{shape} ({args.layers} layers)")
            for method in methods:
                try:
                    row = one_step(REPO / "recipes" / folder / f"{method}.yaml", checkpoint, args.seq, args.batch)
                except torch.cuda.OutOfMemoryError:
                    print(f"  {method:6s} out of memory")
                    torch.cuda.empty_cache()
                    continue
                print(f"  {row['method']:6s} loaded {row['loaded_gib']:6.2f} GiB  peak {row['peak_gib']:6.2f} GiB  "
                      f"step {row['step_s']:5.2f} s  routed experts stored {row['expert_mib']:9.1f} MiB")


if __name__ == "__main__":
    main()
