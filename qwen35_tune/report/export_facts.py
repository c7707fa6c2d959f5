"""A run's export for the page: the merged folder and its verification (merged_verify.json, the manifest), the
key and dtype difference from the base checkpoint read from the safetensors headers, and the model card."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from markupsafe import Markup

from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)

CARD_NAME = "README.md"  # the model card merge writes into the exported folder
FAILED_NAME = "VERIFICATION_FAILED.txt"  # what merge leaves in an export that did not pass
LISTED = 20  # differing keys listed by name


@dataclass
class ExportFacts:
    """What the page says about the export (absent parts are None)."""

    folder: Path | None = None
    state: str = "none"  # none | verified | not verified | failed
    verify: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    failure: str | None = None
    diff: dict | None = None
    diff_problem: str | None = None
    card_front: str | None = None
    card_html: Markup | None = None
    adapter_export: Path | None = None


def _headers(folder: Path) -> dict[str, tuple[str, tuple]]:
    """key -> (dtype, shape) of every tensor of a safetensors checkpoint, from the headers only: no tensor is read,
    and no torch is imported (safetensors' numpy reader)."""
    from safetensors import safe_open

    from qwen35_tune.export.checkpoint import INDEX, SINGLE

    index = folder / INDEX
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else [SINGLE]
    out = {}
    for shard in shards:
        with safe_open(folder / shard, "numpy") as f:
            for key in f.keys():
                piece = f.get_slice(key)
                out[key] = (piece.get_dtype(), tuple(piece.get_shape()))
    return out


def header_diff(base: Path, merged: Path) -> dict:
    """Keys only in one of the two checkpoints, keys whose dtype or shape differ, and dtype counts of each."""
    a, b = _headers(base), _headers(merged)
    changed = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    count_a, count_b = Counter(v[0] for v in a.values()), Counter(v[0] for v in b.values())
    return {"base_tensors": len(a), "merged_tensors": len(b), "common": len(a.keys() & b.keys()),
            "only_base": sorted(a.keys() - b.keys())[:LISTED], "only_base_count": len(a.keys() - b.keys()),
            "only_merged": sorted(b.keys() - a.keys())[:LISTED], "only_merged_count": len(b.keys() - a.keys()),
            "changed": [(k, a[k], b[k]) for k in changed[:LISTED]], "changed_count": len(changed),
            "dtypes": [(d, count_a[d], count_b[d]) for d in sorted(count_a.keys() | count_b.keys())]}


def model_card(text: str) -> tuple[str | None, Markup]:
    """(YAML front matter or None, the card's Markdown as HTML); raw HTML in the card is shown as text and images
    are not loaded (the page makes no network request)."""
    from markdown_it import MarkdownIt

    front = None
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end > 0:
            front, text = text[4:end], text[end + 4:].lstrip("-\n")
    md = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")
    return front, Markup(md.render(text))


def _export_folder(run: RunDir, recipe) -> tuple[Path, Path]:
    """(merged folder, its verification json), where merge writes them (export.merged_dir when the recipe sets it)."""
    merged_dir = getattr(getattr(recipe, "export", None), "merged_dir", None)
    if merged_dir:
        folder = Path(merged_dir)
        return folder, folder.parent / f"{folder.name}_verify.json"  # merge.merge_run's naming
    return run.merged, run.merged_verify


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_export(run: RunDir, recipe) -> ExportFacts:
    """Everything the export part of the page shows (see the module doc)."""
    from qwen35_tune.export.manifest import UNVERIFIED, read_manifest

    folder, verify_path = _export_folder(run, recipe)
    unverified = folder.parent / f"{folder.name}{UNVERIFIED}"
    facts = ExportFacts(adapter_export=run.adapter_export if run.adapter_export.is_dir() else None)
    if folder.is_dir():
        facts.folder, facts.manifest = folder, read_manifest(folder)
        facts.state = "verified" if facts.manifest.get("verified") else "not verified"
        facts.verify = run.merged_verify_report() if verify_path == run.merged_verify else _read_json(verify_path)
    elif unverified.is_dir():
        facts.folder, facts.manifest, facts.state = unverified, read_manifest(unverified), "failed"
        failed = unverified / FAILED_NAME
        facts.failure = failed.read_text(encoding="utf-8", errors="replace") if failed.exists() else None
    else:
        return facts
    base = facts.manifest.get("base") or (run.run.base_path if run.is_finished() else None)
    if base and Path(base).is_dir():
        try:
            facts.diff = header_diff(Path(base), facts.folder)
        except Exception as exc:  # noqa: BLE001 (a partial or foreign folder: say so instead of the table)
            facts.diff_problem = f"{type(exc).__name__}: {exc}"
    else:
        facts.diff_problem = f"the base checkpoint ({base or 'unknown'}) is not on this machine"
    card = facts.folder / CARD_NAME
    if card.exists():
        facts.card_front, facts.card_html = model_card(card.read_text(encoding="utf-8", errors="replace"))
    return facts
