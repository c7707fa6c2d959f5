"""Per-step truths the trainer does not keep: a run stops on its first non-finite loss or gradient norm, and
``num_tokens`` counts the real tokens trained on.

- transformers hides a NaN/inf micro-batch loss from the logged average (``logging_nan_inf_filter``) and keeps
  stepping, so a diverged run writes NaN weights into every later checkpoint and looks fine until merge. Here each
  micro-batch loss and each optimizer step's gradient norm are checked; the first non-finite one stops the run at
  the end of that step, before anything of it is saved, with the step and the last good checkpoint named (exit 2).
  A step the optimizer skipped (fp16 loss scaling overflow) touched no weight and is not a failure.
- TRL's ``num_tokens`` is ``attention_mask.sum()`` or, for padding-free batches, ``position_ids.size(1)``, which is
  the batch size (1) for packed vision rows whose M-RoPE ``position_ids`` are (4, 1, L). Here every batch counts its
  non-padding tokens (``attention_mask`` when present, else every token of the flat packed row), summed over ranks,
  and the logged ``num_tokens`` (and TRL's ``eval_num_tokens``) is replaced before any tracker sees it.

The loss and the norm come from the trainer subclass (``GuardedSteps``, mixed into ``train.trainer``): its
``training_step`` (the Trainer's documented override point) hands over each micro-batch, its ``_get_grad_norm`` (the
one call every optimizer step's norm passes through, clipped or not, DeepSpeed included; a private hook kept to
``qwen35_tune.patches``' rules, ``TRAINER_PRIVATE_HOOKS``) each step's gradient norm.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from transformers import TrainerCallback

from qwen35_tune.errors import UserError
from qwen35_tune.strict_json import record_dumps

log = logging.getLogger(__name__)


class NonFiniteTrainingError(UserError):
    """Training produced a NaN/inf loss or gradient norm; raised at the end of that step, before it is saved."""


def real_tokens(inputs: dict) -> int:
    """Non-padding tokens of one batch: the attention mask's ones, else every token of a packed (padding-free) row."""
    mask = inputs.get("attention_mask")
    if mask is not None:
        return int(mask.sum())
    ids = inputs.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


def _as_float(value) -> float | None:
    if value is None:
        return None
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None


