"""Saved tokenizer and processor configs that describe the model, not the machine that saved them.

transformers 5 writes the loading call's own arguments back into ``tokenizer_config.json`` (``is_local: true``,
``local_files_only: true`` after an offline load, and ``name_or_path`` / ``tokenizer_file`` as absolute paths of this
machine's cache). A folder published with them tells every user's transformers to skip the hub and leaks local
paths, so each folder the project writes for others (``adapter/``, ``model/``, ``merged/``, an adapter export) is
cleaned with ``strip_machine_keys`` after saving. Plain JSON, no torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Keys that only ever describe how and where the files were loaded, never the tokenizer or processor itself.
MACHINE_KEYS = frozenset({
    "is_local", "local_files_only", "cache_dir", "token", "use_auth_token", "force_download", "resume_download",
    "proxies", "local_dir", "_commit_hash", "trust_remote_code", "subfolder", "_from_auto",
})  # fmt: skip
# Keys whose value is a location: dropped when it is an absolute or home-relative path on this machine.
PATH_KEYS = frozenset({"name_or_path", "_name_or_path", "tokenizer_file", "vocab_file", "merges_file",
                       "chat_template_file", "processor_file"})  # fmt: skip
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json", "processor_config.json",
                "preprocessor_config.json", "video_preprocessor_config.json")  # fmt: skip


def _is_machine_path(value) -> bool:
    if not isinstance(value, str) or not value:
        return False
    return value.startswith(("/", "~", "\\\\")) or (len(value) > 2 and value[1] == ":" and value[2] in "/\\")


def clean(config):
    """``config`` without machine-describing keys, at any depth (processor configs nest their parts)."""
    if isinstance(config, dict):
        return {k: clean(v) for k, v in config.items()
                if k not in MACHINE_KEYS and not (k in PATH_KEYS and _is_machine_path(v))}  # fmt: skip
    if isinstance(config, list):
        return [clean(v) for v in config]
    return config


def strip_machine_keys(folder: Path) -> list[str]:
    """Rewrite the tokenizer/processor config files in ``folder`` without machine keys; returns the files changed."""
    changed = []
    for name in CONFIG_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not ours to judge; the loaders report a broken file
        cleaned = clean(config)
        if cleaned != config:
            path.write_text(json.dumps(cleaned, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            changed.append(name)
    if changed:
        log.debug("removed machine-specific keys from %s in %s", ", ".join(changed), folder)
    return changed
