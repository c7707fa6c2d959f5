"""Linux namespaces for the code sandbox: a private root holding the Python installation read-only and nothing else.

Imported only by ``eval/sandbox_child.py`` inside the sandbox's first process, before any model-written code runs, so
it uses the standard library alone. What it builds, with the kernel's own isolation rather than Python-level hooks:
- user, mount, network, IPC and UTS namespaces (``unshare``), the caller's uid mapped to root inside, so it works for
  unprivileged users where the distribution allows unprivileged user namespaces, and as root;
- a new root (``pivot_root``, the old root unmounted): a size-capped tmpfs with the system library dirs, the Python
  prefixes and ``/etc/ld.so.cache`` bind-mounted read-only, ``/dev/{null,zero,full,random,urandom}``, a writable work
  dir and ``/tmp``; no ``/proc``, ``/sys``, home directories or host temp dirs, so neither the evaluator's files nor
  its environment (``/proc/<pid>/environ``) exist for the program;
- then a new PID namespace (the evaluator and every other process are invisible and cannot be signalled), and every
  capability dropped with ``no_new_privs`` and a non-dumpable process (no ptrace, no ``/proc/<pid>/mem``).
By hand because Python 3.11 has no ``os.unshare`` (3.12+) and no mount/pivot_root/capset at all, and the usual tools
(bubblewrap, nsjail) are not a Python dependency we can rely on; the steps follow bubblewrap's.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 4, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# pivot_root and capset have no glibc wrapper: their syscall numbers per architecture.
_SYSCALLS = {"x86_64": (155, 126), "aarch64": (41, 91), "riscv64": (41, 91), "ppc64le": (203, 184),
             "s390x": (217, 185), "i686": (217, 185), "armv7l": (218, 185)}
_SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")  # libraries extension modules link to
_DEVICES = ("null", "zero", "full", "random", "urandom")
# statvfs flags that a remount must keep (a user namespace may not clear flags locked by the outer mount).
_KEPT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
ROOT_SIZE = "size=64m,nr_inodes=16384,mode=755"


class IsolationError(Exception):
    """A namespace step failed: the sandbox runs with the guard only, or refuses (QWEN35_TUNE_SANDBOX=require)."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        raise IsolationError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _syscalls() -> tuple[int, int]:
    machine = os.uname().machine
    numbers = _SYSCALLS.get(machine)
    if numbers is None:
        raise IsolationError(f"no pivot_root/capset syscall numbers known for {machine}")
    return numbers


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    args = [None if s is None else os.fsencode(s) for s in (source, target, fstype)]
    _check(libc().mount(*args, flags, None if data is None else data.encode()), f"mount {source} on {target}")


def enter_namespaces() -> None:
    """New user (this uid as root inside), mount, network, IPC and UTS namespaces for this single-threaded process."""
    _syscalls()
    uid, gid = os.geteuid(), os.getegid()
    _check(libc().unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        try:
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
        except OSError as exc:
            raise IsolationError(f"writing /proc/self/{name}: {exc.strerror}") from None
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here propagates back to the host


def build_root(root: str, work: str, files: dict[str, bytes], python_dirs: list[str]) -> None:
    """Make ``root`` (an empty dir) the new ``/``: system and Python dirs read-only, ``work`` and ``/tmp`` writable."""
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, ROOT_SIZE)
    readonly = []
    for name in _SYSTEM_DIRS:
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), os.path.join(root, name))
        elif os.path.isdir(host):
            readonly.append(host)
    for folder in sorted(os.path.realpath(d) for d in python_dirs if os.path.isdir(d)):
        if not any(folder == r or folder.startswith(r + "/") for r in readonly):
            readonly.append(folder)
    for host in readonly:
        _bind(host, root + host)
    if os.path.isfile("/etc/ld.so.cache"):  # how the dynamic loader finds the libraries extension modules need
        _bind("/etc/ld.so.cache", root + "/etc/ld.so.cache", file=True)
    for device in _DEVICES:
        if os.path.exists("/dev/" + device):
            _bind("/dev/" + device, f"{root}/dev/{device}", file=True, readonly=False)
    for path in (root + work, root + "/tmp"):
        os.makedirs(path, exist_ok=True)
    os.chmod(root + "/tmp", 0o1777)
    for name, data in files.items():
        with open(os.path.join(root + work, name), "wb") as fh:
            fh.write(data)
    _remount_readonly(root, skip={f"{root}/dev/{d}" for d in _DEVICES})
    _pivot(root)


def _bind(host: str, target: str, file: bool = False, readonly: bool = True) -> None:
    if file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    else:
        os.makedirs(target, exist_ok=True)
    _mount(host, target, None, MS_BIND | (MS_REC if not file else 0))
    if not readonly:
        _remount(target, MS_NOSUID)


def _remount(target: str, flags: int) -> None:
    current = os.statvfs(target).f_flag
    kept = sum(ms for st, ms in _KEPT_FLAGS if current & st)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | flags | kept)


def _remount_readonly(root: str, skip: set[str]) -> None:
    """Every mount under ``root`` (recursive binds bring sub-mounts along) read-only, nosuid, nodev."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        points = [_unescape(line.split()[4]) for line in fh]
    for point in points:
        if point.startswith(root + "/") and point not in skip:
            _remount(point, MS_RDONLY | MS_NOSUID | MS_NODEV)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _pivot(root: str) -> None:
    """Swap ``/`` for ``root`` and unmount the old root, so no path (and no cwd) leads back to the host."""
    pivot_root, _ = _syscalls()
    old = root + "/.old-root"
    os.mkdir(old)
    _check(libc().syscall(pivot_root, os.fsencode(root), os.fsencode(old)), "pivot_root")
    os.chdir("/")
    _check(libc().umount2(b"/.old-root", MNT_DETACH), "unmounting the old root")
    os.rmdir("/.old-root")


def new_pid_namespace() -> None:
    """Children forked after this live in a new PID namespace (the first one is its init)."""
    _check(libc().unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")


def die_with_parent(signal_number: int) -> None:
    libc().prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0)


def harden() -> None:
    """No new privileges across exec and a non-dumpable process (no ptrace, no /proc/<pid>/mem): also without
    namespaces, wherever prctl exists."""
    try:
        prctl = libc().prctl
    except (OSError, AttributeError):
        return
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def drop_capabilities() -> None:
    """Drop every capability the user namespace granted (bounding, ambient, effective, permitted, inheritable)."""
    _, capset = _syscalls()
    harden()
    prctl = libc().prctl
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(64):
        if prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # EINVAL past the last capability this kernel knows
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc().syscall(capset, ctypes.byref(header), ctypes.byref(data)), "capset")
