"""Peak RSS of the streaming merge as the model grows at a fixed shard size (prints a table; not a test).

Synthetic bases of N fp32 [1024, 1024] tensors (4 MiB each) in 64 MiB shards, a rank-16 LoRA adapter on half of
them; each merge runs in a fresh subprocess and reports its peak RSS above the interpreter-plus-imports baseline.
Usage: python benchmarks/merge_memory.py [--sizes-mib 256 512 1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import resource, sys, json
from pathlib import Path
import torch, safetensors, peft, qwen35_tune.export.merge as m
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m.merge_adapter(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"baseline_mib": base / 1024, "peak_mib": peak / 1024}))
"""


def build(folder: Path, size_mib: int, shard_mib: int = 64) -> None:
    import torch
    from safetensors.torch import save_file

    n, per_shard = size_mib // 4, shard_mib // 4
    shards = -(-n // per_shard)
    weight_map, adapter = {}, {}
    (folder / "base").mkdir(parents=True)
    (folder / "adapter").mkdir()
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(1024, 1024)
                for i in range(s * per_shard, min(n, (s + 1) * per_shard))}
        save_file(part, str(folder / "base" / name))
        weight_map.update(dict.fromkeys(part, name))
    index = {"metadata": {"total_size": n * 4 * 1024**2}, "weight_map": weight_map}
    (folder / "base" / "model.safetensors.index.json").write_text(json.dumps(index))
    for i in range(0, n, 2):
        prefix = f"base_model.model.model.layers.{i}.mlp.up_proj"
        adapter[f"{prefix}.lora_A.weight"] = torch.randn(16, 1024)
        adapter[f"{prefix}.lora_B.weight"] = torch.randn(1024, 16)
    save_file(adapter, str(folder / "adapter" / "adapter_model.safetensors"))
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 512, 1024])
    args = parser.parse_args()
    print(f"{'model MiB':>10} {'shard MiB':>10} {'peak RSS over baseline MiB':>28} {'ratio to model':>15}")
    for size in args.sizes_mib:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp), size)
            result = subprocess.run([sys.executable, "-c", CHILD, f"{tmp}/base", f"{tmp}/adapter", f"{tmp}/out"],
                                    capture_output=True, text=True, check=True)
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            extra = figures["peak_mib"] - figures["baseline_mib"]
            print(f"{size:>10} {64:>10} {extra:>28.0f} {extra / size:>15.2f}")


if __name__ == "__main__":
    main()