class StepGuard(TrainerCallback):
    """See the module docstring. ``install(trainer)`` wires it in; it must run before other callbacks' ``on_log``."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.trainer = None
        self.total_tokens = 0
        self._reset_step()

    def _reset_step(self) -> None:
        self.step_tokens = 0
        self.bad_loss: float | None = None  # the first non-finite micro-batch loss of this step
        self.grad_norm: float | None = None

    # -- wiring ---------------------------------------------------------------------------------------------------
    def install(self, trainer) -> StepGuard:
        """Guard ``trainer`` (a ``GuardedSteps`` trainer, which reports its steps here)."""
        if not isinstance(trainer, GuardedSteps):
            raise TypeError(f"{type(trainer).__name__} does not report its steps: mix GuardedSteps into its class")
        self.trainer = trainer
        trainer.step_guard = self
        # First in line: num_tokens is corrected before metrics.jsonl and the trackers read the logs.
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    def observe(self, inputs: dict, loss) -> None:
        """One micro-batch: count its real tokens, remember a non-finite loss (the first of the step)."""
        self.step_tokens += real_tokens(inputs)
        value = _as_float(loss)
        if value is not None and not math.isfinite(value) and self.bad_loss is None:
            self.bad_loss = value

    def observe_grad_norm(self, norm) -> None:
        """The gradient norm of this optimizer step (before clipping), as the trainer computed it."""
        self.grad_norm = _as_float(norm)

    # -- callbacks ------------------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run continues the count its checkpoint logged (TRL restarts its own from zero).
        logged = [r["num_tokens"] for r in state.log_history if isinstance(r.get("num_tokens"), (int, float))]
        self.total_tokens = int(logged[-1]) if logged else 0
        self._reset_step()

    def on_step_end(self, args, state, control, **kwargs):
        skipped = bool(getattr(getattr(self.trainer, "accelerator", None), "optimizer_step_was_skipped", False))
        bad_norm = self.grad_norm is not None and not math.isfinite(self.grad_norm) and not skipped
        tokens, bad_loss_any, bad_norm_any = _sum_over_ranks(args, self.step_tokens, self.bad_loss is not None,
                                                             bad_norm)  # fmt: skip
        self.total_tokens += tokens
        bad_loss, grad_norm = self.bad_loss, self.grad_norm
        self._reset_step()
        if bad_loss_any:  # the value is this rank's, or unknown here when another rank saw it
            self._stop(state, args, "loss", bad_loss)
        if bad_norm_any:
            self._stop(state, args, "grad_norm", grad_norm if bad_norm else None)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        for key in ("num_tokens", "eval_num_tokens"):
            if key in logs:
                logs[key] = float(self.total_tokens)
                if state.log_history and key in state.log_history[-1]:
                    state.log_history[-1][key] = float(self.total_tokens)
        for key in ("loss", "grad_norm"):  # a non-finite value that reached a log line (belt and braces)
            value = _as_float(logs.get(key))
            if value is not None and not math.isfinite(value):
                self._stop(state, args, key, value)

    # -- stopping -------------------------------------------------------------------------------------------------
    def _stop(self, state, args, kind: str, value: float | None) -> None:
        """Record the step in metrics.jsonl (rank 0) and raise; ``kind`` is 'loss' or 'grad_norm'."""
        from qwen35_tune.train.resume import list_checkpoints

        step = state.global_step
        name = "the loss" if kind == "loss" else "the gradient norm"
        what = f"{name} is {_shown(value)}" if value is not None else f"{name} is not finite (on another rank)"
        if state.is_world_process_zero:
            record = {"step": step, "epoch": state.epoch, "stopped": f"non-finite {kind}",
                      kind: value if value is not None else float("nan")}  # fmt: skip
            with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(record_dumps(record) + "\n")
        found = list_checkpoints(Path(args.output_dir))
        fix = ("Lower train.learning_rate (or add train.warmup_steps, a smaller train.max_grad_norm) and train again "
               "in another --output-dir (or with --overwrite)")
        if found:
            where = (f"The last good checkpoint is {found[-1]} (step {found[-1].name.rsplit('-', 1)[-1]}). {fix}; "
                     f"--resume {found[-1]} retries from it with the same settings")
        else:
            where = f"No checkpoint was saved before it. {fix}"
        raise NonFiniteTrainingError(f"training stopped at step {step}: {what}; nothing of this step was saved. "
                                     f"{where}. Metrics so far: {self.run_dir / 'metrics.jsonl'}")


def _shown(value: float | None) -> str:
    return "NaN" if value is not None and math.isnan(value) else str(value)


def _sum_over_ranks(args, tokens: int, bad_loss: bool, bad_norm: bool) -> tuple[int, bool, bool]:
    """(tokens, any rank's bad loss, any rank's bad norm) over every rank: one small all-reduce per optimizer step."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return tokens, bad_loss, bad_norm
    device = args.device if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([float(tokens), float(bad_loss), float(bad_norm)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    total, loss_flag, norm_flag = tensor.tolist()
    return int(total), loss_flag > 0, norm_flag > 0


class GuardedSteps:
    """Trainer mixin: hands each micro-batch's loss and each optimizer step's gradient norm to ``step_guard``."""

    step_guard: StepGuard | None = None

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        if self.step_guard is not None:
            self.step_guard.observe(self.step_inputs(inputs), loss)
        return loss

    def step_inputs(self, inputs):
        """The batch whose real tokens this micro-step counts: the one the trainer was handed (GRPO's trainer, which
        is handed prompts and generates, returns the tokens its loss saw)."""
        return inputs

    def _get_grad_norm(self, model, grad_norm=None):  # private hook: qwen35_tune.patches.TRAINER_PRIVATE_HOOKS
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self.step_guard is not None:
            self.step_guard.observe_grad_norm(norm)
        return norm
