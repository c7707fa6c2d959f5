"""Errors from reading a checkpoint (a missing folder, a hub id not cached while offline, a gated repo, a broken
config) turned into one actionable ``UserError`` that names the setting it came from, instead of a traceback.

transformers wraps most of them in ``OSError`` with a long message; huggingface_hub raises its own types
(``HFValidationError``, ``LocalEntryNotFoundError``, ``RepositoryNotFoundError``...). Both are mapped here, once, for
every place that loads a config, tokenizer, processor, model or snapshot (train, preview, data stats, eval, merge).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from qwen35_tune.errors import UserError

DEFAULT_KEY = "model.name_or_path"


def looks_like_path(name: str) -> bool:
    """True for what the user meant as a folder (``./x``, ``/x``, ``~/x``, ``x/y/z``), not a hub id ``org/name``."""
    return name.startswith((".", "/", "~")) or name.count("/") >= 2 or "\\" in name


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0").lower() in ("1", "true", "yes", "on")  # fmt: skip


def _chain(exc: BaseException) -> list[BaseException]:
    seen, out = set(), []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def describe(exc: BaseException, name: str, what: str = "model") -> str | None:
    """What went wrong reading checkpoint ``name`` and what to do, or None if ``exc`` is not such a problem."""
    names = {type(e).__name__ for e in _chain(exc)}
    text = " ".join(str(e) for e in _chain(exc))
    expanded = Path(name).expanduser()
    if looks_like_path(name) and not expanded.exists():
        return (f"no such folder '{name}' (resolved: {expanded.resolve()}); give an existing checkpoint folder "
                "(with config.json) or a hub id like Qwen/Qwen3.5-9B")
    if "GatedRepoError" in names or ("gated" in text.lower() and "repo" in text.lower()):
        return (f"the hub repo '{name}' is gated: accept its terms on huggingface.co, then log in "
                "(hf auth login, or set HF_TOKEN)")
    if "RepositoryNotFoundError" in names:
        return (f"no hub repo '{name}' (or it is private: log in with hf auth login / HF_TOKEN); "
                "check the spelling or give a local folder")
    if "RevisionNotFoundError" in names:
        return f"the hub repo '{name}' has no such revision; check model.revision"
    if "HFValidationError" in names or "Repo id must" in text:
        return (f"'{name}' is neither an existing folder nor a valid hub id (ORG/NAME); give a checkpoint folder "
                "or a hub id like Qwen/Qwen3.5-9B")
    offline_hint = ("outgoing traffic is disabled (HF_HUB_OFFLINE=1)" if _offline()
                    else "the hub could not be reached")  # fmt: skip
    if (names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "IncompleteSnapshotError"}
            or "couldn't connect" in text.lower() or "cached snapshot" in text or "cached files" in text):
        return (f"'{name}' is not in the local Hugging Face cache and {offline_hint}: download it once where there "
                f"is network (hf download {name}, into the same HF_HOME), or point {{key}} at a local checkpoint "
                "folder")
    if "does not recognize this architecture" in text or "Unrecognized model" in text:
        return (f"'{name}' has a config this transformers version cannot read as a model ({_first_line(exc)}); "
                "qwen35-tune trains Qwen3.5 checkpoints (model_type qwen3_5 / qwen3_5_moe)")
    if expanded.is_dir():
        return f"cannot load the {what} from the folder '{name}': {_first_line(exc)}"
    if isinstance(exc, OSError):
        return f"cannot load the {what} '{name}': {_first_line(exc)}"
    return None


# The setting an outer ``checkpoint_source`` names, so loaders called inside it (load_config in load_model, say)
# report the same key instead of their default.
_CURRENT_KEY: ContextVar[str | None] = ContextVar("qwen35_checkpoint_key", default=None)


@contextmanager
def checkpoint_source(name: str, key: str | None = None, what: str = "model") -> Iterator[None]:
    """Turn a checkpoint-reading failure inside the block into ``UserError('<key>: ...')``; other errors pass.

    ``key`` (the recipe key or flag the name came from) defaults to the enclosing block's, else model.name_or_path.
    """
    key = key or _CURRENT_KEY.get() or DEFAULT_KEY
    token = _CURRENT_KEY.set(key)
    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        message = describe(exc, str(name), what)
        if message is None:
            raise
        raise UserError(f"{key}: {message.replace('{key}', key)}") from None
    finally:
        _CURRENT_KEY.reset(token)
