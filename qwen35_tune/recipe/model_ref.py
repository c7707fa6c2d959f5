"""Can `model.name_or_path` be loaded on this machine? Checked at validate time, instantly (no torch, no network).

The commonest recipe mistake is a model that is not there: a folder path with a typo, or a Hub id while offline
that was never downloaded. transformers reports either only after the data build, as an HFValidationError or
LocalEntryNotFoundError traceback. Here the folder is looked at, the id's syntax is checked with huggingface_hub's
own validator, and offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) the local Hub cache is asked with
huggingface_hub's own lookup. Online, an id that is not cached yet can only be judged by the Hub: no finding.
The model loader may call model_ref_problem too, to word the same failure the same way.
"""

from __future__ import annotations

from pathlib import Path

from qwen35_tune.registry import TINY_SCHEME


def model_ref_problem(name_or_path: str, revision: str | None = None) -> str | None:
    """Why name_or_path cannot be loaded here (in the user's words, with what to do), or None when it can or only
    the Hub could tell."""
    if name_or_path.startswith(TINY_SCHEME):
        return None  # built into the local cache on first use
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            return (f"folder {name_or_path} has no config.json, so it is not a model checkpoint: point at the "
                    "folder that holds config.json and the weights")  # fmt: skip
        return None
    if local.exists():
        return f"{name_or_path} is a file: give the checkpoint folder (the one with config.json) or a Hub id"
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        if _looks_like_a_path(name_or_path):
            return f"folder not found: {name_or_path} (relative paths are relative to the working directory)"
        return (f"'{name_or_path}' is neither an existing folder nor a valid Hub id (like 'Qwen/Qwen3.5-9B': "
                "letters, digits, '-', '_' and '.', one '/' between owner and name)")  # fmt: skip
    return _offline_cache_problem(name_or_path, revision)


def _looks_like_a_path(text: str) -> bool:
    """True for what can only be meant as a file system path (a Hub id has at most one '/', no '~' or '\\')."""
    return text.startswith(("/", "~", ".")) or text.count("/") > 1 or "\\" in text or text.endswith("/")


def _offline_cache_problem(repo_id: str, revision: str | None) -> str | None:
    """Offline, a Hub id must be in the local cache (its config.json at that revision); online nothing is checked."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return None
    if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return None
    at = f" at revision '{revision}'" if revision else ""
    return (f"'{repo_id}'{at} is not a local folder and not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE is set, so it cannot be downloaded: run "
            f"`hf download {repo_id}` where there is a network (same HF_HOME), or point model.name_or_path at a "
            "local checkpoint folder")  # fmt: skip
