"""One training process per run directory: ``RUN/run.lock`` holds the owner's pid, host and start time.

Two runs writing one directory interleave metrics.jsonl lines and overwrite each other's checkpoints, so the main
process takes this lock before it writes anything. A lock never outlives its process:

- the owner holds an exclusive ``flock`` on the file, which the kernel drops when the process dies, however it dies
  (kill -9 included); the next run takes the lock over and says whose it was;
- where ``flock`` does not reach (a filesystem without it, a node that crashed on a shared filesystem), the file's
  contents decide: a pid on this host that is gone (or was reused: its start time differs) is stale, and a lock from
  another host is stale once its heartbeat (the file's mtime, touched every ``HEARTBEAT_S`` by the owner) is older than
  ``STALE_AFTER_S``.

POSIX only (``fcntl``), like the rest of the training stack.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)

LOCK_NAME = RunDir.lock.name
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), to tell a reused pid apart; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19] if ")" in stat else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def describe_holder(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


def holder_is_alive(holder: dict, mtime: float | None, now: float | None = None) -> bool:
    """Whether the process a lock file names still runs (see the module docstring for the rules)."""
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if host == socket.gethostname():
        if not pid_alive(pid):
            return False
        recorded = holder.get("pid_start")
        return recorded is None or recorded == process_start_time(pid)
    now = time.time() if now is None else now
    return mtime is not None and now - mtime < STALE_AFTER_S


class RunLock:
    """``with RunLock(run_dir):`` the exclusive right to write ``run_dir``; UserError if another run holds it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = RunDir(self.run_dir).lock
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[dict, float | None]:
        try:
            text = self.path.read_text(encoding="utf-8")
            mtime = self.path.stat().st_mtime
        except OSError:
            return {}, None
        try:
            holder = json.loads(text)
        except ValueError:
            holder = None
        if not isinstance(holder, dict):  # a lock file written by hand or another tool: a bare pid counts
            pid = re.search(r"\b\d+\b", text)
            holder = {"pid": int(pid.group(0)), "host": socket.gethostname()} if pid else {}
        return holder, mtime

    def _refuse(self, holder: dict) -> None:
        raise UserError(f"run directory {self.run_dir} is in use by another training run ({describe_holder(holder)}; "
                        f"{self.path}): wait for it to finish or choose another --output-dir. If that process is "
                        f"gone, the lock is released automatically (or delete {self.path})")

    def _open_locked(self) -> int:
        """An fd on the lock file holding its flock (or, where flock is unsupported, just open)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse(self._read()[0])
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                log.debug("flock unsupported on %s (%s): relying on pid/host/heartbeat", self.path, exc)
            # The owner we waited for may have unlinked the file before we locked it: lock the file at the path.
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def acquire(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = self._open_locked()
        except UserError:
            raise
        except OSError as exc:
            raise UserError(f"run directory {self.run_dir}: cannot write there ({exc.strerror or exc}); choose a "
                            "writable --output-dir (or output_dir in the recipe)") from None
        holder, mtime = self._read()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "pid_start": process_start_time(os.getpid())}  # fmt: skip
        mine = all(holder.get(k) == me[k] for k in ("pid", "host", "pid_start")) and me["pid_start"] is not None
        if holder and not mine and holder_is_alive(holder, mtime):
            os.close(fd)
            self._refuse(holder)
        if holder and not mine:
            log.warning("run directory %s: taking over the lock of a run that ended without releasing it (%s)",
                        self.run_dir, describe_holder(holder))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="qwen35-run-lock", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
