"""scripts/gpu_check.sh as CI runs it: a CPU dry run of every stage with tiny shapes (GPU_CHECK_SMOKE=1).

Its numbers mean nothing on a CPU; what this holds is that the prepared GPU validation still runs against the
current code (doctor, kernel bindings, collator, planner, load_model / prepare_model / quantization, LoRA recipes),
so the one device run a task may get is not spent on a script that rotted. About 45 s of CPU time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


@pytest.mark.smoke
def test_gpu_check_cpu_dry_run_runs_every_stage(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "OUT": str(out), "PYBIN": sys.executable, "CAP_SCALE": "2",
           "QWEN35_TUNE_CACHE": str(tmp_path / "cache"), "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    env.pop("GPU_CHECK_STAGES", None)
    done = subprocess.run(["bash", str(SCRIPT), "run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    planned = [line.split()[0] for line in subprocess.run(["bash", str(SCRIPT), "list"], capture_output=True,
                                                           text=True, check=True).stdout.splitlines()]
    status = {r["stage"]: r["status"] for r in rows if "status" in r}
    assert status == {name: "ok" for name in planned}, (status, (out.with_suffix(".logs") / "smoke.log"))
    verdicts = {r["stage"]: r["verdict"] for r in rows if "verdict" in r}
    assert verdicts == {"doctor": "PASS", "conv": "PASS", "gva": "PASS", "packed": "PASS"}
    throughput = [r for r in rows if r["stage"] == "throughput" and "tokens_per_s" in r]
    assert [r["config"][0] for r in throughput] == ["A", "B", "C"] and all(r["tokens_per_s"] > 0 for r in throughput)
    assert any("planner" in r and "ddp" in " ".join(r["planner"]) for r in rows)
    qlora = {r["method"]: r for r in rows if r["stage"] == "qlora_moe" and "method" in r}
    assert qlora["qlora"]["after_prepare"]["expert_bytes"] * 3 < qlora["qlora"]["bf16_expert_bytes"]  # 4-bit
    assert qlora["lora"]["after_prepare"]["expert_bytes"] == qlora["lora"]["bf16_expert_bytes"]
    assert qlora["qlora"]["expert_lora_params"] > 0
    assert (out / "summary.txt").read_text().strip().endswith("done") and (out / "logs.tgz").stat().st_size > 0
