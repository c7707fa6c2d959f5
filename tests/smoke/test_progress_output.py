"""What `qwen35-tune train` writes where it goes. Captured stdout (CI, nohup, SLURM's slurm-%j.log) gets one plain
line per logging step and per evaluation, no escape codes, redraws or boxes; a terminal still gets rich's live bar.
The captured run is the README's default run cut to 3 steps, so it also shows what summary.json records."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny" / "sft_lora.yaml"  # holds 10% of its card out for evaluation
STEPS = 3
pytestmark = pytest.mark.smoke


def _env() -> dict:
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(REPO)}
    for name in ("TTY_INTERACTIVE", "FORCE_COLOR", "NO_COLOR", "RANK"):
        env.pop(name, None)
    return env


def _train(run: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "qwen35_tune", "train", str(TINY), "--output-dir", str(run),
            f"train.max_steps={STEPS}", "train.logging_steps=1", *overrides]


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """The default recipe trained with stdout and stderr captured, as a batch job's log would."""
    run = tmp_path_factory.mktemp("piped") / "run"
    result = subprocess.run(_train(run), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run, result.stdout, result.stderr


def test_a_plain_line_per_logging_step(piped):
    _, out, err = piped
    for step in range(1, STEPS + 1):
        lines = [line for line in out.splitlines() if f" INFO step {step}/{STEPS} (" in line]
        assert len(lines) == 1, out
        fields = lines[0].split(" | ")
        for pattern in (r"loss \d+\.\d{4}", r"lr \d\.\d\de-\d\d", r"grad_norm \d+\.\d{4}", r"tokens/s [\d,]+",
                        r"elapsed \d+:\d\d:\d\d", r"eta \d+:\d\d:\d\d"):
            assert any(re.fullmatch(pattern, field) for field in fields), (pattern, lines[0])
        assert sum(f" INFO eval at step {step}/{STEPS} (" in line for line in out.splitlines()) == 1, out
    assert f"finished step {STEPS}/{STEPS}" in out and ", eval loss " in out
    for text in (out, err):
        assert "\x1b" not in text and "\r" not in text, text[-2000:]  # no colour, cursor moves or tqdm redraws
    assert not set("╭╮╰╯━") & set(out), out  # no live panel rendered once at the end
    lines = out.splitlines()
    title = next(i for i, line in enumerate(lines) if "preflight: lora on" in line)
    table = lines[title:next(i for i in range(title, len(lines)) if lines[i].startswith("total")) + 1]
    assert 5 < len(table) < 15 and max(map(len, table)) <= 80, out  # unwrapped, no log prefix on its rows


def test_held_out_rows_are_evaluated_and_the_summary_says_what_ran_where(piped):
    run, _, _ = piped
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in evals] == list(range(1, STEPS + 1))  # a tenth of 3 steps, rounded up: every step
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval_loss"] == evals[-1]["eval_loss"] and summary["eval_loss"] > 0
    preflight = json.loads((run / "preflight.json").read_text())
    assert summary["trainable_params"] == preflight["total"]["trainable"] > 0
    assert summary["trainable_percent"] == pytest.approx(preflight["trainable_percent"])
    from qwen35_tune import hardware

    assert summary["cpu"] == hardware.cpu_model() and summary["cpu_cores"] == hardware.cpu_cores()
    assert summary["gpus"] == [] and summary["cpu"] in summary["hardware"]
    assert Path(summary["merged_dir"]) == run / "merged" and (run / "merged" / "config.json").is_file()


def _read_all(fd: int, proc: subprocess.Popen, timeout: float) -> bytes:
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=timeout)
    return out


def test_a_terminal_still_gets_the_live_bar(tmp_path):
    main_fd, child_fd = os.openpty()
    env = {**_env(), "COLUMNS": "100", "LINES": "40"}
    cmd = _train(tmp_path / "run", "train.max_steps=2", "data.cards.0.eval_fraction=0", "export.merge=false")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=child_fd, stdout=child_fd, stderr=child_fd)
    os.close(child_fd)
    try:
        out = _read_all(main_fd, proc, timeout=900).decode("utf-8", "replace")
    finally:
        os.close(main_fd)
    assert proc.returncode == 0, out[-3000:]
    assert "Training" in out and "━" in out and "\x1b[" in out  # rich's bar, redrawn in place
    assert "step 1/2 |" not in out  # the plain lines are for logs only
