"""Check an exported folder against its base and the trained model before anyone publishes it.

Structure: same tensor names, shapes and dtypes as the base. Content, given the run: every tensor the trained model
changes is ``(W.float() + ΔW).to(dtype)`` to within one rounding step, with W and ΔW computed independently of the
merge (export/expected.py: peft on the loaded trained model, transformers' own key mapping), and every other tensor is
byte-identical to the base; without the run, the manifest's touched tensors differ and the rest are identical.
Behaviour, in fp32: the folder reloads through the Auto class its architectures imply and gives the logits of the
correctly rounded merge on a few prompts (vision checkpoints: also an image prompt built by the folder's own
processor); how far that is from the trained adapter model is reported (it is bf16 rounding, ~0.1 on the tiny
models, against ~5 for a corrupted merge), and greedy generation runs. Any failure raises UserError listing every
problem found, each naming the tensor and by how much.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.export.checkpoint import open_checkpoint, raw_bytes
from qwen35_tune.export.manifest import read_manifest
from qwen35_tune.rundir import RunDir

log = logging.getLogger(__name__)

PROMPTS = (
    [{"role": "user", "content": "What is 12 + 30?"}],
    [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": "Say hello."}],
)


def auto_class_for(config):
    """The Auto class a user would load this checkpoint with (vision checkpoints are image-text-to-text)."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    archs = getattr(config, "architectures", None) or []
    return AutoModelForImageTextToText if any("ConditionalGeneration" in a for a in archs) else AutoModelForCausalLM


def check_structure(out: Path, base_path: Path) -> list[str]:
    """Same tensor names, shapes and dtypes as the base, read from the shard headers (no tensor data)."""
    from safetensors import safe_open

    def headers(checkpoint) -> dict[str, tuple]:
        found = {}
        for shard in checkpoint.shards:
            with safe_open(checkpoint.path / shard, "pt") as f:
                found.update({k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()})
        return found

    base, merged = headers(open_checkpoint(base_path)), headers(open_checkpoint(out))
    problems = []
    missing, extra = sorted(set(base) - set(merged)), sorted(set(merged) - set(base))
    if missing:
        problems.append(f"{len(missing)} base tensors missing from the export, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} tensors not in the base, e.g. {extra[:3]}")
    problems += [f"{k}: {base[k][0]}{base[k][1]} in the base, {merged[k][0]}{merged[k][1]} here"
                 for k in sorted(set(base) & set(merged)) if base[k] != merged[k]]
    return problems


def check_tensors(out: Path, base_path: Path, touched: set[str] | None, expect_changed: bool) -> tuple[dict, list]:
    """Without the run: compare every tensor pair one at a time (memory stays at two tensors), touched ones by the
    manifest."""
    from safetensors import safe_open

    base, merged = open_checkpoint(base_path), open_checkpoint(out)
    problems = []
    missing, extra = sorted(set(base.weight_map) - set(merged.weight_map)), sorted(set(merged.weight_map) -
                                                                                    set(base.weight_map))
    if missing:
        problems.append(f"{len(missing)} base tensors missing from the export, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{len(extra)} tensors not in the base, e.g. {extra[:3]}")
    counts = {"tensors": 0, "changed": 0, "identical": 0}
    handles: dict[str, object] = {}
    for shard in base.shards:
        with safe_open(base.path / shard, "pt") as f:
            for key in f.keys():
                if key not in merged.weight_map:
                    continue
                file = merged.weight_map[key]
                handles.setdefault(file, safe_open(merged.path / file, "pt"))
                a, b = f.get_tensor(key), handles[file].get_tensor(key)
                counts["tensors"] += 1
                if a.dtype != b.dtype or a.shape != b.shape:
                    problems.append(f"{key}: {a.dtype}{tuple(a.shape)} in the base, {b.dtype}{tuple(b.shape)} here")
                    continue
                same = a.numel() == 0 or bool(raw_bytes(a).equal(raw_bytes(b)))
                counts["identical" if same else "changed"] += 1
                if touched is None:
                    continue
                if key in touched and same and expect_changed:
                    problems.append(f"{key}: the adapter targets it but it equals the base")
                if key not in touched and not same:
                    problems.append(f"{key}: not touched by the export but differs from the base")
    return counts, problems


