"""What ``model.init_from`` points at, read without torch: a finished run, an adapter folder, or a model folder.

Checked at ``validate`` (every problem at the key and line that set it) and again when ``train`` sets the model up
(``train.model_setup``), with the same words:

- a LoRA/QLoRA run (or its ``adapter/`` folder, or any peft adapter folder) under a LoRA/QLoRA recipe: its adapter is
  trained further on the base it was trained on (``model.name_or_path`` must be that base, and the recipe's LoRA shape
  the adapter's: a continued adapter keeps its own);
- a full fine-tune run (its ``merged/`` folder when there is one, else ``model/``), a merged folder, or any model
  folder: those weights become the base (a LoRA recipe then trains a fresh adapter on them);
- a LoRA run under a full fine-tune: its ``merged/`` weights (merge it first if it has none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen35_tune.run_layout import InitKind

ADAPTER_CONFIG = "adapter_config.json"
MODEL_CONFIG = "config.json"
# Adapter settings a continued adapter keeps from its own adapter_config.json (recipe key -> peft's name).
LORA_SHAPE = {"r": "r", "lora_alpha": "lora_alpha", "use_dora": "use_dora", "use_rslora": "use_rslora"}


class InitFromError(ValueError):
    """``model.init_from`` cannot be used with this recipe; ``key`` is the recipe key to name (message in args)."""

    def __init__(self, message: str, key: str = "model.init_from"):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class InitSource:
    """Where a run starts: an adapter to train further, or model weights to use as the base."""

    given: Path  # model.init_from as resolved
    kind: InitKind
    folder: Path  # the adapter folder, or the model folder loaded as the base
    run_dir: Path | None = None  # the qwen35-tune run it comes from (None: a bare folder)
    run: Any = None  # that run's run_layout.RunRecord

    @property
    def adapter_config(self) -> dict:
        return _json(self.folder / ADAPTER_CONFIG) if self.kind == "adapter" else {}


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InitFromError(f"{path} is not readable JSON ({exc})") from None
    return data if isinstance(data, dict) else {}


def _finished_run(folder: Path):
    """(run directory, RunRecord) when ``folder`` is a finished run, or an ``adapter/`` / ``model/`` / ``merged/``
    folder of one; else (None, None)."""
    from qwen35_tune.errors import UserError
    from qwen35_tune.run_layout import RunLayout

    for candidate in (folder, folder.parent):
        run = RunLayout(candidate)
        if run.run_json.is_file() and (candidate == folder or folder.name in (run.adapter.name, run.model.name,
                                                                               run.merged.name)):
            try:
                return candidate, run.run
            except UserError as exc:
                raise InitFromError(str(exc)) from None
    return None, None


def _merged_of(run_dir: Path) -> Path | None:
    from qwen35_tune.run_layout import RunLayout

    merged = RunLayout(run_dir).merged
    return merged if (merged / MODEL_CONFIG).is_file() else None


def read_init_source(init_from: str | Path, method_kind: str) -> InitSource:
    """What ``init_from`` holds for a recipe of ``method_kind`` (module docstring); InitFromError says why not."""
    given = Path(init_from).expanduser()
    shown = str(init_from)
    if not given.exists():
        raise InitFromError(f"not found: {shown} (give a run directory, an adapter folder or a model folder; relative "
                            "paths are relative to the working directory)")
    if not given.is_dir():
        raise InitFromError(f"{shown} is a file: give a run directory, an adapter folder or a model folder")
    run_dir, run = _finished_run(given)
    adapters = method_kind in ("lora", "qlora")
    if run is not None and given == run_dir:
        if run.weights == "adapter" and adapters:
            return _checked_adapter(InitSource(given, "adapter", run_dir / run.weights, run_dir, run), method_kind)
        merged = _merged_of(run_dir)
        if run.weights == "adapter" and merged is None:
            raise InitFromError(f"{shown} trained a {run.method} adapter, and a full fine-tune starts from whole "
                                f"weights: merge it first (qwen35-tune merge {shown}) or point at a merged folder")
        return InitSource(given, "weights", merged or run_dir / run.weights, run_dir, run)
    if (given / ADAPTER_CONFIG).is_file():
        if not adapters:
            raise InitFromError(f"{shown} is an adapter folder, and a full fine-tune starts from whole weights: merge "
                                "the adapter first and point at the merged folder")
        return _checked_adapter(InitSource(given, "adapter", given, run_dir, run), method_kind)
    if (given / MODEL_CONFIG).is_file():
        return InitSource(given, "weights", given, run_dir, run)
    if _unfinished_run(given):
        raise InitFromError(f"{shown} holds no finished run (no run.json): wait for it to finish, or resume it "
                            "(qwen35-tune train --resume auto)")
    raise InitFromError(f"{shown} is neither a run directory (run.json), an adapter folder ({ADAPTER_CONFIG}) nor a "
                        f"model folder ({MODEL_CONFIG})")


def _unfinished_run(folder: Path) -> bool:
    """A run directory whose training has not finished (a recipe, metrics or checkpoints, but no run.json)."""
    from qwen35_tune.run_layout import RunLayout

    run = RunLayout(folder)
    return any(path.exists() for path in (run.recipe_yaml, run.metrics_jsonl, run.checkpoints))


def _checked_adapter(source: InitSource, method_kind: str) -> InitSource:
    if not (source.folder / ADAPTER_CONFIG).is_file():
        raise InitFromError(f"{source.folder} has no {ADAPTER_CONFIG}: not a peft adapter folder")
    if source.run is not None and source.run.method != method_kind:
        raise InitFromError(f"{source.given} trained a {source.run.method} adapter; continuing it as method.kind: "
                            f"{method_kind} would train it on another base than its own: set method.kind: "
                            f"{source.run.method}", key="method.kind")
    if source.adapter_config.get("peft_type", "LORA") != "LORA":
        raise InitFromError(f"{source.folder} holds a {source.adapter_config.get('peft_type')} adapter; only LoRA "
                            "adapters can be continued")
    return source


def init_problems(init_from: str, method_kind: str, name_or_path: str, lora: Any) -> list[tuple[str, str]]:
    """(recipe key, message) for each way ``model.init_from`` does not fit the recipe (empty when it does)."""
    try:
        source = read_init_source(init_from, method_kind)
    except InitFromError as exc:
        return [(exc.key, str(exc))]
    problems = []
    if source.kind == "adapter" and source.run is not None and source.run.base_model != name_or_path:
        problems.append(("model.name_or_path", f"{source.given} trained its adapter on {source.run.base_model}, which "
                         f"model.init_from continues: set model.name_or_path: {source.run.base_model}"))
    config = source.adapter_config
    for key, peft_key in LORA_SHAPE.items():
        have, want = getattr(lora, key), config.get(peft_key)
        if source.kind == "adapter" and want is not None and have != want:
            problems.append((f"method.lora.{key}", f"is {have}, but the adapter continued from {source.folder} has "
                             f"{peft_key}={want} (a continued adapter keeps its shape): set method.lora.{key}: "
                             f"{want}, or start a fresh adapter on merged weights (model.init_from: a merged folder)"))
    return problems
