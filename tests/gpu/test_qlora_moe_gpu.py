"""GPU only: QLoRA on tiny://moe in bf16 on CUDA stores the routed experts in 4 bit and trains their adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.gpu
def test_qlora_moe_on_cuda_quantizes_experts_and_trains_them(tmp_path, kernel_overrides):
    pytest.importorskip("bitsandbytes")
    import torch
    from transformers import TrainerCallback

    from qwen35_tune.models.quantize import EXPERT_PARAMS, fused_expert_modules
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.sft import run_sft

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

        def on_train_end(self, args, state, control, model=None, **kwargs):
            self.model = model
            self.changed = [n for n, p in model.named_parameters() if n in self.before and
                            not p.detach().equal(self.before[n])]

    watch = Watch()
    overrides = ["model.name_or_path=tiny://moe", "model.dtype=bfloat16", "method.kind=qlora",
                 "method.lora.target_modules=[all]", "train.max_steps=3", "export.merge=false",
                 *kernel_overrides]
    run_sft(load_recipe(REPO / "recipes/tiny/sft_lora.yaml", overrides), tmp_path / "run", callbacks=(watch,))
    modules = fused_expert_modules(watch.model)
    assert modules and all(m.parametrizations[p].original.dtype == torch.uint8 and
                           m.parametrizations[p].original.is_cuda for _, m in modules for p in EXPERT_PARAMS)
    assert sum("mlp.experts" in n and "lora_B" in n for n in watch.changed) == 2 * len(modules)


@pytest.mark.gpu
def test_gpu_methods_memory_script_runs_small(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_methods_memory.py"), "--layers", "2",
                          "--seq", "256"], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "qlora" in out.stdout and "out of memory" not in out.stdout


@pytest.mark.gpu
def test_qlora_moe_load_peak_grows_by_4bit_experts_per_layer():
    """35B-A3B-shaped layers (256 experts) loaded for QLoRA on CUDA: quantizing the expert stacks while loading makes
    GPU memory grow by the 4-bit experts per layer (~0.4 GiB), not by the bf16 ones (~1.5 GiB) as before."""
    import re
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(REPO / "benchmarks/moe_qlora_load_peak.py"), "--device", "cuda",
                          "--layers", "1", "2"], capture_output=True, text=True, timeout=1800, cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    print(out.stdout)
    peaks = {(int(n), mode): float(gib) for n, mode, gib in
             re.findall(r"(\d+) layers x 256 experts, (before|after)\s*:.*GPU load peak\s+([\d.]+) GiB", out.stdout)}
    assert len(peaks) == 4, out.stdout
    assert peaks[(2, "before")] - peaks[(1, "before")] > 1.3
    assert peaks[(2, "after")] - peaks[(1, "after")] < 0.6
    assert peaks[(2, "after")] < peaks[(2, "before")]
