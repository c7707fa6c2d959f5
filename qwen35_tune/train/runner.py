"""``qwen35-tune train`` runs the recipe's stage (``stage: sft | dpo | grpo``): one command, a runner per stage, each
reading top to bottom over its TRL trainer (train/sft.py, train/dpo.py, train/grpo.py). A new stage adds its runner
here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qwen35_tune.errors import UserError


def _sft() -> Callable:
    from qwen35_tune.train.sft import run_sft

    return run_sft


def _dpo() -> Callable:
    from qwen35_tune.train.dpo import run_dpo

    return run_dpo


def _grpo() -> Callable:
    from qwen35_tune.train.grpo import run_grpo

    return run_grpo


RUNNERS: dict[str, Callable[[], Callable]] = {"sft": _sft, "dpo": _dpo, "grpo": _grpo}


def check_stage(stage: str) -> None:
    """UserError (exit 2) for a stage the recipe schema knows but this version cannot train yet."""
    if stage not in RUNNERS:
        raise UserError(f"stage: {stage} is not available yet in this version of qwen35-tune (stages that train: "
                        f"{', '.join(RUNNERS)}); set stage: {' or '.join(RUNNERS)}")


def runner_for(stage: str) -> Callable:
    """The ``run_*`` function of ``stage`` (``check_stage`` first)."""
    check_stage(stage)
    return RUNNERS[stage]()


def run_stage(recipe, run_dir: Path, callbacks: tuple = (), resume: str | None = None,
              overwrite: bool = False) -> dict:  # fmt: skip
    """Train ``recipe`` with its stage's runner (arguments and summary as ``train.sft.run_sft``)."""
    return runner_for(recipe.stage)(recipe, run_dir, callbacks=callbacks, resume=resume, overwrite=overwrite)
