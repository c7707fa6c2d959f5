"""The machine a run trained on, as recorded in ``summary.json``: CPU model and cores, GPU names and memory.

``platform.processor()`` says only ``x86_64`` (or nothing) on Linux, which tells a reader of a run nothing; the CPU's
model name is in ``/proc/cpuinfo`` there (``sysctl`` on macOS would do the same; ``platform`` is the fallback).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name ('AMD EPYC 7B13'), else what ``platform`` knows ('x86_64')."""
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():  # x86, ARM boards, MIPS
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_cores() -> int:
    """Logical CPUs this process may run on (a SLURM or container allocation, not the whole machine)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def gpus() -> list[dict]:
    """Name and memory (GiB) of each visible CUDA device; [] without torch or CUDA."""
    torch = sys.modules.get("torch")  # only when the caller runs torch anyway: this module never imports it
    if torch is None or not torch.cuda.is_available():
        return []
    out = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        out.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return out


def describe_hardware() -> dict:
    """{'hardware': one readable line, 'cpu', 'cpu_cores', 'gpus': [{'name', 'memory_gib'}]}."""
    cpu, cores, devices = cpu_model(), cpu_cores(), gpus()
    text = f"{cpu} ({cores} cores)"
    if devices:
        names: dict[str, int] = {}
        for device in devices:
            label = f"{device['name']} ({device['memory_gib']:g} GiB)"
            names[label] = names.get(label, 0) + 1
        text += "; " + ", ".join(f"{count}x {label}" for label, count in names.items())
    return {"hardware": text, "cpu": cpu, "cpu_cores": cores, "gpus": devices}
