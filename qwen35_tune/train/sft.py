"""Supervised fine-tuning: one top-to-bottom function over TRL's SFTTrainer, with our data and our run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from qwen35_tune.data.build import build_datasets
from qwen35_tune.train.batching import prepare_batching
from qwen35_tune.train.model_setup import ModelSetup
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


def build_sft_config(recipe, run_dir: Path, eval_rows: int | None = None):
    """SFTConfig from the recipe's ``train`` section; ``train.extra`` is validated by building the object.
    ``eval_rows``: rows the data build held out (None: whether the recipe holds any out), for the eval schedule."""
    from trl import SFTConfig

    kwargs = trainer_arguments(recipe, run_dir, eval_rows)  # what every stage's config takes (train/stage.py)
    # Our rows arrive tokenised, masked and truncated (with counts); TRL must not re-process or drop them.
    kwargs.update(dataset_kwargs={"skip_prepare_dataset": True})
    return build_config(SFTConfig, kwargs)


def run_sft(recipe, run_dir: Path, callbacks: tuple = (), resume: str | None = None, overwrite: bool = False) -> dict:
    """Train the recipe into ``run_dir`` and return the run summary; merges when ``export.merge`` is on.

    ``callbacks`` are extra transformers TrainerCallbacks (tests use one to watch parameters change).
    ``resume``: None, 'auto' (newest valid checkpoint in run_dir/checkpoints, if any) or a checkpoint folder.
    ``overwrite``: a fresh run may replace a run already in ``run_dir`` (otherwise that is refused).
    A SIGTERM/SIGUSR1 saves a checkpoint and returns early with ``summary["preempted"]`` set.
    The model side (the checks below, tokenizer and processor, later the weights) is ``train.model_setup``.
    Before any data or weights: recipe settings that would waste the run, the model's architecture and size
    against this machine; then the run directory is locked (``train.run_lock``) and checked (``train.run_claim``):
    ``train.stage.run_claimed``.
    """
    return run_claimed(recipe, run_dir, _train_sft, callbacks, resume, overwrite)


def _train_sft(recipe, setup: ModelSetup, run_dir: Path, callbacks: tuple, resume: str | None) -> dict:
    """The run itself, in a run directory this process may write (see ``run_sft``)."""
    from qwen35_tune.train.trainer import QwenSFTTrainer

    started = time.time()
    writes = open_run_dir(recipe, run_dir)  # None on other ranks: they build the same data but write nothing
    tokenizer, processor = setup.tokenizer, setup.processor
    train_ds, eval_ds, stats = build_datasets(recipe, tokenizer, writes, processor=processor)
    log.info("data: %s train rows, %d eval rows", stats["train_rows"] if stats["train_rows"] is not None
             else "streamed", stats["eval_rows"])  # fmt: skip
    train_ds, eval_ds, collator = prepare_batching(
        recipe, train_ds, eval_ds, tokenizer.pad_token_id, writes, processor=processor
    )
    eval_rows = len(eval_ds) if eval_ds is not None else 0  # none: nothing to evaluate (train/eval_schedule.py)
    sft_config = build_sft_config(recipe, run_dir, eval_rows)  # before the weights: under ZeRO-3 the load shards
    loaded = setup.load_weights(sft_config)
    if hasattr(collator, "bind_model"):  # packed image rows take their M-RoPE indices from the model
        collator.bind_model(loaded.model)
    trainer = QwenSFTTrainer(
        model=loaded.model,
        args=sft_config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=collator,
        processing_class=tokenizer,
        peft_config=loaded.peft_config,
        **trainer_wiring(recipe, run_dir, callbacks),
    )
    start_training(trainer, recipe, setup, run_dir, resume)
    if trainer.preemption.requested is not None:
        return {**write_summary(run_dir, recipe, trainer, started, stats), "preempted": trainer.preemption.requested}
    save_trained(trainer, recipe, setup, run_dir)  # adapter/ or model/, run.json (with the chain of stages)
    summary = write_summary(run_dir, recipe, trainer, started, stats)
    return export_trained(recipe, run_dir, trainer, summary)  # export.merge: merged/, verified (and published)
