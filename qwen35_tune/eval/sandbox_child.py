"""The sandboxed side of eval.code_sandbox: isolate this process, then run one program and its tests and report.

Started as a script (``python -I -S -B sandbox_child.py SPEC``, standard library only; the spec is a marshal'd dict
and names the site-packages dirs to put on sys.path, so no .pth file runs) with a scrubbed environment,
two inherited descriptors (a pipe holding this run's random nonce, and the report file) and stdout/stderr files.

1. Isolation (``sandbox_isolation``): new namespaces and a private root, then a new PID namespace with an idle init
   and the runner as its pid 2; this first process only waits and passes the runner's exit status on. Where the
   kernel refuses, the runner goes on with the guard alone (or refuses, with QWEN35_TUNE_SANDBOX=require).
2. The runner: resource limits, every capability dropped, the nonce read and its pipe closed, the program and the
   tests compiled, the audit-hook guard installed, then both run in a worker thread; the main thread writes
   ``<nonce> passed`` to the report only if the tests ran to their end.

Why the verdict cannot be forged from inside (the program runs with the nonce somewhere in its own process):
- The worker thread is started on C callables only (``list(map(exec, codes, namespaces))``), so its stack begins
  with the program's own frame: no frame it can walk (``sys._getframe``, ``f_back``, tracebacks) belongs to the
  runner. The main thread holds the nonce; another thread's frames need ``sys._current_frames``, and objects need
  ``gc.get_objects``/``get_referrers``, ctypes or ``/proc/self/mem``: the guard refuses the first three and the
  private root has no ``/proc`` (the process is non-dumpable as well).
- Success is two locks: the program stage and the test stage each release ``ended`` when they stop on an exception
  (and the program can reach that), while ``passed`` is released by a step that ``map`` runs only after the tests
  returned normally and that no code of the program can reach. ``sys.exit``/``os._exit``/a signal before the end
  leaves ``passed`` locked. Tracing (``sys.settrace``/``setprofile``/``sys.monitoring``), which could skip asserts,
  and new audit hooks, which would run program code on the main thread, are refused.
- After the worker starts, the main thread only waits on a lock and writes a prepared line: it allocates nothing
  that could start a garbage collection (and with it a ``__del__`` of the program) on its own stack.
- The tests run with a fresh copy of the builtins, so a program that patches ``builtins`` cannot change them.
What the guard cannot stop: a program whose return values compare equal to anything, or interpreter bugs. Those can
at worst fake this verdict; they do not reach outside the namespaces.
"""

from __future__ import annotations

import marshal
import os
import signal
import sys

WORK = "/q35-sandbox"  # the program's cwd and HOME inside the private root
REFUSED_EXIT, UNAVAILABLE_EXIT = 86, 87
NETWORK = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
           "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo", "urllib.Request")
PROCESSES = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
             "pty.spawn", "os.startfile")
INTROSPECTION = ("sys._current_frames", "sys._current_exceptions", "gc.get_objects", "gc.get_referrers",
                 "gc.get_referents", "sys.settrace", "sys.setprofile", "sys._settraceallthreads",
                 "sys._setprofileallthreads", "sys.addaudithook", "sys.remote_exec")
REFUSED_PREFIXES = ("ctypes.", "sys.monitoring", "cpython.remote_debugger")
# Modules that give raw memory or other interpreters (without this guard): importing them raises ImportError, since
# libraries import some of them optionally (numpy tries ctypes). Also every (re-)import of _posixsubprocess, whose
# unaudited fork_exec the runner has already replaced (so `import subprocess` works, starting a process does not).
BLOCKED_IMPORTS = frozenset({"ctypes", "_ctypes", "cffi", "_cffi_backend", "_testcapi", "_testinternalcapi",
                             "_testbuffer", "_testmultiphase", "_testsinglephase", "_xxsubinterpreters",
                             "_xxinterpchannels", "_interpreters", "_interpqueues", "_interpchannels", "_xxtestfuzz"})
