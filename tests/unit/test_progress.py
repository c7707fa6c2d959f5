"""Progress where the output goes: one plain line per logging step off a terminal (step/max, loss, lr, grad norm,
tokens/s, elapsed, ETA), rich's live bar on one; the choice follows TTY, TERM=dumb, TTY_INTERACTIVE and the rank.
The preflight table logged before training stays readable at 80 columns."""

from __future__ import annotations

import io
import logging
import os

import pytest
from transformers import TrainerState, TrainingArguments

from qwen35_tune import terminal
from qwen35_tune.train.preflight import TABLE_WIDTH, render_table
from qwen35_tune.train.progress import PlainProgressCallback, clock_text, progress_callback

LOGGER = "qwen35_tune.train.progress"


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path), logging_steps=2, report_to="none", use_cpu=True)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def tty(monkeypatch):
    """Call it to make a pseudo-terminal stdout and stderr (what a user's shell gives the CLI). Called in the test
    itself: pytest puts its own capture back on sys.stdout between fixture setup and the test."""
    opened = []

    def use():
        main_fd, child_fd = os.openpty()
        stream = os.fdopen(child_fd, "w")
        opened.append((main_fd, stream))
        monkeypatch.setattr("sys.stdout", stream)
        monkeypatch.setattr("sys.stderr", stream)
        monkeypatch.setenv("TERM", "xterm-256color")
        for name in ("TTY_INTERACTIVE", "RANK", "FORCE_COLOR", "NO_COLOR"):
            monkeypatch.delenv(name, raising=False)
        return stream

    yield use
    for main_fd, stream in opened:
        stream.close()
        os.close(main_fd)


def test_a_line_per_log_with_every_field(args, caplog):
    clock, callback = Clock(), PlainProgressCallback(Clock())
    callback.clock = clock
    state = TrainerState(max_steps=10, logging_steps=2, is_world_process_zero=True)
    caplog.set_level(logging.INFO, LOGGER)
    callback.on_train_begin(args, state, None)
    clock.now += 10
    state.global_step, state.epoch = 2, 0.25
    callback.on_log(args, state, None, logs={"loss": 2.34567, "learning_rate": 5e-4, "grad_norm": 0.75,
                                             "num_tokens": 5000.0, "epoch": 0.25})
    line = _lines(caplog)[-1]
    assert line.startswith("step 2/10 (20%) | ")
    for part in ("loss 2.3457", "lr 5.00e-04", "grad_norm 0.7500", "epoch 0.25", "tokens/s 500", "elapsed 0:00:10",
                 "eta 0:00:40"):
        assert part in line.split(" | "), (part, line)


def test_eval_time_is_not_throughput_and_a_resumed_run_counts_its_own_steps(args, caplog):
    clock = Clock()
    callback = PlainProgressCallback(clock)
    state = TrainerState(max_steps=10, logging_steps=2, is_world_process_zero=True, global_step=4,
                         log_history=[{"num_tokens": 1000.0, "step": 4}])
    caplog.set_level(logging.INFO, LOGGER)
    callback.on_train_begin(args, state, None)
    assert "from step 4" in _lines(caplog)[-1]
    clock.now += 20
    state.global_step = 6
    callback.on_log(args, state, None, logs={"eval_loss": 1.5, "eval_runtime": 15.0, "eval_num_tokens": 9.0})
    assert _lines(caplog)[-1] == "eval at step 6/10 (60%) | eval_loss 1.5000 | took 15.0s"
    clock.now += 5
    callback.on_log(args, state, None, logs={"loss": 1.0, "num_tokens": 2000.0})
    line = _lines(caplog)[-1].split(" | ")
    assert "tokens/s 200" in line  # 1000 tokens since the resume point, over the 5 s after the evaluation
    assert "eta 0:00:50" in line  # 25 s for the 2 steps this process ran, 4 steps left


def test_end_line_and_other_callbacks_logs(args, caplog):
    clock = Clock()
    callback = PlainProgressCallback(clock)
    state = TrainerState(max_steps=4, logging_steps=1, is_world_process_zero=True)
    caplog.set_level(logging.INFO, LOGGER)
    callback.on_train_begin(args, state, None)
    state.global_step = 4
    callback.on_log(args, state, None, logs={"gen_eval/math/thinking/accuracy": 0.5})
    assert _lines(caplog)[-1] == "step 4/4 (100%) | gen_eval/math/thinking/accuracy 0.5000"
    clock.now += 3725
    callback.on_log(args, state, None, logs={"train_runtime": 3725.0, "train_loss": 0.25})
    assert _lines(caplog)[-1] == "finished step 4/4 (100%) | mean train_loss 0.2500 | elapsed 1:02:05"


