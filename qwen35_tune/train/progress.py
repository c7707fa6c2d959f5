"""Training progress fit for where the output goes: rich's live bar on a terminal, one plain log line per logging step
anywhere else (CI, nohup, SLURM's ``slurm-%j.log``), where a live display shows nothing until one box at the end.

Every stage runner (SFT, DPO, GRPO, pretraining) gives its trainer ``progress_callback()``; the choice is
``qwen35_tune.terminal``'s (TTY, ``TERM=dumb``, ``TTY_INTERACTIVE``). Only the main process reports.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from transformers import TrainerCallback

log = logging.getLogger(__name__)

_EVAL_SHOWN = ("eval_loss", "eval_mean_token_accuracy")  # the rest of an eval log is in metrics.jsonl
_TIMING = ("_runtime", "_samples_per_second", "_steps_per_second", "total_flos")


def progress_callback() -> TrainerCallback:
    """TRL's rich progress bar when stdout is a live terminal, else ``PlainProgressCallback``."""
    from qwen35_tune.terminal import shows_live_progress

    if shows_live_progress():
        from trl.trainer.callbacks import RichProgressCallback

        return RichProgressCallback()
    return PlainProgressCallback()


def clock_text(seconds: float) -> str:
    """``H:MM:SS`` (days spelled out past 24 h)."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _shown(value: float) -> str:
    """A metric compactly: 4 decimals, or scientific for very small / large magnitudes (learning rates)."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2e}" if value and not 1e-3 <= abs(value) < 1e5 else f"{value:.4f}"


def _pairs(logs: dict, keys) -> list[str]:
    """'key value' for each of ``keys`` logged with a number."""
    return [f"{key} {_shown(value)}" for key in keys if (value := _number(logs.get(key))) is not None]


class PlainProgressCallback(TrainerCallback):
    """One plain line per trainer log (every ``logging_steps``, each evaluation, the end of the run), main process
    only: step/max, loss, learning rate, gradient norm, tokens per second, elapsed time and ETA."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started: float | None = None
        self.first_step = 0  # a resumed run's ETA counts only the steps this process ran
        self.mark: tuple[float, float] = (0.0, 0.0)  # (time, tokens) of the last training line: tokens/s since then

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.started = self.clock()
        self.first_step = state.global_step
        logged = [r["num_tokens"] for r in state.log_history if _number(r.get("num_tokens")) is not None]
        self.mark = (self.started, float(logged[-1]) if logged else 0.0)
        start = f" from step {state.global_step}" if state.global_step else ""
        every = state.logging_steps or args.logging_steps
        log.info("training %d steps%s; a line every %s (all metrics: metrics.jsonl)", state.max_steps, start,
                 "step" if every == 1 else f"{every:g} steps")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or self.started is None:
            return
        now = self.clock()
        if any(key.startswith("eval_") for key in logs):
            log.info("%s", self.eval_line(state, logs))
            self.mark = (now, self.mark[1])  # evaluation time is not training throughput
        elif "train_loss" in logs or "train_runtime" in logs:
            log.info("%s", self.end_line(state, logs, now))
        elif "loss" in logs or "learning_rate" in logs:
            log.info("%s", self.train_line(state, logs, now))
        else:  # what another callback logged (generation eval scores)
            log.info("%s", " | ".join([self._step(state), *_pairs(logs, logs)]))

    def _step(self, state) -> str:
        total = state.max_steps
        pct = f" ({100 * state.global_step / total:.0f}%)" if total else ""
        return f"step {state.global_step}/{total or '?'}{pct}"

    def train_line(self, state, logs: dict, now: float) -> str:
        parts = [self._step(state), *_pairs(logs, ("loss",))]
        lr = _number(logs.get("learning_rate"))
        parts += [f"lr {lr:.2e}"] if lr is not None else []
        parts += _pairs(logs, ("grad_norm",))
        epoch = _number(logs.get("epoch", state.epoch))
        parts += [f"epoch {epoch:.2f}"] if epoch is not None else []
        tokens = _number(logs.get("num_tokens"))
        if tokens is not None and now > self.mark[0]:
            parts.append(f"tokens/s {(tokens - self.mark[1]) / (now - self.mark[0]):,.0f}")
            self.mark = (now, tokens)
        elapsed = now - self.started
        parts.append(f"elapsed {clock_text(elapsed)}")
        done = state.global_step - self.first_step
        if done > 0 and state.max_steps:
            parts.append(f"eta {clock_text(elapsed / done * max(state.max_steps - state.global_step, 0))}")
        return " | ".join(parts)

    def eval_line(self, state, logs: dict) -> str:
        others = [k for k in logs if k.startswith("eval_") and k not in _EVAL_SHOWN and not k.endswith(_TIMING)
                  and not k.endswith(("num_tokens", "entropy"))]  # fmt: skip
        parts = [f"eval at {self._step(state)}", *_pairs(logs, [*_EVAL_SHOWN, *others])]
        runtime = _number(logs.get("eval_runtime"))
        if runtime is not None:
            parts.append(f"took {runtime:.1f}s" if runtime < 60 else f"took {clock_text(runtime)}")
        return " | ".join(parts)

    def end_line(self, state, logs: dict, now: float) -> str:
        parts = [f"finished {self._step(state)}"]
        value = _number(logs.get("train_loss"))
        if value is not None:
            parts.append(f"mean train_loss {_shown(value)}")
        parts.append(f"elapsed {clock_text(now - self.started)}")
        return " | ".join(parts)
