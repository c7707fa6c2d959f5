"""Builders for export tests: tiny bases re-saved like real Qwen3.5 checkpoints (extra ``mtp.*`` tensors, bf16 with
fp32 GDN parameters, several shards) and run directories holding a randomly initialised, non-zero adapter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

FP32_SUFFIXES = ("linear_attn.A_log", "linear_attn.norm.weight")


def load_tensors(folder: Path) -> dict:
    """Every tensor of a safetensors checkpoint folder (all shards), by name."""
    from safetensors.torch import load_file

    out = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        out.update(load_file(file))
    return out


def resave_base(src: Path, dst: Path, dtype: str = "float32", shards: int = 1, mtp: bool = True) -> Path:
    """Copy a tiny checkpoint, add ``mtp.*`` tensors transformers never loads, cast, and split into shards."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    hidden = tensors[next(k for k in tensors if k.endswith("embed_tokens.weight"))].shape[1]
    if mtp:
        gen = torch.Generator().manual_seed(1)
        tensors["mtp.fc.weight"] = torch.randn(hidden, 2 * hidden, generator=gen)
        tensors["mtp.norm.weight"] = torch.ones(hidden)
        tensors["mtp.layers.0.mlp.up_proj.weight"] = torch.randn(2 * hidden, hidden, generator=gen)
    target = getattr(torch, dtype)
    tensors = {k: (v if k.endswith(FP32_SUFFIXES) else v.to(target)).contiguous() for k, v in tensors.items()}
    keys = sorted(tensors)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = "model.safetensors" if shards == 1 else f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(dst / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    if shards > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    config = json.loads((dst / "config.json").read_text())
    config["dtype"] = dtype
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def make_adapter_run(base: Path, run_dir: Path, base_model: str = "tiny://dense", **lora) -> Path:
    """A run directory like ``train`` leaves it, with an adapter whose A and B are random (so it changes things)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from qwen35_tune.models.load import load_config, model_class

    torch.manual_seed(0)
    model = model_class(load_config(str(base))).from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **lora)
    peft_model = get_peft_model(model, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(run_dir / "adapter")
    AutoTokenizer.from_pretrained(base).save_pretrained(run_dir / "adapter")
    (run_dir / "run.json").write_text(json.dumps({"base_model": base_model, "base_path": str(base),
                                                  "method": "lora", "weights": "adapter"}))
    (run_dir / "summary.json").write_text(json.dumps({"name": "tiny-export", "steps": 3, "final_loss": 1.5}))
    return run_dir
