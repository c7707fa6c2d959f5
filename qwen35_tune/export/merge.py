"""Turn a finished run into a publishable folder in the *base checkpoint's own layout*, streamed shard by shard.

Every base tensor is read from the base's safetensors and written back under the same name and shard file: the ones
the adapter changes are merged in fp32 and written in their stored dtype, all others (vision tower, ``mtp.*``, fp32
GDN parameters, unknown keys) are copied byte-identical. Peak memory is about one shard, not the model. Full
fine-tunes take each tensor from the trained weights and carry through what the training model never loaded.
Works on any run directory (never imports ``train``); verification runs afterwards unless turned off.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from qwen35_tune import strict_json
from qwen35_tune.errors import UserError
from qwen35_tune.export.adapter_map import AdapterPlan, _candidates
from qwen35_tune.export.checkpoint import (
    Checkpoint,
    download_checkpoint,
    iter_shard,
    open_checkpoint,
    shard_metadata,
    write_index,
    write_shard,
)
from qwen35_tune.export.manifest import UNVERIFIED, write_manifest
from qwen35_tune.models.portable_configs import strip_machine_keys
from qwen35_tune.rundir import RunDir, RunRecord

log = logging.getLogger(__name__)

# Files taken from the base: its config (architectures unchanged) and generation defaults. Tokenizer files come from
# the run: the template trained with. Processor files (serving engines look for them next to the weights) come from the
# run when it saved any (the Qwen3.5 patch/normalisation and pixel budgets trained with), else from the base.
BASE_FILES = ("config.json", "generation_config.json")
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "chat_template.json",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model")


def resolve_base(run: RunRecord, base: str | Path | None = None) -> Path:
    """``--base`` if given, else the local path the run trained from, else its model name (tiny:// or hub id)."""
    if base is not None:
        return download_checkpoint(str(base), key="--base")
    if Path(run.base_path).exists():
        return Path(run.base_path)
    if run.init_kind == "weights":  # trained on an earlier stage's weights: model.name_or_path is not its base
        raise UserError(f"the run trained on the weights in {run.base_path} (model.init_from: {run.init_from}), which "
                        "are gone: restore them, or pass --base with the same weights")
    from qwen35_tune.models.load import resolve_model_path

    return download_checkpoint(resolve_model_path(run.base_model))


def stream_export(base: Checkpoint, out: Path, transform: Callable) -> list[str]:
    """Write every base tensor to ``out`` shard by shard; ``transform(key, tensor)`` returns a new tensor or None."""
    from rich.progress import track

    from qwen35_tune.terminal import shows_live_progress

    out.mkdir(parents=True, exist_ok=True)
    touched, total = [], 0
    quiet = len(base.shards) < 2 or not shows_live_progress()  # a log file would get a blank line, not a bar
    for shard in track(base.shards, description="exporting shards", transient=True, disable=quiet):
        tensors = {}
        for key, tensor in iter_shard(base, shard):
            new = transform(key, tensor)
            if new is not None:
                if new.shape != tensor.shape or new.dtype != tensor.dtype:
                    raise UserError(f"export of '{key}' changed its shape/dtype {tuple(tensor.shape)}/{tensor.dtype}"
                                    f" -> {tuple(new.shape)}/{new.dtype}")
                touched.append(key)
                tensor = new
            tensors[key] = tensor
        total += write_shard(out, shard, tensors, shard_metadata(base, shard))
        del tensors  # one shard in memory at a time
    if len(base.shards) > 1:
        write_index(out, base.weight_map, total, base.index_metadata)
    return touched


def merge_adapter(base_path: Path, adapter_dir: Path, out: Path, dequantize: Callable | None = None) -> list[str]:
    """Merge a peft LoRA/DoRA adapter (incl. routed-expert target_parameters) into the base; returns touched keys.

    ``dequantize(key, tensor)`` (QLoRA into the dequantised base) gives the weight the adapter was trained on, or None.
    """
    base = open_checkpoint(base_path)
    shapes = _shapes(base)
    plan = AdapterPlan(adapter_dir, shapes)
    log.info("merging %d adapter updates into %d of %d base tensors", sum(map(len, plan.updates.values())),
             len(plan.updates), len(shapes))

    def transform(key, tensor):
        weight = dequantize(key, tensor) if dequantize else None
        if key in plan.updates:
            return plan.apply(key, tensor if weight is None else weight).to(tensor.dtype)
        return None if weight is None else weight.to(tensor.dtype)

    return stream_export(base, out, transform)


def export_full(base_path: Path, weights_dir: Path, out: Path) -> list[str]:
    """Full fine-tune: each base tensor from the trained weights (in the base's dtype), the rest carried through."""
    from safetensors import safe_open

    base, trained = open_checkpoint(base_path), open_checkpoint(weights_dir)
    source: dict[str, tuple[str, str]] = {}
    unknown = []
    for key, shard in trained.weight_map.items():
        base_key = next((c for c in _candidates(key) if c in base.weight_map), None)
        if base_key is None:
            unknown.append(key)
        source[base_key] = (shard, key)
    if unknown:
        raise UserError(f"trained weights have tensors the base checkpoint lacks (wrong --base?): {unknown[:5]}")
    handles: dict[str, object] = {}

    def take(key, tensor):
        if key not in source:
            return None
        shard, trained_key = source[key]
        if shard not in handles:
            handles.clear()  # trained shards are read in base order; keep one open
            handles[shard] = safe_open(trained.path / shard, "pt")
        return handles[shard].get_tensor(trained_key).to(tensor.dtype)

    carried = sorted(set(base.weight_map) - set(source))
    log.info("full fine-tune export: %d tensors from training, %d carried from the base (%s)", len(source),
             len(carried), ", ".join(carried[:3]) + (" ..." if len(carried) > 3 else ""))
    return stream_export(base, out, take)


def _shapes(checkpoint: Checkpoint) -> dict[str, tuple]:
    from safetensors import safe_open

    shapes = {}
    for shard in checkpoint.shards:
        with safe_open(checkpoint.path / shard, "pt") as f:
            shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    return shapes


def copy_side_files(base_path: Path, weights_dir: Path, out: Path) -> None:
    """Config and generation files from the base; tokenizer, chat template and processor from the run if it has any."""
    for name in BASE_FILES:
        if (base_path / name).exists():
            shutil.copy2(base_path / name, out / name)
    # All processor files from one place: a run's processor_config.json next to a base's preprocessor_config.json
    # would leave two, possibly different, image settings in one folder.
    processor_home = weights_dir if any((weights_dir / n).exists() for n in PROCESSOR_FILES) else base_path
    for name in PROCESSOR_FILES:
        if (processor_home / name).exists():
            shutil.copy2(processor_home / name, out / name)
    for name in TOKENIZER_FILES:
        source = weights_dir / name if (weights_dir / name).exists() else base_path / name
        if source.exists():
            shutil.copy2(source, out / name)


def export_adapter(run_dir: RunDir | Path, out: Path | None = None, base: str | Path | None = None) -> Path:
    """The adapter in peft format with tokenizer, chat template and its own model card (``export.adapter_only``)."""
    from qwen35_tune.export.card import write_model_card

    run = RunDir.of(run_dir)
    if run.run.method == "full":
        raise UserError("export.adapter_only: this run is a full fine-tune and has no adapter to export")
    out = Path(out) if out else run.adapter_export
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run.weights, out)
    strip_machine_keys(out)
    write_model_card(out, run, adapter=True, base_path=resolve_base(run.run, base))
    log.info("exported the adapter of %s into %s", run.path, out)
    return out


def merge_run(run_dir: RunDir | Path, out: Path | None = None, verify: bool = True, base: str | Path | None = None,
              atol: float = 1e-4, adapter_only: bool | None = None, qlora_base: str | None = None) -> Path:
    """Export ``run_dir`` (adapter merged, or full weights) into ``out`` (default ``run_dir/merged``) and verify it.

    ``adapter_only`` (default: the recipe's ``export.adapter_only``) writes the peft adapter folder instead.
    ``qlora_base`` ('dequantized' or 'original'; default: the recipe's ``export.qlora_merge_base``, see
    export/qlora.py) is what a QLoRA adapter is merged into.
    """
    run = RunDir.of(run_dir)
    record, view = run.run, run.view  # view.export: the recipe's export section, schema defaults included
    if adapter_only if adapter_only is not None else view.export.adapter_only:
        return export_adapter(run, out, base)
    verify = verify and view.export.verify
    base_path = resolve_base(record, base)
    weights = run.weights
    out = Path(out) if out else run.merged
    report_path, unverified = out.parent / f"{out.name}_verify.json", out.parent / f"{out.name}{UNVERIFIED}"
    for stale in (out, unverified):  # a previous export must not pass for this one
        if stale.exists():
            shutil.rmtree(stale)
    report_path.unlink(missing_ok=True)
    final, out = out, unverified  # written under .unverified, renamed once complete (and verified): no partial merged/
    manifest = {"base": str(base_path), "source": str(weights), "method": record.method, "verified": False}
    if record.method == "full":
        touched = export_full(base_path, weights, out)
    elif record.method == "qlora":
        from qwen35_tune.export.qlora import Dequantizer, merge_target

        manifest["qlora_merge_base"] = target = merge_target(view.export, qlora_base)
        dequantize = Dequantizer(base_path, view.quantization, view.dtype) if target == "dequantized" else None
        log.info("qlora: merging into the %s base", target)
        touched = merge_adapter(base_path, weights, out, dequantize)
    else:
        touched = merge_adapter(base_path, weights, out)
    copy_side_files(base_path, weights, out)
    strip_machine_keys(out)  # no is_local / local paths of this machine in a published tokenizer_config.json
    manifest["touched"] = touched
    write_manifest(out, manifest)
    from qwen35_tune.export.card import write_model_card

    write_model_card(out, run, base_path=base_path)
    if verify:
        report = _verify(out, final, base_path, run, atol)
        write_manifest(out, {**manifest, "verified": True})
        report_path.write_text(strict_json.dumps(report, indent=2) + "\n")
    out.rename(final)
    log.info("exported %s into %s (%d tensors changed%s)", weights, final, len(touched), "" if verify else
             ", not verified")
    return final


def _verify(staging: Path, final: Path, base_path: Path, run: RunDir, atol: float) -> dict:
    """Verify the export under its ``.unverified`` name: a failed one stays there for inspection (with the reasons),
    never where publish or a user would take it for a good one."""
    from qwen35_tune.export.verify import verify_export

    try:
        return verify_export(staging, base_path, run_dir=run, atol=atol)
    except UserError as exc:
        (staging / "VERIFICATION_FAILED.txt").write_text(str(exc) + "\n")
        raise UserError(f"{exc}\nThe unverified export is kept in {staging} for inspection; nothing was written to "
                        f"{final}.") from None
