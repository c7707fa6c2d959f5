"""``train`` writes the run report: environment.json when the run starts, report.html when it ends however it ends
(finished, preempted, failed or interrupted). Best-effort: a report that cannot be written is a logged warning, never
a failed run, and never hides the training error."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)


def _main_process() -> bool:
    from qwen35_tune.train.distributed import is_main_process

    return is_main_process()


def record_environment(run_dir: Path) -> None:
    """environment.json: what this run trains with (see report.environment)."""
    from qwen35_tune.report.environment import environment_record

    run = RunDir(Path(run_dir))
    run.path.mkdir(parents=True, exist_ok=True)
    run.environment_json.write_text(json.dumps(environment_record(), indent=2))


def write_report_quietly(run_dir: Path, failure: BaseException | None = None) -> Path | None:
    """report.html of ``run_dir``, or None with a warning when it could not be written."""
    try:
        from qwen35_tune.report.page import write_report

        path = write_report(run_dir, failure=failure)
    except Exception as exc:  # noqa: BLE001 (the report is a view of the run, not part of its result)
        log.warning("run report not written (%s: %s); the run itself is unaffected: `qwen35-tune report %s` "
                    "writes it again", type(exc).__name__, exc, run_dir)
        return None
    log.info("run report: %s", path)
    return path


@contextmanager
def report_on_exit(run_dir: Path) -> Iterator[None]:
    """Around a training run in ``run_dir`` (on the main process): record the environment, and write report.html
    at the end, with the failure when the run raised (the exception still propagates unchanged)."""
    if not _main_process():
        yield
        return
    try:
        record_environment(run_dir)
    except Exception as exc:  # noqa: BLE001 (same as the report: never the reason a run fails)
        log.warning("environment.json not written (%s: %s)", type(exc).__name__, exc)
    try:
        yield
    except BaseException as exc:
        write_report_quietly(run_dir, failure=exc)
        raise
    write_report_quietly(run_dir)
