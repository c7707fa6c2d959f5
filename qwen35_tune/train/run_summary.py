"""What ``summary.json`` says about a run beyond its losses: the final eval loss, how much of the model trained, the
machine it trained on, and where the merged model went. Shared by every stage runner."""

from __future__ import annotations

import json
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.hardware import describe_hardware
from qwen35_tune.rundir import RunDir


def last_value(metrics: list[dict], key: str) -> float | None:
    """The last logged value of ``key`` in metrics.jsonl records (None when never logged)."""
    values = [m[key] for m in metrics if isinstance(m.get(key), (int, float)) and not isinstance(m.get(key), bool)]
    return values[-1] if values else None


def trainable_counts(run_dir: Path) -> dict:
    """Trainable parameters (count and % of the base model's) from the run's preflight.json; None when absent."""
    path = RunDir(run_dir).preflight_json
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        count, percent = report["total"]["trainable"], report["trainable_percent"]
    except (OSError, ValueError, KeyError, TypeError):
        count = percent = None
    return {"trainable_params": count, "trainable_percent": percent}


def summary_facts(run_dir: Path, metrics: list[dict]) -> dict:
    """The summary.json keys of this module: eval_loss, trainable_params / _percent, hardware, cpu, cpu_cores, gpus."""
    return {"eval_loss": last_value(metrics, "eval_loss"), **trainable_counts(run_dir), **describe_hardware()}


def record_export(run_dir: Path, summary: dict, **exported) -> dict:
    """Add what export produced (``merged_dir``, ``hub_repo_id``) to the summary and to summary.json (main process)."""
    summary.update(exported)
    path = RunDir(run_dir).summary_json
    if path.exists():
        path.write_text(strict_json.dumps(summary, indent=2))
    return summary
