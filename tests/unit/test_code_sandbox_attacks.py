"""Hostile programs: each is contained (nothing outside the sandbox changes, the evaluator and other processes live,
no secret is read or stored) and scored as what it is -- never 'passed' for a wrong answer.

The wrong answer (`add` subtracts) comes first in every attack, so any 'passed' below is a forged verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from qwen35_tune.eval.code_sandbox import run_with_tests

RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
SECRET = "hf_" + uuid.uuid4().hex + "Zq"  # a token-shaped value the evaluator holds in its environment


@pytest.fixture(autouse=True)
def evaluator_secrets(monkeypatch, tmp_path):
    """The evaluator holds secrets in its environment and its home directory, like a real training box."""
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("WANDB_API_KEY", uuid.uuid4().hex + uuid.uuid4().hex[:8])
    home = tmp_path / "home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(SECRET)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def victim():
    """A process of the same user that no program may signal."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def run(code: str, tests=TESTS, timeout_s: float = 3, **kw):
    return run_with_tests(code, tests, timeout_s=timeout_s, **kw)


def _assert_no_secret(result):
    assert SECRET not in result.detail and os.environ["WANDB_API_KEY"] not in result.detail


FORGED_PASSES = {
    "os._exit(0) before the tests": "import os\nos._exit(0)\n",
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)\n",
    "SystemExit caught nowhere": "raise SystemExit\n",
    "killing itself": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    "printing a fake success": "print('passed')\nimport sys\nsys.stderr.write('OK\\n')\nimport os\nos._exit(0)\n",
    "writing 'passed' to every descriptor": (
        "import os\nfor fd in range(3, 1024):\n    try:\n        os.write(fd, b'passed\\n')\n    except OSError:\n"
        "        pass\nos._exit(0)\n"),
    "reading the nonce pipe": """
import os
got = b''
for fd in range(3, 1024):
    try:
        got += os.read(fd, 64)
    except OSError:
        pass
for fd in range(3, 1024):
    try:
        os.write(fd, got + b' passed\\n')
    except OSError:
        pass
os._exit(0)
""",
    "walking frames for the nonce": """
import os, sys
found = []
f = sys._getframe()
while f is not None:
    for scope in (f.f_locals, f.f_globals):
        found += [v for v in list(scope.values()) if isinstance(v, bytes)]
    f = f.f_back
for fd in range(3, 300):
    for v in found:
        try:
            os.write(fd, v + b' passed\\n')
        except OSError:
            pass
os._exit(0)
""",
    "tracing to skip the asserts": """
import sys
def skip(frame, event, arg):
    if event == 'line' and frame.f_code.co_filename == 'tests.py':
        frame.f_lineno = frame.f_lineno + 1
    return skip
sys.settrace(skip)
""",
    "profiling hook": "import sys\nsys.setprofile(lambda *a: None)\n",
    "tracing every new thread": (
        "import threading\nthreading.settrace(lambda *a: None)\nt = threading.Thread(target=print)\nt.start()\n"
        "t.join()\n"),
    "an audit hook of its own": "import sys\nsys.addaudithook(lambda event, args: None)\n",
    "gc.get_objects for the runner's memory": "import gc\nobjs = gc.get_objects()\n",
    "gc.get_referrers": "import gc\ngc.get_referrers(add)\n",
    "other threads' frames": "import sys\nsys._current_frames()\n",
    "ctypes memory read": "import ctypes\nctypes.string_at(id(1), 8)\n",
    "a sub-interpreter without the guard": "import _xxsubinterpreters\n",
    "interrupting the runner thread": "import _thread, time\n_thread.interrupt_main()\ntime.sleep(0.2)\n",
    "waking the runner early": "import sys, time\nsys._getframe(1).f_globals['end']()\ntime.sleep(0.3)\n",
    "exiting from a thread after the tests": (
        "import threading, time, os\ndef later():\n    time.sleep(0.3)\n    os._exit(0)\n"
        "threading.Thread(target=later).start()\n"),
    "an atexit handler": "import atexit, os\natexit.register(lambda: os._exit(0))\nraise SystemExit(0)\n",
    "an alarm signal before the tests": "import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0.01)\n"
                                        "time.sleep(1)\n",
    "stopping itself": "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n",
    "patching builtins the tests use": "import builtins\nbuiltins.abs = lambda x: 5\n",
    "rewriting the tests file": "open('tests.py', 'w').write('pass\\n')\n",
    "closing descriptors, then __del__ on the runner's thread": """
import gc, os, sys
gc.set_threshold(1)
saved = []
for fd in range(3, 64):
    try:
        saved.append(os.dup(fd))
        os.close(fd)
    except OSError:
        pass
class Evil:
    def __del__(self):
        f = sys._getframe()
        while f:
            for v in list(f.f_locals.values()):
                if isinstance(v, bytes) and v.endswith(b' passed\\n'):
                    for fd in saved:
                        os.write(fd, v)
                    os._exit(0)
            f = f.f_back
def cycle():
    e = Evil()
    e.me = e
for _ in range(2000):
    cycle()
""",
}


