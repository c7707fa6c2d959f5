"""Runs that survive failure: atomic checkpoints, keep-last-K, ``--resume auto``, and save-and-exit on preemption.

transformers' Trainer already saves and restores everything a bit-identical resume needs (weights or adapter,
optimizer, scheduler, RNG states, and the position in the data order through ``resume_from_checkpoint``). What
it does not do, and this module adds:

- it writes ``checkpoint-N`` in place, so a kill during the write leaves a half checkpoint that
  ``get_last_checkpoint`` would pick up; we stage it in ``.staging/`` and rename it into place (atomic on POSIX),
- it has no handler for SIGTERM / SIGUSR1 (SLURM preemption); ``PreemptionCallback`` saves and stops the run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)

STAGING = ".staging"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers' PREFIX_CHECKPOINT_DIR naming
# Files a Trainer checkpoint must hold to be resumable (weights are checked separately: their name varies).
_REQUIRED = ("trainer_state.json",)
_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json",
            "pytorch_model.bin", "pytorch_model_fsdp_0", "global_step")  # fmt: skip


def is_valid_checkpoint(path: Path) -> bool:
    """True if ``path`` holds a finished checkpoint (trainer state plus weights in any layout we write)."""
    if not path.is_dir() or not _CHECKPOINT.match(path.name):
        return False
    if not all((path / name).exists() for name in _REQUIRED):
        return False
    return any(any(path.glob(name + "*")) for name in _WEIGHTS)


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Valid checkpoints under ``checkpoints_dir``, oldest step first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if is_valid_checkpoint(p)]
    return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))


def find_resume_checkpoint(resume: str | None, checkpoints_dir: Path) -> str | None:
    """What to pass to ``Trainer.train(resume_from_checkpoint=...)`` for ``--resume`` (None, 'auto' or a path).

    'auto' is the newest valid checkpoint, or None (a fresh start) when there is none yet, so a job script can
    always pass it.
    """
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(checkpoints_dir)
        if found:
            log.info("resuming from %s", found[-1])
        else:
            log.info("--resume auto: no checkpoint in %s yet, starting fresh", checkpoints_dir)
        return str(found[-1]) if found else None
    path = Path(resume)
    if not is_valid_checkpoint(path):
        raise UserError(f"--resume {resume}: not a finished checkpoint folder (checkpoint-N with trainer_state.json "
                        "and weights); use --resume auto to pick the newest valid one")
    return str(path)


def rotate(checkpoints_dir: Path, keep: int | None) -> list[Path]:
    """Delete all but the newest ``keep`` valid checkpoints; returns the deleted folders."""
    if not keep:
        return []
    doomed = list_checkpoints(checkpoints_dir)[:-keep]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


class AtomicCheckpoints:
    """Trainer mixin: each checkpoint is written into ``.staging/`` and renamed into place when complete.

    transformers 5.x writes checkpoint-N in place and has no staging of its own, so ``_save_checkpoint`` points
    ``_get_output_dir`` at the staging folder for the one save (both private hooks, kept to
    ``qwen35_tune.patches``' rules: ``TRAINER_PRIVATE_HOOKS``). Works on any Trainer (SFT, DPO, ...). Keep-last-K runs
    after the rename, over finished checkpoints only, so a crash never leaves zero valid ones.
    """

    keep_last_checkpoints: int | None = None
    _staging_root: str | None = None  # set for the duration of one save

    def rotate_checkpoints_atomically(self) -> None:
        """Take keep-last-K (``args.save_total_limit``) over from the Trainer, whose own rotation would run inside the
        staging folder."""
        self.keep_last_checkpoints = self.args.save_total_limit
        self.args.save_total_limit = None

    def _get_output_dir(self, trial):  # private hook: qwen35_tune.patches.TRAINER_PRIVATE_HOOKS
        return self._staging_root if self._staging_root is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):  # private hook: qwen35_tune.patches.TRAINER_PRIVATE_HOOKS
        final_root = Path(super()._get_output_dir(trial))
        staging = final_root / STAGING
        name = f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging / name, ignore_errors=True)  # a leftover from a run killed while writing
        self.accelerator.wait_for_everyone()
        self._staging_root = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        except BaseException:
            # A failed write (disk full, quota) leaves a partial folder: free its space; the previous checkpoint,
            # already renamed into place, is what a resume continues from.
            if self.args.should_save:
                shutil.rmtree(staging / name, ignore_errors=True)
            raise
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every rank's shards are written before the rename
        if self.args.should_save:
            target = final_root / name
            if target.exists():  # the same step saved twice (e.g. a preemption save on a save_steps step)
                shutil.rmtree(target)
            os.replace(staging / name, target)
            _fsync_dir(final_root)
            for gone in rotate(final_root, self.keep_last_checkpoints):
                log.info("removed old checkpoint %s (keep last %d)", gone.name, self.keep_last_checkpoints)
        self.accelerator.wait_for_everyone()


def _fsync_dir(path: Path) -> None:
    """Persist the rename itself (a power loss right after os.replace could otherwise undo it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class PreemptionCallback(TrainerCallback):
    """On SIGTERM / SIGUSR1, finish the current optimizer step, save a checkpoint and stop training.

    The signal handler only sets a flag (the one thing that is safe inside a handler); the save happens at the
    end of the step, so the bound on exit time is one step plus one checkpoint write. In a distributed run the
    flag is OR-ed across ranks each step, so every rank stops at the same step even if the signal reached them
    at different moments.
    """

    def __init__(self):
        self.requested: int | None = None  # the signal number received
        self.saved_step: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.requested is None:
            log.warning("received %s: saving a checkpoint at the end of this step, then exiting",
                        signal.Signals(signum).name)
        self.requested = signum

    def install(self) -> PreemptionCallback:
        for sig in PREEMPTION_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _any_rank_requested(self, args) -> bool:
        import torch
        import torch.distributed as dist

        flag = self.requested is not None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = args.device if dist.get_backend() == "nccl" else "cpu"
            tensor = torch.tensor([int(flag)], device=device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank_requested(args):
            control.should_save = True
            control.should_training_stop = True
            self.saved_step = state.global_step
            self._started = time.monotonic()
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.saved_step is not None:
            log.warning("preemption checkpoint for step %d written in %.1fs", state.global_step,
                        time.monotonic() - self._started)
