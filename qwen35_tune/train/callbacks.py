"""Trainer callbacks that make the run directory readable: metrics.jsonl as training goes, a PNG plot at the end."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers import TrainerCallback

from qwen35_tune.strict_json import record_dumps


class MetricsFileCallback(TrainerCallback):
    """Append every logged metrics dict (with step and epoch) to ``metrics.jsonl``; rank 0 only."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        # wall-clock time (Unix seconds): the run report derives tokens/s between logged steps from it
        record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(record_dumps(record) + "\n")  # strict JSON: NaN/inf as null, named in nonfinite_keys


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_metrics(metrics_path: Path, out_png: Path) -> Path | None:
    """Loss and learning-rate curves side by side; returns None when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path) if "loss" in r or "learning_rate" in r]
    if not rows:
        return None
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, ax in (("loss", ax_loss), ("learning_rate", ax_lr)):
        points = [(r["step"], r[key]) for r in rows if _finite(r.get(key))]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=2)
        ax.set_xlabel("step")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    eval_points = [(r["step"], r["eval_loss"]) for r in read_metrics(metrics_path) if _finite(r.get("eval_loss"))]
    if eval_points:
        ax_loss.plot(*zip(*eval_points, strict=True), marker="s", label="eval")
        ax_loss.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