def _logits(model, batches) -> list:
    """Logits per batch: a tensor of input ids, or a dict of model inputs (an image prompt with its pixels)."""
    import torch

    with torch.no_grad():
        return [model(**(b if isinstance(b, dict) else {"input_ids": b})).logits.float() for b in batches]


def image_prompt(folder: Path, config) -> tuple[dict | None, str | None]:
    """(inputs, problem): for a vision checkpoint, one image question built by the folder's own AutoProcessor.

    Serving engines load the processor next to the weights, so a vision export without working processor files is a
    problem. Text-only checkpoints get (None, None).
    """
    if getattr(config, "vision_config", None) is None:
        return None, None
    from PIL import Image, ImageDraw
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(folder)
    except (OSError, ValueError, ImportError) as exc:
        return None, f"the vision checkpoint's processor does not load: {exc}"
    if getattr(processor, "image_processor", None) is None:
        return None, ("AutoProcessor gives only a tokenizer: processor files (processor_config.json or "
                      "preprocessor_config.json) are missing, or torchvision is not installed")
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).rectangle((8, 8, 40, 40), fill=(220, 30, 30))
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[image], return_tensors="pt", return_mm_token_type_ids=True)
    return {k: v for k, v in inputs.items() if k != "attention_mask"}, None


def reference_model(run: RunDir, base_path: Path):
    """The trained model as training left it: base + peft adapter, or the full fine-tuned weights (fp32)."""
    import torch

    from qwen35_tune.models.load import load_config, model_class

    weights = run.weights
    if run.run.method == "qlora":  # what QLoRA trained: the 4-bit base (run's settings) + adapter
        from qwen35_tune.export.qlora import quantized_reference

        return quantized_reference(run, base_path)
    cls = model_class(load_config(str(base_path)))
    if run.run.method == "full":
        return cls.from_pretrained(weights, dtype=torch.float32).eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(cls.from_pretrained(base_path, dtype=torch.float32), weights).eval()


def _prompt_batches(out: Path) -> tuple:
    """(config, tokenizer, batches, problems): chat prompts, plus an image prompt for vision checkpoints."""
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
               ["input_ids"] for p in PROMPTS]
    image, image_problem = image_prompt(out, config)
    batches = prompts + ([image] if image is not None else [])  # vision exports: also compared on an image prompt
    return config, tokenizer, batches, [image_problem] if image_problem else []


def _load_export(out: Path, config) -> tuple:
    """The folder loaded in fp32 through the Auto class a user would pick; (model, report, problems)."""
    import torch

    cls = auto_class_for(config)
    model = cls.from_pretrained(out, dtype=torch.float32).eval()
    report = {"auto_class": cls.__name__, "loaded_class": type(model).__name__}
    problems = []
    if config.architectures and type(model).__name__ not in config.architectures:
        problems.append(f"{cls.__name__} loaded {type(model).__name__}, not {config.architectures}")
    return model, report, problems


def _generate(model, tokenizer, prompt) -> tuple[str, list]:
    import torch

    with torch.no_grad():
        generated = model.generate(prompt, max_new_tokens=8, do_sample=False)
    new = generated[0, prompt.shape[1]:]
    return tokenizer.decode(new), ([] if new.numel() else ["greedy generation produced no tokens"])


def _max_diff(a: list, b: list) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def check_behaviour(out: Path, base_path: Path) -> tuple[dict, list]:
    """Without the run: the folder reloads through its Auto class and generates."""
    config, tokenizer, batches, problems = _prompt_batches(out)
    model, report, more = _load_export(out, config)
    report["image_prompt"] = len(batches) > len(PROMPTS)
    report["generation"], last = _generate(model, tokenizer, batches[0])
    return report, problems + more + last


