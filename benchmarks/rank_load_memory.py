"""CPU RAM one training rank needs to load Qwen3.5-35B-A3B-shaped weights, per launch strategy (bf16, no quantization).

  python benchmarks/rank_load_memory.py [--layers 2] [--vocab 8192] [--device cpu|cuda]

The checkpoint is the one benchmarks/moe_qlora_load_peak.py writes (real 35B-A3B layer dims, N layers, per-expert
tensors). Each case runs ``qwen35_tune.models.load.load_model`` in a fresh process with the environment
``accelerate launch`` would give that rank, and reports the peak anonymous RSS (heap, not the shared page cache of
the memory-mapped checkpoint) above the process's baseline:

- single:     one process, transformers' default (a full CPU copy; the trainer moves it to the GPU later);
- fsdp rank1: FSDP with fsdp_cpu_ram_efficient_loading, local rank 1 (meta tensors; weights come from rank 0);
- ddp rank3:  DDP / ZeRO-1/2, local rank 3 of 8 (``--device cuda`` only: weights stream to cuda:3, so it needs 4
  GPUs; on one GPU run it with ``--ddp-rank 0``).
ZeRO-3 is transformers' own path (zero.Init; rank 0 reads the memory-mapped checkpoint, the others meta).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from moe_qlora_load_peak import REAL_LAYERS, PeakSampler, _rss_anon, write_checkpoint

GiB = 2**30


def measure(path: str, case: str) -> dict:
    """Load ``path`` as ``case`` in this process; bytes of peak anonymous RSS and parameters off the meta device."""
    import torch

    from qwen35_tune.models.load import load_model

    baseline = _rss_anon()
    if case == "fsdp":
        import torch.distributed as dist

        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # transformers checks it
    with PeakSampler() as peak:
        model = load_model(path, "bfloat16")
    real = sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type != "meta")
    return {"case": case, "peak": peak.peak - baseline, "param_bytes_materialised": real,
            "devices": sorted({str(p.device) for p in model.parameters()}),
            "gpu_peak": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0}  # fmt: skip


ENVS = {
    "single": {},
    "fsdp": {"WORLD_SIZE": "8", "LOCAL_RANK": "1", "RANK": "1", "ACCELERATE_USE_FSDP": "true",
             "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"},  # fmt: skip
    "ddp": {"WORLD_SIZE": "8", "RANK": "3"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--ddp-rank", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    cases = ["single", "fsdp"] + (["ddp"] if args.device == "cuda" else [])
    with tempfile.TemporaryDirectory(prefix="q35-rank-load-") as tmp:
        path = write_checkpoint(Path(tmp) / "ckpt", args.layers, args.vocab)
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        print(f"checkpoint: {args.layers} layers of 35B-A3B dims, {size / GiB:.2f} GiB "
              f"(the real {REAL_LAYERS} layers: ~{size / args.layers * REAL_LAYERS / GiB:.0f} GiB)")
        for case in cases:
            env = {**os.environ, **ENVS[case], "LOCAL_RANK": ENVS[case].get("LOCAL_RANK", str(args.ddp_rank))}
            if args.device == "cpu":
                env["CUDA_VISIBLE_DEVICES"] = ""
            out = subprocess.run([sys.executable, __file__, "--child", str(path), case], env=env, check=True,
                                 capture_output=True, text=True)  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {case:7s}: peak CPU heap {r['peak'] / GiB:6.2f} GiB, parameters materialised "
                  f"{r['param_bytes_materialised'] / GiB:6.2f} GiB on {', '.join(r['devices'])}"
                  + (f", GPU peak {r['gpu_peak'] / GiB:.2f} GiB" if args.device == "cuda" else ""))


if __name__ == "__main__":
    main()
