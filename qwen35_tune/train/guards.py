"""Checks a run makes before it spends time, and the environment failures it turns into exit code 2.

- before the data build: trackers that are named but not installed (transformers raises a RuntimeError from inside
  the Trainer otherwise; ``train.max_steps: 0`` and other wasted runs are refused by the recipe schema itself);
- while running: a full disk, a quota, a read-only or permission-denied run directory become one message naming the
  path, the free space and the checkpoint that survived (checkpoints are staged and renamed into place, see
  ``train.resume``), instead of a traceback from safetensors, torch.save or json.
"""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)

# Tracker name -> (transformers' availability check, the extra that installs it)
_TRACKERS = {"wandb": ("is_wandb_available", "pip install 'qwen35-tune[wandb]'"),
             "tensorboard": ("is_tensorboard_available", "pip install tensorboard")}  # fmt: skip
_FULL = (errno.ENOSPC, errno.EDQUOT)
_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)
# How libraries that do not raise OSError say the same (safetensors' Rust io::Error, torch's stream writer).
_FULL_TEXT = ("no space left on device", "storagefull", "disk quota exceeded", "os error 28", "code: 28")
_DENIED_TEXT = ("read-only file system", "readonlyfilesystem", "permission denied", "os error 30", "os error 13")
# torch.save's stream writer says only this on a full disk; it counts as one when the disk is (nearly) full.
_WRITE_FAILED_TEXT = ("file write failed", "failed writing file")
NEARLY_FULL_BYTES = 256 * 2**20


def check_recipe_runnable(recipe) -> None:
    """Recipe settings the schema cannot refute (what is installed here) that would crash inside the trainer."""
    wanted = [r for r in recipe.tracking.report_to if r != "none"]
    for name in wanted:
        if name not in _TRACKERS:
            continue
        import transformers.integrations as integrations

        check, install = _TRACKERS[name]
        if not getattr(integrations, check)():
            raise UserError(f"tracking.report_to: {name} is not installed ({install}), or remove it from "
                            "tracking.report_to")


def _errno_of(exc: BaseException, run_dir: Path) -> tuple[int | None, str | None, str]:
    """(errno, filename, text) from the first OSError in the exception chain, else from the messages."""
    chain, seen, item = [], set(), exc
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        chain.append(item)
        item = item.__cause__ or item.__context__
    for item in chain:
        if isinstance(item, OSError) and item.errno is not None:
            return item.errno, item.filename, item.strerror or str(item)
    text = " ".join(str(item) for item in chain)
    low = text.lower()
    if any(t in low for t in _FULL_TEXT):
        return errno.ENOSPC, None, text.splitlines()[0] if text else ""
    if any(t in low for t in _DENIED_TEXT):
        return errno.EACCES, None, text.splitlines()[0] if text else ""
    if any(t in low for t in _WRITE_FAILED_TEXT) and _free_bytes(run_dir) < NEARLY_FULL_BYTES:
        return errno.ENOSPC, None, text.splitlines()[0] if text else ""
    return None, None, text


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: Path) -> float:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return float("inf")


def _free(path: Path) -> str:
    free = _free_bytes(path)
    return "free space unknown" if free == float("inf") else f"{free / 2**30:.2f} GiB free"


def _survivor(run_dir: Path) -> str:
    from qwen35_tune.train.resume import list_checkpoints

    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        return "no checkpoint had been finished yet"
    return (f"the last finished checkpoint {found[-1]} is intact (checkpoints are written to checkpoints/.staging and "
            "renamed into place only when complete)")


def describe_storage_error(exc: BaseException, run_dir: Path) -> str | None:
    """The user-facing message for a full disk / denied write while training into ``run_dir``; None if not one."""
    code, filename, text = _errno_of(exc, run_dir)
    where = Path(str(filename)) if filename else run_dir
    if code in _FULL:
        kind = "the disk quota is exhausted" if code == errno.EDQUOT else "the disk is full"
        return (f"{kind} writing {where} ({_free(where)} on that filesystem); {_survivor(run_dir)}. Free space (or "
                f"lower train.save_total_limit), then continue with --resume auto --output-dir {run_dir}")
    if code in _DENIED:
        inside = where.resolve().is_relative_to(run_dir.resolve())
        fix = ("make the run directory writable or train into another --output-dir" if inside
               else f"check the permissions of {where}")  # fmt: skip
        return f"no permission to write {where} ({text}); {_survivor(run_dir)}. To fix: {fix}"
    return None


def describe_os_error(exc: OSError) -> str | None:
    """A full disk / denied write outside a training run (data stats, merge --out, eval --out), in plain words."""
    where = Path(str(exc.filename)) if exc.filename else None
    if exc.errno in _FULL:
        place = f" writing {where} ({_free(where)} on that filesystem)" if where else ""
        return f"the disk is full{place}; free space and run the command again"
    if exc.errno in _DENIED:
        return f"no permission to write {where or 'the output'} ({exc.strerror}); choose a writable location"
    return None


@contextmanager
def storage_errors(run_dir: Path) -> Iterator[None]:
    """Re-raise a full-disk or denied-write failure inside the block as a UserError (see the module docstring)."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # safetensors / torch wrap the OSError in their own types
        message = describe_storage_error(exc, Path(run_dir))
        if message is None:
            raise
        raise UserError(message) from None
