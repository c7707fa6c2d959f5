"""``export_manifest.json``: what an exported folder was made from and whether verification passed.

merge writes it (``verified: false`` until verification passed, and under the folder's ``.unverified`` name until
then); verify reads which tensors the export touched; publish refuses a folder that says it is not verified.
"""

from __future__ import annotations

import json
from pathlib import Path

from qwen35_tune.errors import UserError

MANIFEST = "export_manifest.json"
UNVERIFIED = ".unverified"  # suffix of an export's folder until verification passed


def read_manifest(folder: Path) -> dict:
    """The folder's manifest ({} for a folder merge did not write, e.g. an adapter export or a downloaded model)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc}); export the run again with 'qwen35-tune merge'") from None
    return data if isinstance(data, dict) else {}


def write_manifest(folder: Path, manifest: dict) -> None:
    (Path(folder) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def unverified_reason(folder: Path) -> str | None:
    """Why ``folder`` must not be published as a verified export, or None (a folder merge did not write passes)."""
    folder = Path(folder)
    if any(name.endswith(UNVERIFIED) for name in (folder.name, folder.resolve().name)):
        return (f"{folder} is an export that did not pass verification (or was interrupted before it): merge "
                f"writes under the {UNVERIFIED} name until verification passed")
    if read_manifest(folder).get("verified") is False:
        return (f"{folder / MANIFEST} says the export was not verified (merged with --no-verify or "
                "export.verify: false)")
    return None
