"""Upload an exported folder (merged model or adapter) to the Hugging Face Hub through huggingface_hub.

The token is never handled here: huggingface_hub reads it from ``HF_TOKEN`` or the login cache itself, so it cannot
end up in logs, the run directory or the card. ``dry_run`` lists exactly the files that would be uploaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.export.card import REPO_ID
from qwen35_tune.export.manifest import unverified_reason

log = logging.getLogger(__name__)

# Above this, upload_large_folder (resumable, parallel, multi-commit) instead of one upload_folder commit.
LARGE_FOLDER_BYTES = 20 * 1024**3
# Never uploaded: local caches and editor leftovers.
IGNORE = (".cache/**", "**/.cache/**", ".git/**", "**/__pycache__/**", "*.lock", ".DS_Store")


def upload_files(folder: Path) -> list[tuple[str, int]]:
    """(relative path, size) of every file ``publish`` uploads, sorted; the same filter huggingface_hub applies."""
    from huggingface_hub.utils import filter_repo_objects

    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    kept = filter_repo_objects(paths, ignore_patterns=list(IGNORE))
    return [(rel, (folder / rel).stat().st_size) for rel in kept]


def check_publishable(folder: Path) -> None:
    """A folder without weights, config or card is not something to publish, nor an export that was not verified."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    has_weights = any(n.endswith(".safetensors") for n in names)
    if not folder.is_dir() or not has_weights:
        raise UserError(f"{folder} holds no safetensors weights; publish a folder written by 'merge' or an adapter")
    unverified = unverified_reason(folder)
    if unverified:
        raise UserError(f"{unverified}. Publish only a verified export: run 'qwen35-tune merge RUN_DIR' with "
                        "verification on (no --no-verify, export.verify: true) and publish the folder it prints")
    if "README.md" not in names:
        raise UserError(f"{folder} has no README.md model card; export it with 'qwen35-tune merge' first")
    if "config.json" not in names and "adapter_config.json" not in names:
        raise UserError(f"{folder} has neither config.json nor adapter_config.json")


def publish_folder(folder: Path, repo_id: str, private: bool = True, dry_run: bool = False) -> list[tuple[str, int]]:
    """Create (or reuse) ``repo_id`` and upload ``folder``; returns the uploaded file list (all that dry_run does)."""
    folder = Path(folder)
    if not REPO_ID.match(repo_id):
        raise UserError(f"--repo '{repo_id}' is not a hub repo id like 'org/name'")
    check_publishable(folder)
    files = upload_files(folder)
    if dry_run:
        return files
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        # upload_large_folder exists in huggingface_hub 0.25-1.x only; 2.x's upload_folder handles big folders.
        if sum(size for _, size in files) > LARGE_FOLDER_BYTES and hasattr(api, "upload_large_folder"):
            api.upload_large_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                                    ignore_patterns=list(IGNORE), private=private)
        else:
            api.upload_folder(repo_id=repo_id, folder_path=folder, ignore_patterns=list(IGNORE),
                              commit_message="Upload with qwen35-tune")
    except HfHubHTTPError as exc:  # the message names the repo and status, never the token
        raise UserError(f"upload to {repo_id} failed: {exc}") from None
    log.info("published %d files to https://huggingface.co/%s", len(files), repo_id)
    return files