PROCESS_IMPORTS = frozenset({"_posixsubprocess"})
# event -> (indices of path arguments, indices of dir_fd arguments)
PATH_WRITES = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
               "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.truncate": ((0,), ()),
               "os.utime": ((0,), (3,)), "os.link": ((0, 1), (2, 3)), "os.symlink": ((1,), (2,)),
               "os.rename": ((0, 1), (2, 3)), "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()),
               "shutil.rmtree": ((0,), (1,)), "shutil.copyfile": ((0, 1), ()), "shutil.move": ((0, 1), ()),
               "shutil.copymode": ((1,), ()), "shutil.copystat": ((1,), ()), "shutil.chown": ((0,), ())}
# Unaudited calls that change the filesystem or the process's view of it: replaced by a refusal.
STRIPPED = ("mkfifo", "mknod", "chroot", "fchdir", "unshare", "setns")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

_RUN_STAGE = """\
try:
    exec(code, namespace)
except BaseException as error:
    show(type(error), error, error.__traceback__)
    end()
    raise SystemExit
"""


def main() -> None:
    with open(sys.argv[1], "rb") as fh:
        spec = marshal.load(fh)
    sys.path.extend(spec.get("site_dirs", ()))
    sources = {}
    for name in ("program.py", "tests.py"):
        with open(os.path.join(spec["work_host"], name), "rb") as fh:
            sources[name] = fh.read()
    if spec["isolation"] == "off":
        _note(spec, "isolation guard (turned off with QWEN35_TUNE_SANDBOX=off)")
        _run_program(spec, spec["work_host"], sources)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sandbox_isolation as iso

    sys.path.pop(0)
    root = spec["work_host"]
    try:
        iso.enter_namespaces()
        iso.build_root(spec["root_host"], WORK, sources, spec["python_dirs"])
        root = WORK  # from here on the host's files are gone, whatever fails next
        iso.new_pid_namespace()
    except (iso.IsolationError, OSError) as exc:
        if spec["isolation"] == "require":
            os.write(2, f"SandboxUnavailable: {exc}\n".encode("utf-8", "replace"))
            os._exit(UNAVAILABLE_EXIT)
        _note(spec, f"isolation guard ({exc})")
        os.chdir(root)
        try:
            iso.drop_capabilities()  # whatever a half-built user namespace granted
        except (iso.IsolationError, OSError):
            iso.harden()
        _run_program(spec, root, sources)
    _note(spec, "isolation namespaces")
    _run_in_pid_namespace(spec, iso, sources)


def _note(spec: dict, line: str) -> None:
    """First line of the report, written before any program code runs (so the evaluator can trust it)."""
    os.write(spec["report_fd"], (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))


def _run_in_pid_namespace(spec: dict, iso, sources: dict) -> None:
    """Fork an idle init (pid 1: the namespace dies with it) and the runner (pid 2); pass the runner's status on."""
    init = os.fork()
    if init == 0:
        _idle_init(spec, iso)
    runner = os.fork()
    if runner == 0:
        iso.die_with_parent(signal.SIGKILL)
        os.chdir(WORK)
        iso.drop_capabilities()
        _run_program(spec, WORK, sources)
    for fd in (spec["nonce_fd"], spec["report_fd"]):
        os.close(fd)
    _, status = os.waitpid(runner, 0)
    os.kill(init, signal.SIGKILL)
    os.waitpid(init, 0)
    if os.WIFSIGNALED(status):  # die the same way, so the evaluator sees e.g. SIGSEGV or SIGXCPU
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset (EINVAL)
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _idle_init(spec: dict, iso) -> None:
    for fd in (spec["nonce_fd"], spec["report_fd"]):
        os.close(fd)
    iso.die_with_parent(signal.SIGKILL)
    iso.harden()
    signal.signal(signal.SIGCHLD, lambda *_: None)  # so pause() returns to reap orphans
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        signal.pause()