@pytest.mark.parametrize("attack", list(FORGED_PASSES), ids=list(FORGED_PASSES))
def test_a_wrong_answer_cannot_forge_a_pass(attack):
    tests = TESTS + ["assert abs(add(-2, -3)) == 5"] if "builtins" in attack else TESTS
    result = run(WRONG + FORGED_PASSES[attack], tests)
    assert result.verdict != "passed", (attack, result)
    _assert_no_secret(result)


def test_exiting_early_is_a_crash_that_says_so():
    result = run(RIGHT + "import sys\nsys.exit(0)\n")
    assert result.verdict == "crashed" and "before its tests finished" in result.detail
    result = run(RIGHT + "import os\nos._exit(0)\n")
    assert result.verdict == "crashed" and "before its tests finished" in result.detail


def _host_targets(tmp_path) -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {"HOST": str(tmp_path / f"escape-{tag}"), "TMP": f"/tmp/q35-escape-{tag}",
            "SHM": f"/dev/shm/q35-escape-{tag}", "DIR": str(tmp_path), "KEEP": str(tmp_path / "keep.txt")}


ESCAPES = {
    "absolute write": "open('{HOST}', 'w').write('x')",
    "write to /tmp": "open('{TMP}', 'w').write('x')",
    "write to /dev/shm": "open('{SHM}', 'w').write('x')",
    "chdir then relative write": "import os\nos.chdir('{DIR}')\nopen('{HOST}'.rsplit('/', 1)[1], 'w').write('x')",
    "dir_fd write": ("import os\nfd = os.open('{DIR}', os.O_RDONLY)\n"
                     "os.close(os.open('{HOST}'.rsplit('/', 1)[1], os.O_CREAT | os.O_WRONLY, dir_fd=fd))"),
    "mkfifo outside": "import os\nos.mkfifo('{HOST}')",
    "mknod outside": "import os\nos.mknod('{HOST}')",
    "symlink out, then write through it": "import os\nos.symlink('{KEEP}', 'link')\nopen('link', 'w').write('x')",
    "hardlink to a host file": "import os\nos.link('{KEEP}', 'hard')\nopen('hard', 'w').write('x')",
    "renaming a host file": "import os\nos.rename('{KEEP}', '{HOST}')",
    "deleting a host file": "import os\nos.remove('{KEEP}')",
    "shutil.copyfile out": "import shutil\nopen('mine', 'w').write('x')\nshutil.copyfile('mine', '{HOST}')",
    "chmod of a host file": "import os\nos.chmod('{KEEP}', 0o777)",
    "truncating a host file": "import os\nos.truncate('{KEEP}', 0)",
    "chroot": "import os\nos.chroot('.')",
}


@pytest.mark.parametrize("attack", list(ESCAPES), ids=list(ESCAPES))
def test_writes_outside_the_sandbox_are_contained(attack, tmp_path):
    paths = _host_targets(tmp_path)
    keep = tmp_path / "keep.txt"
    keep.write_text("original")
    os.chmod(keep, 0o644)
    code = "try:\n" + "".join(f"    {line}\n" for line in ESCAPES[attack].format(**paths).splitlines()) + \
           "except BaseException:\n    pass\n"  # catching does not help: refusals end the process
    result = run(WRONG + code)
    assert result.verdict in ("refused", "crashed", "failed"), result
    for key in ("HOST", "TMP", "SHM"):
        assert not os.path.lexists(paths[key]), (attack, key)
    assert keep.read_text() == "original" and (keep.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "keep.txt"]


def test_the_evaluator_and_other_processes_cannot_be_signalled(victim):
    attacks = [
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
        f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)",
        f"import os, signal\nos.kill({victim.pid}, signal.SIGKILL)",
        f"import os, signal\nos.killpg({victim.pid}, signal.SIGKILL)",
        "import os, signal\nos.killpg(0, signal.SIGKILL)",
        "import os, signal\nos.kill(1, signal.SIGKILL)",
        "import os\nos.kill(-1, 0)",
        f"import signal\nsignal.pthread_kill({victim.pid}, signal.SIGKILL)",
        f"import resource\nresource.prlimit({victim.pid}, resource.RLIMIT_NOFILE, (1, 1))",
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)",
    ]
    for code in attacks:
        result = run(WRONG + code)
        assert result.verdict in ("refused", "crashed"), (code, result)
    assert victim.poll() is None  # and this test process is evidently alive


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()",
    "import subprocess\nsubprocess.run(['sh', '-c', 'echo hi'])",
    "import os\nos.system('true')",
    "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "import os\nos.execv('/bin/sh', ['sh'])",
    "import multiprocessing\nmultiprocessing.Process(target=print).start()",
    "import pty\npty.spawn('/bin/sh')",
], ids=["fork bomb", "subprocess", "os.system", "posix_spawn", "exec", "multiprocessing", "pty"])
def test_new_processes_are_refused(code):
    result = run(WRONG + code)
    assert result.verdict in ("refused", "crashed"), result


