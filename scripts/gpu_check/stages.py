"""Stages of scripts/gpu_check.sh: ``python scripts/gpu_check/stages.py STAGE [STAGE ...]`` (``--list``: the names).

The shell runs one stage per process, so an out-of-memory error or a crash loses only that stage; every result is a
JSON line in ``$OUT/results.jsonl`` (and a ``RESULT {...}`` line on stdout). ``GPU_CHECK_SMOKE=1``: tiny shapes on
CPU (the CI dry run; its numbers mean nothing, its verdicts only that the code runs). Stages use the project's public
functions (doctor, patches, collator, load_model / prepare_model, build_lora_config, the planner's make_plan), so the
check follows the code it validates.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules; this folder is not a package
import torch  # noqa: E402
from check_common import Ctx, memory, record  # noqa: E402
from kernel_stages import stage_conv, stage_doctor, stage_gva, stage_packed  # noqa: E402
from training_stages import stage_qlora_moe, stage_throughput  # noqa: E402

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
