"""One training process per run directory, and no lock outlives its process: a live holder (same process, another
process, another host with a fresh heartbeat) is refused with who holds it; a dead one (kill -9, a gone pid, a
reused pid, a stale heartbeat) is taken over; a directory that cannot be written is a UserError, not a traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.train import run_lock
from qwen35_tune.train.run_lock import LOCK_NAME, RunLock

REPO = Path(__file__).resolve().parents[2]


def _write_holder(run_dir: Path, **holder) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    path.write_text(json.dumps(holder))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_is_exclusive_and_released(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        holder = json.loads((run / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(UserError, match=rf"in use by another training run \(pid {os.getpid()} on host"):
            RunLock(run).acquire()
    assert not (run / LOCK_NAME).exists()
    with RunLock(run):  # free again
        pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    run = tmp_path / "run"
    code = ("import sys, time; from pathlib import Path; from qwen35_tune.train.run_lock import RunLock\n"
            f"RunLock(Path({str(run)!r})).acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {proc.pid}"):
            RunLock(run).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == proc.pid  # the file is still there...
    with RunLock(run):  # ...but the lock died with its process
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_stale_contents_are_taken_over(tmp_path):
    host = socket.gethostname()
    cases = {
        "dead pid": {"pid": _dead_pid(), "host": host},
        "reused pid": {"pid": os.getppid(), "host": host, "pid_start": "1"},  # alive, but not the process that locked
        "old heartbeat elsewhere": {"pid": 4242, "host": "some-other-node"},
        "garbage": None,
    }
    for name, holder in cases.items():
        run = tmp_path / name.replace(" ", "_")
        path = _write_holder(run, **(holder or {}))
        if holder is None:
            path.write_text("{not json")
        if name == "old heartbeat elsewhere":
            old = time.time() - run_lock.STALE_AFTER_S - 60
            os.utime(path, (old, old))
        with RunLock(run):
            assert json.loads(path.read_text())["pid"] == os.getpid(), name


def test_live_holders_without_flock_are_refused(tmp_path):
    """Where flock does not reach (another node on a shared filesystem), the contents still protect the run."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cases = {"live pid": {"pid": sleeper.pid, "host": socket.gethostname()},
                 "fresh heartbeat elsewhere": {"pid": 4242, "host": "some-other-node", "started": time.time()},
                 "bare pid": {"pid": sleeper.pid, "host": socket.gethostname()}}
        for name, holder in cases.items():
            run = tmp_path / name.replace(" ", "_")
            path = _write_holder(run, **holder)
            if name == "bare pid":
                path.write_text(f"{sleeper.pid}\n")
            with pytest.raises(UserError, match=f"pid {holder['pid']} on host {holder['host']}"):
                RunLock(run).acquire()
            assert str(holder["pid"]) in (run / LOCK_NAME).read_text()  # not overwritten
    finally:
        sleeper.kill()
        sleeper.wait()


def test_unwritable_run_dir_is_a_user_error(tmp_path, monkeypatch):
    import errno

    run = tmp_path / "ro"
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(run)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(run_lock.os, "open", read_only)
    with pytest.raises(UserError, match="cannot write there \\(Read-only file system\\)"):
        RunLock(run).acquire()
    file_parent = tmp_path / "a_file"
    file_parent.write_text("x")
    with pytest.raises(UserError, match="cannot write there"):
        RunLock(file_parent / "run").acquire()
