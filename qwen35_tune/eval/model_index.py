"""The final eval results of a run (``<run_dir>/eval/<suite>.json``) as huggingface_hub ``EvalResult``s, which
``ModelCardData(eval_results=...)`` writes as the card's ``model-index`` metadata."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)

TASK_TYPES = {"math": "text-generation", "code": "text-generation", "translation": "translation",
              "qa": "question-answering"}


def eval_results(run_dir: RunDir | Path) -> list:
    """One EvalResult per suite, mode and headline metric found in the run's eval folder (empty when none)."""
    from huggingface_hub import EvalResult

    results = []
    for path in sorted(RunDir.of(run_dir).eval.glob("*.json")):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("model card: skipping unreadable eval file %s", path)
            continue
        if not isinstance(report, dict) or "modes" not in report:
            continue
        for mode, metrics in report["modes"].items():
            for key in _headline_keys(report, metrics):
                results.append(EvalResult(
                    task_type=TASK_TYPES.get(report.get("kind"), "text-generation"),
                    task_name=f"{report['suite']} ({mode})",
                    dataset_type=report["suite"], dataset_name=report.get("rows_from") or report["suite"],
                    metric_type=key, metric_value=round(float(metrics[key]), 4),
                    metric_name=f"{key} ({mode}, {metrics.get('budget')} new tokens, n={metrics.get('n')})",
                ))
    return results


def _headline_keys(report: dict, metrics: dict) -> list[str]:
    keys = [report.get("primary_metric")] + (["bleu"] if report.get("kind") == "translation" else [])
    keys = [k for k in keys if k in metrics and isinstance(metrics[k], (int, float))]
    return keys or [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)][:3]
