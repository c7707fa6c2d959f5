"""What a new user pays before the first result: the venv's size (and how much of it is CUDA), and the default run's
wall time and CPU time (user + system, which a busy machine does not inflate the way it inflates wall time).

    python benchmarks/install_and_default_run.py [--recipe recipes/tiny/sft_lora.yaml] [--skip-run]

The run is `qwen35-tune train RECIPE --output-dir <temp>` in a child process with a fresh QWEN35_TUNE_CACHE (cold:
the tiny checkpoint is built and the data rendered, as on a fresh machine), then again with that cache (warm).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def venv_sizes() -> dict[str, float]:
    """GB of the environment, of the nvidia-* wheels, of triton and of torch's own CUDA libraries."""
    site = Path(sysconfig.get_paths()["purelib"])
    torch_cuda = sum(_size(f) for f in (site / "torch" / "lib").glob("*cuda*"))
    return {"venv": _size(Path(sys.prefix)) / 1e9, "nvidia-*": _size(site / "nvidia") / 1e9,
            "triton": _size(site / "triton") / 1e9, "torch CUDA kernels": torch_cuda / 1e9,
            "torch": _size(site / "torch") / 1e9}


def timed_run(recipe: Path, cache: Path) -> tuple[float, float, float]:
    """(wall, user, system) seconds of one default run in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "QWEN35_TUNE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "qwen35_tune", "train", str(recipe), "--output-dir", out], env=env,
                       check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - started, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "tiny" / "sft_lora.yaml")
    parser.add_argument("--skip-run", action="store_true", help="only the venv sizes")
    args = parser.parse_args()
    sizes = venv_sizes()
    cuda = sizes["nvidia-*"] + sizes["triton"] + sizes["torch CUDA kernels"]
    print("venv " + ", ".join(f"{k} {v:.1f} GB" for k, v in sizes.items()) + f"; CUDA-only {cuda:.1f} GB")
    if args.skip_run:
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as cache:
        for label in ("cold", "warm"):
            wall, user, system = timed_run(args.recipe, Path(cache))
            print(f"{label}: wall {wall:.0f} s, CPU {user + system:.0f} s (user {user:.0f} + system {system:.0f})")


if __name__ == "__main__":
    main()
