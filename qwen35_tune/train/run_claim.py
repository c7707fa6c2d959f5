"""What a run may do with a run directory that already holds a run: refuse a fresh start over it (unless
``--overwrite``), and on ``--resume`` compare the recipe with the one the run was trained with.

A resumed run restores weights, optimizer, scheduler and data position from its checkpoint, so a recipe change there
either takes no effect while the run claims it (``train.learning_rate``: the restored scheduler keeps the old one) or
mixes two trainings into one set of weights (model, method, LoRA shape, data, template, seed, batch geometry). Only
changes that do neither are allowed: how long to train, logging, saving, tracking, export and eval settings, and
kernel choices. The old recipe is kept as ``recipe.prev-N.yaml``, and metrics logged after the checkpoint (steps the
resumed run trains again) move to ``metrics.discarded.jsonl`` so ``metrics.jsonl`` reads as one run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)

RUN_MARKERS = RunDir.MARKERS  # whose presence means "a run trained here"
RUN_ARTIFACTS = RunDir.ARTIFACTS  # what a run writes into its directory: removed by --overwrite, nothing else
# Recipe keys (and sections) a resumed run may change: they alter neither the weights' history nor what is restored.
RESUME_SAFE = ("name", "description", "output_dir", "tracking", "export", "eval", "train.max_steps",
               "train.num_train_epochs", "train.logging_steps", "train.save_steps", "train.save_strategy",
               "train.save_total_limit", "train.eval_steps", "train.eval_strategy", "train.per_device_eval_batch_size",
               "train.dataloader_num_workers", "train.gradient_checkpointing", "model.attn_implementation",
               "model.allow_slow_kernels")  # fmt: skip
_PREV = re.compile(r"^recipe\.prev-(\d+)\.yaml$")
_CHECKPOINT_STEP = re.compile(r"checkpoint-(\d+)$")


def run_markers(run_dir: Path) -> list[str]:
    """The RUN_MARKERS present in ``run_dir``; checkpoints/ counts when it holds a checkpoint-N folder."""
    checkpoints = RunDir(run_dir).checkpoints
    found = [name for name in RUN_MARKERS if name != checkpoints.name and (run_dir / name).exists()]
    if checkpoints.is_dir() and any(p.name.startswith("checkpoint-") for p in checkpoints.iterdir()):
        found.append(checkpoints.name)
    return found


def flatten(value, prefix: str = "") -> dict:
    """Dotted key -> leaf value; list items by index (``data.cards.0.path``), as recipe overrides name them."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {f"{prefix}.#": len(value)}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{i}"))
        return out
    return {prefix: value}


def resume_safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in RESUME_SAFE)