def _run_program(spec: dict, root: str, sources: dict) -> None:
    """The runner: limits, environment, nonce, compiled stages, guard; then supervise and exit (never returns)."""
    _limit_resources(spec, processes=root != WORK)
    os.environ.clear()
    os.environ.update({**spec["env"], "HOME": root, "TMPDIR": root})
    nonce = b""
    while chunk := os.read(spec["nonce_fd"], 64):
        nonce += chunk
    os.close(spec["nonce_fd"])
    try:
        program = compile(sources["program.py"], "program.py", "exec", dont_inherit=True)
        tests = compile(sources["tests.py"], "tests.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        sys.__excepthook__(type(exc), exc, exc.__traceback__)
        os.write(spec["report_fd"], nonce + b" ended\n")
        os._exit(1)
    namespace = _main_module_namespace(root)
    for name in [m for m in sys.modules if m in ("sandbox_isolation", "ctypes", "_ctypes") or m.startswith("ctypes.")]:
        del sys.modules[name]  # a later import goes through the guard (and is refused)
    guard = None
    if spec.get("guard", True):  # off only in tests of the isolation layer alone
        _strip_unaudited()
        guard = (root, tuple(spec.get("deny_read", ())), tuple(spec["python_dirs"]), os.getpid())
    _supervise(program, tests, namespace, nonce, spec["report_fd"], float(spec["timeout_s"]), guard)


def _limit_resources(spec: dict, processes: bool) -> None:
    """Address space, CPU seconds, file size (stdout/stderr too), open files, no core dumps; processes in guard mode
    only (inside the namespaces RLIMIT_NPROC would count every process of the mapped user on the machine, and the
    PID namespace and the refused fork already bound them)."""
    try:
        import resource
    except ImportError:
        return  # no resource module on this OS: the wall-clock limit still applies
    limits = {"RLIMIT_AS": spec["memory_bytes"], "RLIMIT_CPU": spec["cpu_s"], "RLIMIT_FSIZE": spec["file_bytes"],
              "RLIMIT_NOFILE": 256, "RLIMIT_CORE": 0}
    if processes:
        limits["RLIMIT_NPROC"] = 64
    for name, value in limits.items():
        if hasattr(resource, name):
            # CPU: SIGXCPU at the soft limit (reported as a timeout), SIGKILL a second later should it be caught
            hard = value + 1 if name == "RLIMIT_CPU" else value
            try:
                resource.setrlimit(getattr(resource, name), (value, hard))
            except (ValueError, OSError):
                pass  # e.g. a hard limit already lower than ours: the stricter one stays


def _main_module_namespace(root: str) -> dict:
    """A fresh ``__main__`` module for the program (pickling its classes works), in place of this script's."""
    import types

    module = types.ModuleType("__main__")
    module.__file__ = os.path.join(root, "program.py")
    sys.modules["__main__"] = module
    sys.argv[:] = ["program.py"]
    return module.__dict__


def _refusal(write, exit_, status=REFUSED_EXIT):
    def refuse(what):
        write(2, ("\nSandboxRefused: " + what + "\n").encode("utf-8", "replace"))
        exit_(status)  # not an exception: the program must not be able to catch it and carry on

    return refuse


def _strip_unaudited() -> None:
    """Calls that raise no audit event become refusals: os/posix mkfifo, mknod, chroot, fchdir, ... and
    _posixsubprocess.fork_exec (subprocess's way to start a process; the guard refuses importing it afresh)."""
    import posix

    refuse = _refusal(os.write, os._exit)
    for name in STRIPPED:
        for module in (os, posix):
            if hasattr(module, name):
                setattr(module, name, lambda *_, _name=name, **__: refuse(f"os.{_name} is not allowed"))
    try:
        import _posixsubprocess
    except ImportError:
        return
    _posixsubprocess.fork_exec = lambda *_, **__: refuse("starting a process (_posixsubprocess.fork_exec)")


def install_guard(root: str, deny_read: tuple[str, ...], allow_read: tuple[str, ...], own_pid: int) -> None:
    """The audit hook: refuses network, processes, introspection of other threads and memory, kills of other
    processes, raised resource limits, writes outside ``root`` and reads under ``deny_read`` (except under ``root``
    and ``allow_read``: the Python installation may live in a home directory). On the thread that installs it (the
    runner's, which never runs program code) it refuses every event: program code can only get there as a
    garbage-collected ``__del__``, and must not reach a frame (``sys._getframe``, ``tb_frame``) of the runner.

    Everything it uses is bound here, as closure variables: a program that replaces ``os.path.realpath`` or
    ``builtins.len`` does not change what the hook decides (it may still fool its path resolution, which the private
    root makes moot). It holds no secret: it can be reached from program code it calls (a path's ``__fspath__``).
    """
    import _thread
    import resource

    refuse = _refusal(os.write, os._exit)
    realpath, join, isdir, getcwd, fsdecode, fspath = (os.path.realpath, os.path.join, os.path.isdir, os.getcwd,
                                                      os.fsdecode, os.fspath)
    getrlimit, infinity = resource.getrlimit, resource.RLIM_INFINITY
    type_, str_, bytes_, int_, tuple_, any_, import_error = type, str, bytes, int, tuple, any, ImportError
    root, prefix = realpath(root), realpath(root) + os.sep
    denied = tuple_(realpath(d) for d in deny_read)
    allowed = tuple_(realpath(d) for d in allow_read) + (root,)
    network, processes, introspection = frozenset(NETWORK), frozenset(PROCESSES), frozenset(INTROSPECTION)
    path_writes, write_flags = dict(PATH_WRITES), WRITE_FLAGS
    blocked, process_imports = BLOCKED_IMPORTS, PROCESS_IMPORTS
    refused_prefixes, check_limits = REFUSED_PREFIXES, _check_limits
    get_ident, runner_thread = _thread.get_ident, _thread.get_ident()

    def resolve(path):
        if type_(path) is not str_ and type_(path) is not bytes_:
            path = fspath(path)
        return realpath(join(getcwd(), fsdecode(path)))

    def inside(full):
        return full == root or full.startswith(prefix)

    def under(full, dirs):
        return any_(full == d or full.startswith(d + "/") for d in dirs)

    def check_read(path, event):
        if type_(path) is int_ or not denied:
            return
        full = resolve(path)
        if under(full, denied) and not under(full, allowed):
            refuse(f"reading {full} ({event})")

    def hook(event, args):
        if get_ident() == runner_thread and event != "_thread.start_new_thread":
            refuse(f"program code on the runner's thread ({event})")
        if event in introspection or event in network or event in processes or event.startswith(refused_prefixes):
            kind = ("network access" if event in network else "starting a process" if event in processes
                    else "introspecting the sandbox")
            refuse(f"{kind} ({event})")
        if event == "import":
            name = args[0]
            if type_(name) is str_ and name.partition(".")[0] in process_imports:
                refuse(f"starting a process (importing {name} again)")
            if type_(name) is str_ and name.partition(".")[0] in blocked:
                # An ImportError, not an exit: libraries import these optionally (numpy tries ctypes).
                raise import_error(f"{name} is not available in the code sandbox")
        elif event == "open":
            path, mode, flags = args
            if path is None or type_(path) is int_:
                return
            full = resolve(path)
            writes = (mode is not None and any_(c in str_(mode) for c in "wax+")) or (flags or 0) & write_flags
            if writes and not inside(full):
                refuse(f"writing outside the sandbox dir ({full})")
            if not inside(full) and isdir(full):
                refuse(f"opening a directory outside the sandbox dir ({full})")  # dir_fd= tricks start here
            check_read(path, event)
        elif event in path_writes:
            paths, dir_fds = path_writes[event]
            if any_(args[i] not in (None, -1) for i in dir_fds if i < len(args)):  # -1: no dir_fd given
                refuse(f"{event} relative to a directory descriptor")
            for i in paths:
                path = args[i] if i < len(args) else None
                if path is not None and type_(path) is not int_ and not inside(resolve(path)):
                    refuse(f"{event} outside the sandbox dir ({resolve(path)})")
        elif event == "os.chdir":
            if type_(args[0]) is int_ or not inside(resolve(args[0])):
                refuse(f"changing directory outside the sandbox dir ({args[0]!r})")
        elif event in ("os.listdir", "os.scandir"):
            if args and args[0] is not None:
                check_read(args[0], event)
        elif event == "os.kill":
            if args[0] != own_pid:
                refuse(f"signalling another process (os.kill pid {args[0]})")
        elif event == "os.killpg":
            refuse("signalling a process group (os.killpg)")
        elif event in ("resource.setrlimit", "resource.prlimit"):
            check_limits(event, args, own_pid, getrlimit, infinity, refuse)

    sys.addaudithook(hook)


def _check_limits(event, args, own_pid, getrlimit, infinity, refuse) -> None:
    """Lowering a limit is fine (deep-recursion solutions raise RLIMIT_STACK's soft limit); raising a hard one, or
    changing another process's, is not (root outside namespaces could)."""
    if event == "resource.prlimit":
        pid, which, limits = (args + (None,))[:3]
        if pid not in (0, own_pid):
            refuse(f"changing another process's limits (pid {pid})")
    else:
        which, limits = args
    if limits is None:
        return
    hard = getrlimit(which)[1]
    new_hard = limits[1]
    if hard != infinity and (new_hard == infinity or new_hard > hard):
        refuse(f"raising a hard resource limit ({event})")


def _supervise(program, tests, namespace, nonce: bytes, report_fd: int, timeout_s: float, guard: tuple | None) -> None:
    """Run the program, then (with pristine builtins) the tests, in a worker thread; report; exit.

    The nonce lives only in this frame, on the main thread, which no program code runs on (see the module
    docstring). After ``start_new_thread`` this thread only waits on a lock, writes a prepared line and exits; should
    anything raise there (the program may close the report descriptor), it exits at once. SIGINT is ignored, so
    ``_thread.interrupt_main`` cannot raise into this frame either.
    """
    import _thread
    import builtins

    ended, passed = _thread.allocate_lock(), _thread.allocate_lock()
    ended.acquire()
    passed.acquire()
    run = compile(_RUN_STAGE, "<sandbox>", "exec")
    namespace["__builtins__"] = builtins  # the program's own (it may patch them for itself)
    # Each step gets its own copy of the builtins (C code such as the traceback printer imports through them): a
    # program that reaches a step's frame cannot change what a later step uses.
    stage = {"exec": exec, "namespace": namespace, "show": sys.__excepthook__, "end": ended.release,
             "BaseException": BaseException, "SystemExit": SystemExit, "type": type}
    spaces = ({**stage, "code": program, "__builtins__": dict(builtins.__dict__)},
              {"namespace": namespace, "pristine": dict(builtins.__dict__), "__builtins__": dict(builtins.__dict__)},
              {**stage, "code": tests, "__builtins__": dict(builtins.__dict__)},
              {"passed": passed, "ended": ended, "__builtins__": dict(builtins.__dict__)})
    codes = (run, compile("namespace['__builtins__'] = pristine", "<sandbox>", "exec"), run,
             compile("passed.release()\nended.release()", "<sandbox>", "exec"))
    steps = map(exec, codes, spaces)
    line_passed, line_ended, line_timeout = nonce + b" passed\n", nonce + b" ended\n", nonce + b" timeout\n"
    write, exit_, wait, succeeded = os.write, os._exit, ended.acquire, passed.acquire
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if guard is not None:
        install_guard(*guard)
    try:
        _thread.start_new_thread(list, (steps,))
        woke = wait(True, timeout_s)
        won = succeeded(False)
        write(report_fd, line_passed if won else line_ended if woke else line_timeout)
        exit_(0 if won else 1)
    except BaseException:
        exit_(1)


if __name__ == "__main__":
    main()