def check_against_run(out: Path, run: RunDir, base_path: Path, manifest: dict, atol: float | None) -> tuple:
    """(counts, report, problems): every tensor against the independently computed merge, and the logits in fp32.

    The logits must equal those of the correctly rounded merge (built from the trained model, never from the folder)
    to ``atol``; their distance to the trained model itself is the rounding to the stored dtype, reported. QLoRA keeps
    the 4-bit model as its reference: enforced only where it is exact (see ``_exact_reference``).
    """
    from qwen35_tune.export.expected import adapter_targets, compare_to_targets, full_targets

    method = manifest.get("method") or run.run.method
    config, tokenizer, batches, problems = _prompt_batches(out)
    reference = reference_model(run, base_path)
    trained = _logits(reference, batches)
    if method == "full":
        targets = full_targets(reference)
    else:
        targets = adapter_targets(reference, manifest.get("qlora_merge_base", "dequantized") == "dequantized")
    model, report, more = _load_export(out, config)
    merged = _logits(model, batches)
    counts, tensor_problems, dtypes = compare_to_targets(out, base_path, targets, model)
    report.update(image_prompt=len(batches) > len(PROMPTS), max_abs_logit_diff=_max_diff(merged, trained), atol=atol)
    problems += more + tensor_problems
    if method == "qlora":
        exact = _exact_reference(manifest, run) and set(open_checkpoint(out).dtypes().values()) <= {"F32"}
        report["atol"] = atol if exact else None
        if exact and atol is not None and not report["max_abs_logit_diff"] <= atol:
            problems.append(f"logits differ from the trained model's by {report['max_abs_logit_diff']:.2e} "
                            f"(allowed {atol:.0e})")
    else:
        problems += _check_rounded_logits(reference, method, targets, dtypes, batches, trained, merged, report, atol)
    report["generation"], last = _generate(model, tokenizer, batches[0])
    return counts, report, problems + last


def _check_rounded_logits(reference, method: str, targets: dict, dtypes: dict, batches, trained, merged, report,
                          atol: float | None) -> list[str]:
    """Build the expected merge on the trained model (exact, then rounded to the stored dtypes) and compare logits."""
    import torch

    model = reference if method == "full" else reference.unload()  # peft: drop the adapter, keep the base weights
    params = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, target in targets.items():
            if name in params and target.kind == "value":  # (QLoRA has no dense model to hold them: skipped)
                params[name].data.copy_(target.compute())
        exact = _logits(model, batches)
        for name, dtype in dtypes.items():
            if name in params:
                params[name].data.copy_(params[name].data.to(dtype).float())
    rounded = _logits(model, batches)
    report.update(expected_vs_trained_logit_diff=_max_diff(exact, trained), rounding_logit_diff=_max_diff(
        rounded, trained), merged_vs_expected_logit_diff=_max_diff(merged, rounded))
    if atol is None:
        return []
    problems = []
    if not report["expected_vs_trained_logit_diff"] <= atol:
        problems.append(f"the merge computed from the trained model does not reproduce it (logits differ by "
                        f"{report['expected_vs_trained_logit_diff']:.2e}): the adapter cannot be verified")
    if not report["merged_vs_expected_logit_diff"] <= atol:
        problems.append(f"logits differ from the correctly rounded merge's by "
                        f"{report['merged_vs_expected_logit_diff']:.2e} (allowed {atol:.0e}; from the trained model's "
                        f"by {report['max_abs_logit_diff']:.2e}, of which rounding to the stored dtype explains "
                        f"{report['rounding_logit_diff']:.2e})")
    return problems


def _exact_reference(manifest: dict, run: RunDir) -> bool:
    """QLoRA merges match the 4-bit model only into the dequantised base with fp32 compute (else: report the diff)."""
    if manifest.get("method") != "qlora":
        return True
    compute = run.view.quantization.bnb_4bit_compute_dtype
    return manifest.get("qlora_merge_base") == "dequantized" and compute == "float32"


def verify_export(out: Path, base_path: Path, run_dir: RunDir | Path | None = None,
                  atol: float | None = 1e-4) -> dict:
    """Run every check on ``out``; raise UserError naming all problems, else return the report."""
    out, base_path = Path(out), Path(base_path)
    manifest = read_manifest(out)
    if run_dir is None:
        touched = set(manifest["touched"]) if "touched" in manifest else None
        counts, problems = check_tensors(out, base_path, touched, expect_changed=manifest.get("method") != "full")
        behaviour, more = check_behaviour(out, base_path)
    else:
        problems = check_structure(out, base_path)
        counts, behaviour, more = check_against_run(out, RunDir.of(run_dir), base_path, manifest, atol)
    dtypes = set(open_checkpoint(out).dtypes().values())
    report = {**counts, **behaviour, "dtypes": sorted(dtypes), "problems": problems + more}
    if report["problems"]:
        raise UserError(f"verification of {out} failed:\n  - " + "\n  - ".join(report["problems"]))
    log.info("verified %s: %d tensors (%d changed, %d identical), max |logit diff| %s", out, counts["tensors"],
             counts["changed"], counts["identical"], behaviour.get("max_abs_logit_diff", "n/a"))
    return report
