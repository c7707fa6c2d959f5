"""A run's evaluation results for the page: scores per suite and mode from ``eval/<suite>.json`` (the final model,
or the last in-training round), and a few generations of each marked right or wrong with the checker's reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from qwen35_tune.rundir import RunDir

SAMPLES_EACH = 3  # right and wrong generations shown per suite and mode
TEXT_CHARS = 1200
HIDDEN_METRICS = {"mode", "budget", "seconds", "verdicts"}


@dataclass
class SuiteResult:
    """One suite's json: its metrics per mode, where its rows came from, and sample generations."""

    suite: str
    primary: str
    where: str  # "final model" or "step N"
    rows_from: str
    modes: dict
    contamination: dict | None
    samples: list = field(default_factory=list)

    def headline(self) -> list[tuple[str, float | None]]:
        """(mode, primary metric) per mode."""
        return [(mode, metrics.get(self.primary)) for mode, metrics in self.modes.items()]


def _results_folder(run: RunDir) -> tuple[Path | None, str]:
    """eval/ when it holds final results, else the newest eval/step_NNNNNN/ of an in-training eval."""
    if not run.eval.is_dir():
        return None, ""
    if any(run.eval.glob("*.json")):
        return run.eval, "final model"
    steps = sorted(p for p in run.eval.glob("step_*") if p.is_dir() and any(p.glob("*.json")))
    if not steps:
        return None, ""
    return steps[-1], f"step {int(steps[-1].name.split('_')[-1])}"


def _cut(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + f"… ({len(text):,} characters)"


def _samples(path: Path) -> list[dict]:
    """Up to SAMPLES_EACH right and wrong generations per mode, in file order."""
    if not path.exists():
        return []
    taken: dict[tuple[str, bool], int] = {}
    out = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                sample = json.loads(line)
            except ValueError:
                continue
            if not isinstance(sample, dict):
                continue
            key = (str(sample.get("mode", "")), bool(sample.get("correct")))
            if taken.get(key, 0) >= SAMPLES_EACH:
                continue
            taken[key] = taken.get(key, 0) + 1
            out.append({"mode": key[0], "correct": key[1], "verdict": str(sample.get("verdict", "")),
                        "detail": _cut(sample.get("detail", "")) if sample.get("detail") else "",
                        "prompt": _cut(sample.get("prompt", "")), "output": _cut(sample.get("output", "")),
                        "extracted": _cut(sample.get("extracted")) if sample.get("extracted") is not None else None,
                        "gold": _cut(sample.get("gold")) if sample.get("gold") is not None else None})
    return sorted(out, key=lambda s: (s["mode"], not s["correct"]))


def read_eval(run: RunDir) -> list[SuiteResult]:
    """Every suite result of the run (see the module doc); unreadable files are skipped."""
    folder, where = _results_folder(run)
    if folder is None:
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(report, dict) or not isinstance(report.get("modes"), dict):
            continue
        samples = _samples(path.with_suffix("").with_suffix(".samples.jsonl"))
        out.append(SuiteResult(str(report.get("suite", path.stem)), str(report.get("primary_metric", "score")),
                               where, str(report.get("rows_from", "")), report["modes"], report.get("contamination"),
                               samples))
    return out


def shown_metrics(metrics: dict) -> list[tuple[str, object]]:
    """The metrics of one mode worth a column (numbers; verdict counts as text)."""
    out = [(k, v) for k, v in metrics.items() if k not in HIDDEN_METRICS and isinstance(v, (int, float))]
    verdicts = metrics.get("verdicts")
    if isinstance(verdicts, dict) and verdicts:
        out.append(("verdicts", ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))))
    return out


def metric_columns(result: SuiteResult) -> list[str]:
    """The metric columns of a suite's table: every mode's shown metrics, primary first."""
    keys = [k for metrics in result.modes.values() if isinstance(metrics, dict) for k, _ in shown_metrics(metrics)]
    keys = list(dict.fromkeys(keys))
    return sorted(keys, key=lambda k: (k != result.primary, keys.index(k)))
