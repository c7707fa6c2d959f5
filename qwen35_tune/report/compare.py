"""Runs side by side: overlaid loss and learning-rate curves, the recipe keys whose values differ, and each suite's
scores with their difference from the first run."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.report.eval_facts import shown_metrics
from qwen35_tune.report.series import downsample
from qwen35_tune.report.svg import PALETTE, Line, fmt, line_chart
from qwen35_tune.report.view import RunView, build_run_view

BUDGET = 600
MISSING = "—"


@dataclass
class Comparison:
    """Everything the comparison page shows."""

    generated_at: str
    runs: list  # [{label, color, dir, status, summary}]
    charts: list
    differences: list  # [{key, values: [str per run]}]
    same: int  # recipe keys equal in every run
    scores: list  # [{suite, mode, metric, values: [str], deltas: [str]}]


def _labels(views: list[RunView]) -> list[str]:
    """Each run's name, with its folder added where two runs share a name."""
    names = [v.name for v in views]
    return [f"{n} ({v.run_dir.name})" if names.count(n) > 1 else n for n, v in zip(names, views, strict=True)]


def _overlay(views, labels, key: str, eval_key: str | None, title: str, chart_id: str):
    lines = []
    for i, (view, label) in enumerate(zip(views, labels, strict=True)):
        color = PALETTE[i % len(PALETTE)]
        lines.append(Line(label if eval_key is None else f"{label} train", downsample(view.series.points(key), BUDGET),
                          color))
        if eval_key and view.series.points(eval_key):
            lines.append(Line(f"{label} eval", downsample(view.series.points(eval_key), BUDGET), color, True))
    return line_chart(lines, title=title, chart_id=chart_id)


def _shown(value) -> str:
    if value is MISSING:
        return MISSING
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def recipe_differences(views: list[RunView]) -> tuple[list[dict], int]:
    """(keys whose value differs between runs, with each run's value; how many keys are the same everywhere)."""
    keys = list(dict.fromkeys(k for v in views for k in v.leaves))
    rows, same = [], 0
    for key in keys:
        values = [v.leaves.get(key, MISSING) for v in views]
        if all(json.dumps(x, sort_keys=True, default=str) == json.dumps(values[0], sort_keys=True, default=str)
               for x in values):
            same += 1
            continue
        rows.append({"key": key, "values": [_shown(x) for x in values]})
    return rows, same


def score_rows(views: list[RunView]) -> list[dict]:
    """Per suite, mode and metric: every run's value and its difference from the first run's."""
    table: dict[tuple, list] = {}
    for index, view in enumerate(views):
        for result in view.evaluation:
            for mode, metrics in result.modes.items():
                for metric, value in shown_metrics(metrics):
                    if isinstance(value, (int, float)):
                        table.setdefault((result.suite, mode, metric), [None] * len(views))[index] = value
    rows = []
    for (suite, mode, metric), values in table.items():
        base = values[0]
        deltas = ["" if i == 0 or v is None or base is None else f"{v - base:+.4g}" for i, v in enumerate(values)]
        rows.append({"suite": suite, "mode": mode, "metric": metric, "values": [fmt(v) if v is not None else MISSING
                                                                              for v in values], "deltas": deltas})
    return rows


def build_comparison(run_dirs: list[Path]) -> Comparison:
    if len(run_dirs) < 2:
        raise UserError("comparing needs at least two run directories")
    views = [build_run_view(p, with_rows=False) for p in run_dirs]
    labels = _labels(views)
    runs = [{"label": label, "color": PALETTE[i % len(PALETTE)], "dir": str(view.run_dir), "status": view.status,
             "summary": dict(view.summary)} for i, (label, view) in enumerate(zip(labels, views, strict=True))]
    charts = [_overlay(views, labels, "loss", "eval_loss", "loss (solid: train, dashed: eval)", "chart-loss"),
              _overlay(views, labels, "learning_rate", None, "learning rate", "chart-learning-rate"),
              _overlay(views, labels, "grad_norm", None, "gradient norm", "chart-grad-norm")]
    differences, same = recipe_differences(views)
    return Comparison(time.strftime("%Y-%m-%d %H:%M:%S"), runs, charts, differences, same, score_rows(views))