LEAKS = ("/proc/{ppid}/environ", "/proc/self/environ", "/proc/1/environ", "/proc/2/environ",
         "/proc/{ppid}/cmdline", "/proc/self/mem", "{home}/.cache/huggingface/token")
_EVALUATOR = """
import json, os, sys
from qwen35_tune.eval.code_sandbox import run_with_tests
secret, home = os.environ["HF_TOKEN"], os.environ["HOME"]
out = []
for path in json.loads(sys.argv[1]):
    code = ("import os, sys\\ntry:\\n    data = open(%r.format(ppid=os.getppid()), 'rb').read()\\n"
            "except OSError:\\n    data = b''\\nsys.stderr.write(repr(data))\\nassert %r in data\\n"
            % (path.replace('{home}', home), secret.encode()))
    result = run_with_tests("def add(a, b):\\n    return a + b\\n" + code, ["assert add(1, 1) == 2"], timeout_s=5)
    out.append([path, result.verdict, result.detail])
print(json.dumps(out))
"""


def test_the_evaluators_secrets_cannot_be_read(tmp_path):
    """An evaluator started with HF_TOKEN in its environment (as a training job is): no program reads it from
    /proc/<pid>/environ, /proc/<pid>/cmdline, memory or the token file in its home directory."""
    home = tmp_path / "evaluator-home"
    (home / ".cache" / "huggingface").mkdir(parents=True)
    (home / ".cache" / "huggingface" / "token").write_text(SECRET)
    env = {**os.environ, "HF_TOKEN": SECRET, "HOME": str(home)}
    done = subprocess.run([sys.executable, "-c", _EVALUATOR, json.dumps(LEAKS)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == len(LEAKS)
    for path, verdict, detail in results:
        assert verdict != "passed", (path, verdict, detail)
    assert SECRET not in done.stdout and SECRET not in done.stderr


def test_the_environment_is_an_allow_list():
    code = ("import os\nassert set(os.environ) <= {'PATH', 'LANG', 'PYTHONIOENCODING', 'HOME', 'TMPDIR', 'LC_CTYPE'}"
            ", dict(os.environ)\n")
    assert run(RIGHT + code).verdict == "passed"


def test_secrets_a_program_prints_are_redacted_from_the_detail():
    code = f"raise RuntimeError('token {SECRET} and ghp_{'a' * 36} WANDB_API_KEY=abcdef1234567890')\n"
    result = run(RIGHT + code)
    assert result.verdict == "crashed" and "[REDACTED]" in result.detail
    assert SECRET not in result.detail and "ghp_" not in result.detail and "abcdef1234567890" not in result.detail


def test_network_is_refused():
    for code in ("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)",
                 "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('1.1.1.1', 53))",
                 "import socket\nsocket.getaddrinfo('example.com', 80)"):
        result = run(WRONG + code)
        assert result.verdict == "refused" and "network" in result.detail, result


@pytest.mark.parametrize(("code", "verdicts"), [
    ("print('x' * 4 * 10 ** 6)", {"crashed"}),  # over the output cap
    ("import sys\nfor _ in range(10 ** 6):\n    sys.stdout.write('y' * 1000)", {"crashed"}),
    ("open('big', 'wb').write(b'0' * 4 * 2 ** 20)", {"crashed"}),  # one file over the size cap
    ("for i in range(100):\n    open(f'f{i}', 'wb').write(b'0' * (2 ** 20 - 1))", {"crashed"}),  # fill the tmpfs
    ("x = bytearray(8 * 2 ** 30)", {"crashed"}),  # over the address-space limit
    ("import threading, time\nfor _ in range(100000):\n    threading.Thread(target=time.sleep, args=(5,)).start()",
     {"crashed", "timeout"}),
], ids=["stdout flood", "stdout writes", "big file", "fill the disk", "memory", "thread bomb"])
def test_resource_abuse_is_bounded(code, verdicts):
    start = time.monotonic()
    result = run(WRONG + code, timeout_s=3)
    assert result.verdict in verdicts, result
    assert time.monotonic() - start < 3 + 4


@pytest.mark.parametrize("code", [
    "import signal\ntry:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\nexcept ValueError:\n    pass\n"
    "while True:\n    pass",
    "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass",
    "x = sum(range(10 ** 12))",  # one C call that never lets the runner thread run
    "import time\nwhile True:\n    time.sleep(0.01)",
], ids=["SIGTERM ignored", "catching everything", "GIL-holding C loop", "sleeping"])
def test_runaway_programs_are_killed_at_the_limit(code):
    start = time.monotonic()
    result = run(WRONG + code, timeout_s=1)
    assert result.verdict == "timeout", result
    assert time.monotonic() - start < 1 + 4


def test_honest_programs_are_scored_correctly_under_concurrency():
    """GRPO scores a batch at once: 8 parallel calls, each with its own verdict."""
    cases = [(RIGHT, "passed"), (WRONG, "failed"), (RIGHT + "import os\nos._exit(0)\n", "crashed"),
             ("while True:\n    pass\n", "timeout"), (RIGHT, "passed"), (WRONG, "failed"),
             (RIGHT + "import numpy\nassert numpy.add(2, 3) == 5\n", "passed"), (RIGHT + "import os\nos.fork()\n",
                                                                                  "refused")]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda case: run(case[0], timeout_s=2), cases))
    assert [r.verdict for r in results] == [want for _, want in cases], results