def recipe_changes(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(key, old, new) for every leaf that differs; a key only one side has counts only if its value is set."""
    a, b = flatten(old), flatten(new)
    missing = object()
    changes = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, missing), b.get(key, missing)
        if before is missing and after is None or after is missing and before is None or before == after:
            continue
        changes.append((key, None if before is missing else before, None if after is missing else after))
    return changes


def _read_yaml(path: Path) -> dict:
    """The run's recipe.yaml as plain data, read by the recipe loader's YAML rules (not validated: an old run's recipe
    may hold settings this version refuses, and they are compared, not used)."""
    from qwen35_tune.errors import RecipeError
    from qwen35_tune.yaml_lines import load_yaml

    try:
        data = load_yaml(path).data
    except RecipeError as exc:
        raise UserError(f"--resume: cannot read the run's recipe {path} ({'; '.join(map(str, exc.problems))}); "
                        "restore it or start a new run in another --output-dir") from None
    return data if isinstance(data, dict) else {}


def keep_previous_recipe(run_dir: Path) -> Path:
    """Copy recipe.yaml to the next free recipe.prev-N.yaml (before the resumed run writes its own)."""
    taken = [int(m.group(1)) for p in run_dir.iterdir() if (m := _PREV.match(p.name))]
    target = run_dir / f"recipe.prev-{max(taken, default=0) + 1}.yaml"
    shutil.copy2(RunDir(run_dir).recipe_yaml, target)
    return target


def check_resume_recipe(recipe, run_dir: Path) -> list[tuple[str, object, object]]:
    """Compare ``recipe`` with the run's recipe.yaml: log every change, refuse unsafe ones, keep the old recipe."""
    from qwen35_tune.yaml_lines import parse_value

    path = RunDir(run_dir).recipe_yaml
    if not path.exists():
        return []
    changes = recipe_changes(_read_yaml(path), parse_value(recipe.to_yaml()) or {})  # as written, read back alike
    if not changes:
        return []
    unsafe = [c for c in changes if not resume_safe(c[0])]
    lines = [f"  {key}: {before!r} -> {after!r}{'' if resume_safe(key) else '  (not allowed on resume)'}"
             for key, before, after in changes]  # fmt: skip
    if unsafe:
        keys = ", ".join(key for key, _, _ in unsafe)
        raise UserError(
            f"--resume: the recipe differs from the one {run_dir} was trained with ({path}) in settings a resumed run "
            f"cannot change ({keys}):\n" + "\n".join(lines) + "\nA resumed run restores weights, optimizer, scheduler "
            "and data position from its checkpoint, so these would be ignored or mix two trainings. Put them back, "
            "or train them as a new run (another --output-dir, or --overwrite to replace this one). Allowed on "
            "resume: " + ", ".join(RESUME_SAFE))
    kept = keep_previous_recipe(run_dir)
    log.warning("resuming with recipe changes (the previous recipe is kept as %s):\n%s", kept.name, "\n".join(lines))
    return changes


def set_aside_metrics_after(run_dir: Path, step: int) -> int:
    """Move metrics.jsonl lines logged after ``step`` to metrics.discarded.jsonl; returns how many moved."""
    import json

    path, discarded = RunDir(run_dir).metrics_jsonl, RunDir(run_dir).metrics_discarded
    if not path.exists():
        return 0
    keep, moved = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            logged = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            logged = 0
        (moved if isinstance(logged, (int, float)) and logged > step else keep).append(line)
    if not moved:
        return 0
    with discarded.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(moved) + "\n")
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    os.replace(tmp, path)
    log.info("metrics.jsonl: %d lines logged after step %d (trained again now) moved to metrics.discarded.jsonl",
             len(moved), step)
    return len(moved)


def resume_step(resume: str, run_dir: Path) -> int:
    """The step ``--resume`` continues from (0 when ``auto`` finds no checkpoint: a fresh start)."""
    from qwen35_tune.train.resume import list_checkpoints

    if resume == "auto":
        found = list_checkpoints(RunDir(run_dir).checkpoints)
        name = found[-1].name if found else ""
    else:
        name = Path(resume).name
    match = _CHECKPOINT_STEP.search(name)
    return int(match.group(1)) if match else 0


def remove_previous_run(run_dir: Path) -> list[str]:
    """--overwrite: delete what an earlier run wrote into ``run_dir`` (RUN_ARTIFACTS and recipe.prev-N.yaml only)."""
    removed = []
    for path in [*(run_dir / name for name in RUN_ARTIFACTS), *run_dir.glob("recipe.prev-*.yaml")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    return removed


def prepare_run_dir(recipe, run_dir: Path, resume: str | None, overwrite: bool = False) -> None:
    """On the main process, before anything is written: the checks and moves this module describes."""
    if resume is not None and overwrite:
        raise UserError("--resume continues the run in the directory and --overwrite replaces it: pass one of them")
    markers = run_markers(run_dir) if run_dir.is_dir() else []
    if resume is None:
        if markers and not overwrite:
            raise UserError(
                f"{run_dir} already holds a run ({', '.join(markers)}). Continue it with --resume auto, train into "
                "another --output-dir, or pass --overwrite to delete that run and start again")
        if markers:
            removed = remove_previous_run(run_dir)
            log.warning("--overwrite: removed the previous run's %s from %s", ", ".join(removed), run_dir)
        return
    if markers:
        check_resume_recipe(recipe, run_dir)
        set_aside_metrics_after(run_dir, resume_step(resume, run_dir))


@contextmanager
def claim_run_dir(recipe, run_dir: Path, resume: str | None, overwrite: bool, main: bool | Path | None):
    """The main process locks ``run_dir`` for the whole run and checks it (``prepare_run_dir``); other ranks only
    train (they write nothing there, and their launcher stops them if the main process refuses)."""
    if not main:
        yield
        return
    from qwen35_tune.train.run_lock import RunLock

    with RunLock(run_dir):
        prepare_run_dir(recipe, run_dir, resume, overwrite)
        yield
