"""scripts/gpu_check.sh's shape: valid bash, its stage table and the stage module agree, unknown stages refused."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _stages_module():
    spec = importlib.util.spec_from_file_location("gpu_check_stages", REPO / "scripts/gpu_check/stages.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_script_is_valid_bash_and_lists_the_stages_the_module_has():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    listed = subprocess.run(["bash", str(SCRIPT), "list"], capture_output=True, text=True, check=True).stdout
    plan = dict(line.split() for line in listed.splitlines())
    stages = _stages_module().STAGES
    assert set(plan) | {"throughput_packed"} == set(stages)  # throughput_packed: the causal-conv1d second pass
    assert sum(int(cap) for cap in plan.values()) <= 575  # the whole run fits one 600 s device command


def test_stage_runner_refuses_unknown_stages_and_bad_modes(capsys):
    assert _stages_module().main(["nope"]) == 2 and "unknown stage" in capsys.readouterr().err
    done = subprocess.run(["bash", str(SCRIPT), "bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr
