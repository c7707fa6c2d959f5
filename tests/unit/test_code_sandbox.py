"""The code sandbox gives each kind of program the right verdict, quickly, and kills runaway ones at the limit."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.eval.code_sandbox import extract_code, run_with_tests

ADD = "def add(a, b):\n    return a + b\n"


def test_passing():
    result = run_with_tests(ADD, ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"], timeout_s=2)
    assert (result.verdict, result.detail) == ("passed", "")


def test_failing_names_the_assertion():
    result = run_with_tests(ADD, ["assert add(2, 3) == 5", "assert add(2, 3) == 6"], timeout_s=2)
    assert result.verdict == "failed"
    assert "assert add(2, 3) == 6" in result.detail
    assert run_with_tests(ADD, "assert add(1, 1) == 3, 'bad sum'", timeout_s=2).detail == "AssertionError: bad sum"


@pytest.mark.parametrize("code", ["while True:\n    pass\n", "import time\ntime.sleep(60)\n"])
def test_infinite_loop_killed_at_the_limit(code):
    start = time.monotonic()
    result = run_with_tests(code, [], timeout_s=1)
    assert result.verdict == "timeout"
    assert 0.9 < result.seconds < 3 and time.monotonic() - start < 4


@pytest.mark.parametrize("code", [
    "import socket\nsocket.create_connection(('127.0.0.1', 9))",
    "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))",
    "import urllib.request\nurllib.request.urlopen('http://example.com')",
])
def test_network_refused(code):
    result = run_with_tests(code, [], timeout_s=2)
    assert result.verdict == "refused" and "network" in result.detail


def test_writing_outside_temp_dir_refused(tmp_path):
    target = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    # Caught exceptions do not help: the guard ends the process.
    code = f"try:\n    open({str(target)!r}, 'w').write('x')\nexcept BaseException:\n    pass\n"
    result = run_with_tests(code, [], timeout_s=2)
    assert result.verdict == "refused" and str(target) in result.detail
    assert not target.exists()
    assert run_with_tests(f"import os\nos.remove({str(tmp_path)!r})", [], timeout_s=2).verdict == "refused"


def test_writing_inside_temp_dir_allowed():
    code = "open('notes.txt', 'w').write('hi')\nimport tempfile\ntempfile.mkstemp()\n"
    assert run_with_tests(code, ["assert open('notes.txt').read() == 'hi'"], timeout_s=2).verdict == "passed"


def test_starting_processes_refused():
    assert run_with_tests("import subprocess\nsubprocess.run(['true'])", [], timeout_s=2).verdict == "refused"
    assert run_with_tests("import os\nos.fork()", [], timeout_s=2).verdict == "refused"


@pytest.mark.parametrize(("code", "detail"), [
    ("raise ValueError('boom')", "ValueError: boom"),
    ("def f(:\n    pass", "SyntaxError"),
    ("import os\nos.kill(os.getpid(), 11)", "SIGSEGV"),
    ("x = [0] * (10 ** 10)", "MemoryError"),  # over the address-space limit
    ("print('x' * 2 * 10 ** 6)", "File too large"),  # output over the size cap
])
def test_crash(code, detail):
    result = run_with_tests(code, [], timeout_s=2, memory_mb=256)
    assert result.verdict == "crashed" and detail in result.detail


def test_child_runs_in_its_own_temp_dir():
    code = "import os\nHERE = os.getcwd()\n"
    result = run_with_tests(code, [f"assert HERE != {str(Path.cwd())!r}", "assert 'q35-sandbox' in HERE",
                                   "assert os.environ['HOME'] == HERE == os.environ['TMPDIR']"], timeout_s=2)
    assert result.verdict == "passed", result.detail


def test_extract_code():
    text = "<think>```python\nx = 1\n```</think>Here:\n```\ny = 2\n```\n```python\nz = 3\n```\ndone"
    assert extract_code(text) == "z = 3\n"
    assert extract_code("<think>```python\nx = 1\n```</think>no code after thinking") == "x = 1\n"
    assert extract_code("```\nplain = True\n```") == "plain = True\n"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1\n"  # cut off by the budget
    assert extract_code("def f(): return 1") is None


def _broken_root(monkeypatch):
    """Make the namespace step fail the way a kernel without unprivileged user namespaces would (a mount fails)."""
    from qwen35_tune.eval import code_sandbox

    real = code_sandbox._spec
    monkeypatch.setattr(code_sandbox, "_spec", lambda *a: {**real(*a), "root_host": "/nonexistent/q35-root"})
    monkeypatch.setattr(code_sandbox, "_warned", __import__("threading").Event())


def test_without_namespaces_the_guard_runs_alone_and_says_so(monkeypatch, caplog):
    _broken_root(monkeypatch)
    with caplog.at_level("WARNING", logger="qwen35_tune.eval.code_sandbox"):
        good = run_with_tests(ADD, ["assert add(2, 3) == 5"], timeout_s=2)
        bad = run_with_tests(ADD + "import sys\nsys.exit(0)\n", ["assert add(2, 3) == 5"], timeout_s=2)
        refused = run_with_tests(ADD + "import os\nos.kill(os.getppid(), 9)\n", [], timeout_s=2)
    assert good.verdict == "passed" and good.isolation.startswith("guard (mount")
    assert bad.verdict == "crashed" and refused.verdict == "refused"
    warnings = [r.getMessage() for r in caplog.records if "not a security boundary" in r.getMessage()]
    assert len(warnings) == 1 and "QWEN35_TUNE_SANDBOX=require" in warnings[0]


def test_require_refuses_without_namespaces(monkeypatch):
    _broken_root(monkeypatch)
    monkeypatch.setenv("QWEN35_TUNE_SANDBOX", "require")
    with pytest.raises(UserError, match="QWEN35_TUNE_SANDBOX=require refuses"):
        run_with_tests(ADD, ["assert add(2, 3) == 5"], timeout_s=2)
    monkeypatch.setenv("QWEN35_TUNE_SANDBOX", "sometimes")
    with pytest.raises(UserError, match="choose one of auto, require, off"):
        run_with_tests(ADD, [], timeout_s=2)


def test_cpu_limit_kill_is_a_timeout_not_a_crash():
    """A C loop that never yields reaches RLIMIT_CPU before the wall-clock kill on an idle machine: SIGXCPU (soft) or
    SIGKILL (hard) with no report from the runner is the time limit, whichever comes first."""
    import signal

    from qwen35_tune.eval.code_sandbox import _verdict

    assert _verdict(None, -signal.SIGXCPU, False, "", 2.0, 1.0).verdict == "timeout"
    assert _verdict(None, -signal.SIGKILL, False, "", 2.0, 1.0).verdict == "timeout"
    assert _verdict(None, -signal.SIGKILL, False, "", 0.2, 1.0).verdict == "crashed"  # before the limit: not time