def _isolated() -> bool:
    return run(RIGHT).isolation == "namespaces"


def test_without_the_guard_the_namespaces_still_contain(tmp_path, victim, evaluator_secrets):
    """The audit-hook guard left out: the kernel alone keeps host files, processes, network and secrets away."""
    if not _isolated():
        pytest.skip("Linux user namespaces are unavailable here")
    paths = _host_targets(tmp_path)
    keep = tmp_path / "keep.txt"
    keep.write_text("original")
    code = f"""
import os, socket, errno
assert not os.path.exists('/proc') and not os.path.exists('/sys') and not os.path.exists('/etc/passwd')
assert not os.path.exists({str(evaluator_secrets)!r}) and not os.path.exists({str(tmp_path)!r})
assert set(os.listdir('/')) <= {{'usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'etc', 'dev', 'tmp',
                                 'q35-sandbox'}} | {{p.split('/')[1] for p in {_python_dirs()!r}}}
for path in ({paths['TMP']!r}, '/tmp/mine', 'here'):
    open(path, 'w').write('x')  # private: gone with the sandbox
for pid in ({victim.pid}, {os.getpid()}):
    try:
        os.kill(pid, 0)
        raise AssertionError('saw pid %d' % pid)
    except ProcessLookupError:
        pass
try:
    os.kill(-1, 0)
    raise AssertionError('another process is visible')
except ProcessLookupError:
    pass
try:
    socket.create_connection(('1.1.1.1', 53), timeout=1)
    raise AssertionError('network reachable')
except OSError:
    pass
for bad in (lambda: os.mkdir('/usr/q35'), lambda: open(os.__file__, 'a'), lambda: os.chroot('/tmp')):
    try:
        bad()
        raise AssertionError('could change the system')
    except (PermissionError, OSError):
        pass
"""
    result = run(RIGHT + code, _guard=False)
    assert result.verdict == "passed", result
    assert not os.path.lexists(paths["TMP"]) and keep.read_text() == "original"


def _python_dirs() -> list[str]:
    return sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)})


def test_runner_thread_refuses_program_code():
    """A garbage-collected __del__ running on the runner's thread cannot reach its frames (the hook, unit-checked)."""
    child = os.path.join(os.path.dirname(run_with_tests.__code__.co_filename), "sandbox_child.py")
    script = (f"import sys, threading\nsys.path.insert(0, {os.path.dirname(child)!r})\nimport sandbox_child\n"
              "go = threading.Event()\nt = threading.Thread(target=lambda: (go.wait(), sys._getframe()))\nt.start()\n"
              "sandbox_child.install_guard('/tmp', (), (), 0)\ngo.set()\nt.join()\nprint('worker ok', flush=True)\n"
              "sys._getframe()\nprint('runner not refused')\n")
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 86 and "worker ok" in done.stdout and "runner not refused" not in done.stdout
    assert "program code on the runner's thread (sys._getframe)" in done.stderr


@pytest.mark.parametrize("code", [
    "import _posixsubprocess\n_posixsubprocess.fork_exec()",
    "import importlib\nimport _posixsubprocess\nimportlib.reload(_posixsubprocess)\n_posixsubprocess.fork_exec()",
    "import sys\ndel sys.modules['_posixsubprocess']\nimport _posixsubprocess",
    "import _imp, importlib.util\n_imp.create_dynamic(importlib.util.find_spec('_posixsubprocess'))",
], ids=["fork_exec", "reload", "re-import", "create_dynamic"])
def test_the_unaudited_process_primitive_stays_out_of_reach(code):
    result = run(WRONG + code)
    assert result.verdict == "refused" and "starting a process" in result.detail, result


def test_importing_subprocess_alone_is_fine():
    assert run(RIGHT + "import subprocess, shutil, tempfile\n").verdict == "passed"
