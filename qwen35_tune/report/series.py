"""metrics.jsonl as per-key series over steps, and their downsampling for plots.

A long run logs 100k+ rows; a page that plots them all is slow and large. Each series is cut to at most
``budget`` points by min/max per bucket: the points split into equal-count buckets in step order, and each bucket
keeps its lowest and highest value (plus the series' first and last point), so spikes and the envelope survive
where plain striding or averaging would hide a loss spike.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from qwen35_tune.report.jsonl_records import json_records

NOT_PLOTTED = {"step", "epoch", "time", "nonfinite_keys"}
# The end-of-training record transformers logs once (a summary, not a point of a curve).
FINAL_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss"}
TOKENS_PER_SECOND = "tokens_per_second"


@dataclass
class MetricSeries:
    """Every logged metric by key: steps and values as compact arrays (100k rows x 10 keys stay ~16 MB)."""

    steps: dict[str, array] = field(default_factory=dict)
    values: dict[str, array] = field(default_factory=dict)
    final: dict = field(default_factory=dict)  # the end-of-training record
    rows: int = 0
    unreadable: int = 0  # lines that were not a JSON object (a torn last line of a killed run)

    def add(self, key: str, step: float, value: float) -> None:
        if key not in self.steps:
            self.steps[key], self.values[key] = array("d"), array("d")
        self.steps[key].append(step)
        self.values[key].append(value)

    def points(self, key: str) -> list[tuple[float, float]]:
        return list(zip(self.steps.get(key, ()), self.values.get(key, ()), strict=True))

    def last_step(self) -> int | None:
        """The highest step anything was logged at."""
        ends = [max(steps) for steps in self.steps.values() if steps]
        return int(max(ends)) if ends else None

    def last(self, key: str) -> float | None:
        values = self.values.get(key)
        return values[-1] if values else None


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_series(path: Path) -> MetricSeries:
    """Read metrics.jsonl line by line into series; tokens/s between consecutive logs is derived from
    ``num_tokens`` and the wall-clock ``time`` each record carries."""
    out = MetricSeries()
    if not path.exists():
        return out
    previous: tuple[float, float] | None = None  # (time, num_tokens) of the last record that had both
    for record in json_records(path):
        if record is None:
            out.unreadable += 1
            continue
        out.rows += 1
        step = _number(record.get("step"))
        if step is None:
            continue
        if FINAL_KEYS & record.keys() and "loss" not in record:
            out.final.update({k: v for k, v in record.items() if k in FINAL_KEYS})
            continue
        for key, value in record.items():
            number = _number(value)
            if number is not None and key not in NOT_PLOTTED:
                out.add(key, step, number)
        now, tokens = _number(record.get("time")), _number(record.get("num_tokens"))
        if now is not None and tokens is not None:
            if previous is not None and now > previous[0] and tokens >= previous[1]:
                out.add(TOKENS_PER_SECOND, step, (tokens - previous[1]) / (now - previous[0]))
            previous = (now, tokens)
    return out


def downsample(points: list[tuple[float, float]], budget: int = 600) -> list[tuple[float, float]]:
    """At most ``budget`` + 2 points that keep each bucket's minimum and maximum, in order (see the module doc)."""
    if len(points) <= budget:
        return list(points)
    buckets = max(1, budget // 2)
    size = len(points) / buckets
    kept = [points[0]]
    for b in range(buckets):
        chunk = points[int(b * size): int((b + 1) * size)]
        if not chunk:
            continue
        low = min(range(len(chunk)), key=lambda i: chunk[i][1])
        high = max(range(len(chunk)), key=lambda i: chunk[i][1])
        kept += [chunk[i] for i in sorted({low, high})]
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept
