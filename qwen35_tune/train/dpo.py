"""Preference tuning (DPO): one top-to-bottom function over TRL's DPOTrainer, with our pairs and our run directory.

The reference policy DPO compares against costs no second model for LoRA / QLoRA: a fresh adapter's reference is the
base with the adapter switched off, and an adapter continued from an earlier stage (``model.init_from``) is
compared with a frozen copy of itself as it started (TRL's ``ref`` adapter, the size of the adapter). Only a full
fine-tune loads an explicit reference copy, through the same model setup as the policy, unless
``dpo.precompute_ref_log_probs`` scores every pair once before training instead.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from qwen35_tune.data.build import build_datasets
from qwen35_tune.data.preference_build import preference_columns, render_preference_card
from qwen35_tune.recipe.dpo_section import DPOSection
from qwen35_tune.train.callbacks import read_metrics
from qwen35_tune.train.model_setup import ModelSetup
from qwen35_tune.train.preference_collator import build_preference_collator
from qwen35_tune.train.stage import (
    build_config,
    export_trained,
    open_run_dir,
    run_claimed,
    save_trained,
    start_training,
    trainer_arguments,
    trainer_wiring,
    write_summary,
)

log = logging.getLogger(__name__)

# TRL's name for the frozen copy of a continued adapter (trl 1.16 DPOTrainer.__init__); peft saves it as a subfolder.
REFERENCE_ADAPTER = "ref"
# Metrics TRL's DPOTrainer logs that summary.json keeps (first and last logged value).
PREFERENCE_METRICS = ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected")


def build_dpo_config(recipe, run_dir: Path, eval_rows: int | None = None):
    """DPOConfig from the recipe's ``train`` and ``dpo`` sections; validated by building the object. ``eval_rows``:
    pairs the data build held out (None: whether the recipe holds any out), for the eval schedule."""
    from trl import DPOConfig

    kwargs = trainer_arguments(recipe, run_dir, eval_rows)  # what every stage's config takes (train/stage.py)
    kwargs.update((recipe.dpo or DPOSection()).config_kwargs())  # beta, loss_type, ... (TRL's names)
    return build_config(DPOConfig, kwargs)


def run_dpo(recipe, run_dir: Path, callbacks: tuple = (), resume: str | None = None, overwrite: bool = False) -> dict:
    """Preference-tune the recipe into ``run_dir`` and return the run summary; merges when ``export.merge`` is on.

    The arguments are ``train.sft.run_sft``'s; the checks before any data or weights and the claimed run directory
    are the same (``train.stage.run_claimed``).
    """
    return run_claimed(recipe, run_dir, _train_dpo, callbacks, resume, overwrite)


def _train_dpo(recipe, setup: ModelSetup, run_dir: Path, callbacks: tuple, resume: str | None) -> dict:
    """The run itself, in a run directory this process may write (see ``run_dpo``)."""
    from qwen35_tune.train.trainer import QwenDPOTrainer

    started = time.time()
    writes = open_run_dir(recipe, run_dir)  # None on other ranks: they build the same data but write nothing
    tokenizer, processor = setup.tokenizer, setup.processor
    train_ds, eval_ds, stats = build_datasets(recipe, tokenizer, writes, processor=processor,
                                              render=render_preference_card, to_columns=preference_columns)
    log.info("data: %d train pairs, %d eval pairs", stats["train_rows"], stats["eval_rows"])
    eval_rows = len(eval_ds) if eval_ds is not None else 0  # none: nothing to evaluate (train/eval_schedule.py)
    dpo_config = build_dpo_config(recipe, run_dir, eval_rows)  # before the weights: under ZeRO-3 the load shards
    loaded = setup.load_weights(dpo_config)
    collator = build_preference_collator(recipe, train_ds, eval_ds, tokenizer, processor, dpo_config)
    trainer = QwenDPOTrainer(
        model=loaded.model,
        ref_model=_reference_model(recipe, setup, dpo_config),  # full fine-tunes only (see the module docstring)
        args=dpo_config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        peft_config=loaded.peft_config,
        **trainer_wiring(recipe, run_dir, callbacks),
    )
    start_training(trainer, recipe, setup, run_dir, resume)
    figures = _preference_figures(run_dir)
    if trainer.preemption.requested is not None:
        summary = write_summary(run_dir, recipe, trainer, started, stats, **figures)
        return {**summary, "preempted": trainer.preemption.requested}
    out = save_trained(trainer, recipe, setup, run_dir)  # adapter/ or model/, run.json (with the chain of stages)
    if trainer.is_world_process_zero() and (out / REFERENCE_ADAPTER / "adapter_config.json").is_file():
        shutil.rmtree(out / REFERENCE_ADAPTER)  # the frozen starting copy: peft saves every adapter a model holds
    summary = write_summary(run_dir, recipe, trainer, started, stats, **figures)
    return export_trained(recipe, run_dir, trainer, summary)  # export.merge: merged/, verified (and published)


def _reference_model(recipe, setup: ModelSetup, dpo_config):
    """A frozen copy of the starting weights for a full fine-tune (loaded like the policy); None otherwise."""
    if recipe.method.kind != "full" or dpo_config.precompute_ref_log_probs:
        return None
    reference = setup.load_weights(dpo_config).model
    reference.requires_grad_(False)
    log.info("DPO reference: a frozen copy of %s (full fine-tune)", setup.model_path)
    return reference.eval()


def _preference_figures(run_dir: Path) -> dict:
    """The first and last logged value of each of TRL's preference metrics, for summary.json."""
    metrics = read_metrics(run_dir / "metrics.jsonl")
    figures = {}
    for name in PREFERENCE_METRICS:
        values = [m[name] for m in metrics if name in m]
        if values:
            key = name.replace("/", "_")
            figures[f"first_{key}"], figures[f"final_{key}"] = values[0], values[-1]
    return figures