def test_other_ranks_say_nothing(args, caplog):
    callback = PlainProgressCallback(Clock())
    state = TrainerState(max_steps=4, logging_steps=1, is_world_process_zero=False, global_step=1)
    caplog.set_level(logging.INFO, LOGGER)
    callback.on_train_begin(args, state, None)
    callback.on_log(args, state, None, logs={"loss": 1.0})
    assert _lines(caplog) == []


def test_clock_text():
    assert [clock_text(s) for s in (0, 59.6, 3600, 90061)] == ["0:00:00", "0:01:00", "1:00:00", "1d 1:01:01"]


def test_plain_lines_off_a_terminal_rich_bar_on_one(tty, monkeypatch):
    from trl.trainer.callbacks import RichProgressCallback

    tty()
    assert isinstance(progress_callback(), RichProgressCallback)
    monkeypatch.setenv("TERM", "dumb")  # cannot move the cursor: rich would show one box at the end
    assert isinstance(progress_callback(), PlainProgressCallback)
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("RANK", "1")  # other ranks of a launch
    assert isinstance(progress_callback(), PlainProgressCallback)
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("TTY_INTERACTIVE", "0")  # rich's own override, both ways
    assert isinstance(progress_callback(), PlainProgressCallback)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert isinstance(progress_callback(), PlainProgressCallback)
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    assert isinstance(progress_callback(), RichProgressCallback)


def test_no_color_and_force_color_do_not_change_the_choice(tty, monkeypatch):
    tty()
    monkeypatch.setenv("NO_COLOR", "1")
    assert terminal.is_live()
    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("FORCE_COLOR", "1")  # colour in a CI log, not a display that redraws
    assert not terminal.is_live()


def test_plain_log_lines_are_never_wrapped(monkeypatch, capsys):
    monkeypatch.delenv("TTY_INTERACTIVE", raising=False)
    from rich.logging import RichHandler

    handler = terminal.log_handler(io.StringIO())
    assert not isinstance(handler, RichHandler)  # rich wraps a message to the width it guesses for a file (80)
    record = logging.makeLogRecord({"msg": "x" * 300, "levelno": logging.INFO, "levelname": "INFO"})
    handler.emit(record)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.rstrip().endswith("x" * 300) and " INFO " in out


def test_a_logged_block_prints_at_full_width_on_a_terminal(tty):
    from rich.console import Console

    tty()
    handler = terminal.log_handler()
    handler.console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    block = "\n".join(f"{'row ' + str(i):<78}|" for i in range(3))
    handler.emit(logging.makeLogRecord({"msg": "\n%s", "args": (block,), "levelno": logging.INFO,
                                        "levelname": "INFO"}))
    assert handler.console.file.getvalue().splitlines() == block.splitlines()


def test_library_bars_are_switched_off_off_a_terminal(monkeypatch):
    from datasets.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr("sys.stderr", io.StringIO())
    for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    try:
        terminal.quiet_library_bars()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # read by huggingface_hub and transformers
        assert not hf_logging.is_progress_bar_enabled() and are_progress_bars_disabled()
    finally:
        hf_logging.enable_progress_bar()
        enable_progress_bars()


def test_preflight_table_fits_80_columns_for_the_largest_models():
    big = 396_912_353_280  # a 397B model trained whole: 15-digit counts, a size in GiB
    groups = {"routed_experts": {"params": big, "trainable": big, "trainable_bytes": big * 4},
              "linear_attention": {"params": 1_207_959_552, "trainable": 12_345_678, "trainable_bytes": 24_691_356},
              "shared_expert": {"params": 300_000_000, "trainable": 0, "trainable_bytes": 0}}
    text = render_table(groups, "preflight: full on qwen3_5_moe")
    lines = text.splitlines()
    assert TABLE_WIDTH <= 80 and max(map(len, lines)) <= 80, text
    assert "…" not in text  # no cell cut short
    for group in ("routed_experts", "linear_attention", "shared_expert", "total"):
        assert sum(line.startswith(group) for line in lines) == 1, text  # one line per group, nothing wrapped
    assert f"{big:,}" in text and "1,478.61 GiB" in text
