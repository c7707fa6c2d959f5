"""How far each QLoRA merge target is from the model QLoRA actually trained (prints a table; not a test).

Trains tiny dense QLoRA runs (nf4, double quant) for each 4-bit compute dtype, merges each into the original 16-bit
base and into the dequantised 4-bit base, and compares the merged model's logits (fp32) with the trained 4-bit+adapter
model's on a few chat prompts. ``adapter effect`` is how far the adapter moves the 4-bit model, for scale.
Usage: QWEN35_TUNE_CACHE=/tmp/cache python benchmarks/qlora_merge_targets.py [--steps 10] [--runs-dir DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def train(run_dir: Path, compute_dtype: str, steps: int) -> None:
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.sft import run_sft

    overrides = ["method.kind=qlora", f"method.quantization.bnb_4bit_compute_dtype={compute_dtype}",
                 f"train.max_steps={steps}", "train.max_length=128", "export.merge=false",
                 "data.cards.0.eval_fraction=0", "method.lora.target_modules=all-linear"]
    run_sft(load_recipe(REPO / "recipes/tiny/sft_lora.yaml", overrides), run_dir)


def logits(model, prompts) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=ids).logits.float() for ids in prompts]


def compare(a: list, b: list) -> tuple[float, float, float]:
    """max |diff|, mean |diff|, share of positions whose argmax token agrees."""
    import torch

    diffs = torch.cat([(x - y).abs().flatten() for x, y in zip(a, b, strict=True)])
    agree = torch.cat([(x.argmax(-1) == y.argmax(-1)).flatten() for x, y in zip(a, b, strict=True)]).float()
    return diffs.max().item(), diffs.mean().item(), agree.mean().item()


def measure(run_dir: Path) -> list[tuple[str, tuple]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qwen35_tune.export.merge import merge_run
    from qwen35_tune.export.qlora import quantized_reference
    from qwen35_tune.export.verify import PROMPTS
    from qwen35_tune.rundir import RunDir

    base = Path(RunDir(run_dir).run.base_path)
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    prompts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
               ["input_ids"] for p in PROMPTS]
    reference = quantized_reference(RunDir(run_dir), base)
    trained = logits(reference, prompts)
    with reference.disable_adapter():
        rows = [("adapter effect (4-bit base vs 4-bit+adapter)", compare(logits(reference, prompts), trained))]
    del reference
    for target in ("original", "dequantized"):
        out = merge_run(run_dir, run_dir / f"merged-{target}", verify=False, qlora_base=target)
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        rows.append((f"merged into the {target} base", compare(logits(merged, prompts), trained)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs-dir", type=Path)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    root = args.runs_dir or Path(tempfile.mkdtemp(prefix="qlora-merge-"))
    print(f"tiny dense QLoRA (nf4, double quant), {args.steps} steps; logits vs the trained 4-bit+adapter model")
    print(f"{'compute dtype':<14} {'model':<46} {'max |diff|':>11} {'mean |diff|':>12} {'argmax agree':>13}")
    for compute in ("float32", "bfloat16"):
        run_dir = root / f"qlora-{compute}"
        train(run_dir, compute, args.steps)
        for name, (peak, mean, agree) in measure(run_dir):
            print(f"{compute:<14} {name:<46} {peak:>11.2e} {mean:>12.2e} {agree:>12.1%}")


if __name__ == "__main__":
    main()
