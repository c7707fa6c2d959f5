"""Experiment tracking (``tracking.report_to``: wandb, tensorboard) on top of transformers' own integrations.

transformers' WandbCallback / TensorBoardCallback already log metrics and the trainer arguments from rank 0 (with
``*_token`` arguments masked). What they cannot know is the run's provenance: which recipe, base model, data cards
and code revision produced it; this module adds that to the tracker's run config (and ``run_config.json`` in the run
directory), on rank 0, with any value of a secret-looking environment variable (HF_TOKEN, WANDB_API_KEY, ...) redacted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from pathlib import Path

from transformers import TrainerCallback

from qwen35_tune import strict_json

log = logging.getLogger(__name__)

_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
REDACTED = "<redacted>"


def git_revision(path: Path | None = None) -> str | None:
    """``git describe --always --dirty`` of the checkout holding ``path`` (default: this package); None outside git."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "describe", "--always", "--dirty", "--abbrev=40"],
                             capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def redact_secrets(value, environ: dict[str, str] | None = None):
    """``value`` with every occurrence of a secret environment variable's value replaced (recursively)."""
    env = os.environ if environ is None else environ
    secrets = sorted({v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)
    if not secrets:
        return value

    def scrub(item):
        if isinstance(item, str):
            for secret in secrets:
                item = item.replace(secret, REDACTED)
            return item
        if isinstance(item, dict):
            return {k: scrub(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [scrub(v) for v in item]
        return item

    return scrub(value)


def run_config(recipe) -> dict:
    """What produced this run: recipe name and files, model, method, data cards, seed and code revision."""
    from qwen35_tune import __version__
    from qwen35_tune.doctor import last_kernel_choice

    cards = [{"name": card.name, "path": ref.path, "weight": ref.weight} for ref, card in recipe.card_pairs("train")]
    config = {
        "recipe": recipe.name,
        "recipe_files": [str(p) for p in recipe.source_files],
        "model": recipe.model.name_or_path,
        "model_revision": recipe.model.revision,
        "method": recipe.method.kind,
        "data_cards": cards,
        "eval_cards": [card.name for _, card in recipe.card_pairs("eval")],
        "seed": recipe.seed,
        "git_revision": git_revision(),
        "qwen35_tune_version": __version__,
        "kernels": last_kernel_choice(),  # GDN recurrence / convolution / attention implementations that ran
    }
    return redact_secrets(config)


class RunConfigCallback(TrainerCallback):
    """At train begin (rank 0), after the tracker callbacks set up, add the run config to each active tracker."""

    def __init__(self, config: dict, handler):
        self.config, self.handler = config, handler

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for callback in self.handler.callbacks:
            name = type(callback).__name__
            if name == "TensorBoardCallback" and getattr(callback, "tb_writer", None) is not None:
                callback.tb_writer.add_text("qwen35_tune/run_config", json.dumps(self.config, indent=2))
                callback.tb_writer.flush()
            elif name == "WandbCallback" and getattr(callback, "_wandb", None) is not None:
                run = callback._wandb.run
                if run is not None:
                    run.config.update({"qwen35_tune": self.config}, allow_val_change=True)


_WANDB_DIR_SET = "QWEN35_TUNE_WANDB_DIR"  # remembers the WANDB_DIR this module set (vs one the user exported)


def point_wandb_at(run_dir: Path, environ: dict | None = None) -> str:
    """wandb's files (``wandb/`` with the offline run) go under the run directory, not the current directory.

    wandb.init reads ``WANDB_DIR`` (and creates ``WANDB_DIR/wandb``); a WANDB_DIR the user exported is kept.
    """
    env = os.environ if environ is None else environ
    current = env.get("WANDB_DIR")
    if current and current != env.get(_WANDB_DIR_SET):
        return current
    target = str(Path(run_dir).resolve())
    Path(target).mkdir(parents=True, exist_ok=True)
    env["WANDB_DIR"] = env[_WANDB_DIR_SET] = target
    return target


def attach_tracking(trainer, recipe, run_dir: Path) -> dict:
    """Point the trackers at the run directory, give them the run config; returns it (also in run_config.json)."""
    config = run_config(recipe)
    if trainer.is_world_process_zero():
        (run_dir / "run_config.json").write_text(strict_json.dumps(config, indent=2))
    wanted = set(recipe.tracking.report_to) - {"none"}
    if not wanted:
        return config
    if "wandb" in wanted and recipe.tracking.project:
        os.environ.setdefault("WANDB_PROJECT", recipe.tracking.project)  # what WandbCallback reads at setup
    if "wandb" in wanted:
        point_wandb_at(run_dir)
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback" and callback.logging_dir is None:
            callback.logging_dir = str(run_dir / "tensorboard")  # default would be inside checkpoints/
    trainer.add_callback(RunConfigCallback(config, trainer.callback_handler))
    log.info("tracking: %s (git %s)", ", ".join(sorted(wanted)), config["git_revision"] or "unknown")
    return config
