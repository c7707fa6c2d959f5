"""Model card (README.md) for an exported folder, through huggingface_hub's ModelCard / ModelCardData.

Metadata comes from the run: base model and its license, data cards (hub datasets, licenses, languages), the resolved
recipe and training summary. ``check_card`` validates the metadata locally (the Hub's own validator needs network).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.eval.model_index import eval_results
from qwen35_tune.export.card_stage import reward_section
from qwen35_tune.rundir import RunDir, RunRecord

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]+)?$")
RELATIONS = ("adapter", "merge", "quantized", "finetune")
PIPELINES = ("text-generation", "image-text-to-text")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _base_license(base_path: Path) -> str | None:
    from huggingface_hub import ModelCard

    readme = base_path / "README.md"
    return ModelCard.load(readme).data.license if readme.exists() else None


def _pipeline(folder: Path | None) -> str:
    """The hub pipeline tag of the weights in ``folder`` (an adapter's: its base's)."""
    from qwen35_tune.export.usage import is_vision_folder

    return "image-text-to-text" if is_vision_folder(folder) else "text-generation"


def _adapter_base(out: Path, run: RunRecord) -> str:
    """The base an adapter goes on, as its card names it: the hub id trained from, else the one peft recorded (an
    adapter trained on an earlier stage's weights goes on those, not on the hub model: ``model.init_from``)."""
    if run.init_kind == "weights":
        return run.base_path
    if REPO_ID.match(run.base_model):
        return run.base_model
    return _json(out / "adapter_config.json").get("base_model_name_or_path") or run.base_model


def _usage(out: Path, run: RunRecord, adapter: bool, base_path: Path | None) -> str:
    from qwen35_tune.export.usage import usage_snippet

    if adapter:
        return usage_snippet(out, adapter_base=_adapter_base(out, run), base_folder=base_path)
    return usage_snippet(out)


_STARTS = {"adapter": "its adapter, trained further", "weights": "its weights as the base"}


def _stages(run: RunRecord, run_dir: RunDir, recipe) -> str:
    """The chain of training stages that made the weights (folder names only: no local paths in a published card),
    and this run's own stage settings (DPO's beta, loss type, ...)."""
    rows = []
    for number, stage in enumerate(run.chain(run_dir.path), start=1):
        start = _STARTS.get(stage.init or "", "") if number > 1 else f"`{run.base_model}`"
        rows.append(f"| {number} | {stage.stage or 'external'} | {stage.method or ''} | {Path(stage.path).name} | "
                    f"{start} |")
    text = "| # | stage | method | run | started from |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    section = getattr(recipe, run.stage, None) if recipe is not None and run.stage != "sft" else None
    if section is not None:
        settings = ", ".join(f"{key} {value}" for key, value in section.model_dump().items()
                             if value is not None and value is not False)
        text += f"\n{run.stage.upper()} settings (TRL names): {settings}\n"
    return text


def build_card(out: Path, run_dir: RunDir, adapter: bool = False, base_path: Path | None = None):
    """A ModelCard for ``out`` (merged or full model, or ``adapter=True`` for a peft adapter folder).

    Data card details need the whole recipe to load here (its cards on this machine); the rest does not."""
    from huggingface_hub import ModelCard, ModelCardData

    run, view = run_dir.run, run_dir.view
    summary, stats = run_dir.summary(), run_dir.data_stats()
    cards = [card for _, card in view.recipe.card_pairs()] if view.recipe else []
    license_ = view.export.license or (_base_license(base_path) if base_path else None) or "other"
    on_other_weights = adapter and run.init_kind == "weights"  # the adapter goes on an earlier stage's weights
    base_model = run.base_model if REPO_ID.match(run.base_model) and not on_other_weights else None
    pipeline = _pipeline(base_path if adapter else out)
    data = ModelCardData(
        base_model=base_model,
        base_model_relation=("adapter" if adapter else "finetune") if base_model else None,
        license=license_,
        datasets=sorted({c.source.hub for c in cards if getattr(c.source, "hub", None)}) or None,
        language=sorted({lang for c in cards for lang in c.languages}) or None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag=pipeline,
        tags=sorted({"qwen3.5", "qwen35-tune", run.method, *(c.domain for c in cards if c.domain),
                     *(s.stage for s in run.chain(run_dir.path) if s.stage)}),
        eval_results=eval_results(run_dir) or None,  # model-index from <run_dir>/eval/<suite>.json (qwen35-tune eval)
        model_name=(summary.get("name") or run_dir.path.name) if run_dir.eval.is_dir() else None,
    )
    rows = "\n".join(f"| {c.name} | {c.license} | {c.domain or ''} | {', '.join(c.languages)} |" for c in cards)
    counts = {c["name"]: c.get("train", c.get("rows")) for c in stats.get("cards", [])}
    rows = rows or "\n".join(f"| {name} | | | |" for name in counts)
    facts = [("method", run.method), ("base model", run.base_model), ("steps", summary.get("steps")),
             ("training rows", summary.get("train_rows")), ("first loss", summary.get("first_loss")),
             ("final loss", summary.get("final_loss")), ("eval loss", summary.get("eval_loss")),
             ("hardware", summary.get("hardware")), ("wall time (s)", summary.get("wall_seconds"))]
    recipe_text = run_dir.recipe_text()
    name = summary.get("name") or run_dir.path.name
    body = (f"---\n{data.to_yaml()}\n---\n\n# {name}\n\n"
            f"{'A LoRA adapter for' if adapter else 'A fine-tune of'} `{run.base_model}` made with qwen35-tune "
            f"({run.method}).\n\n## Training\n\n| | |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in facts if v is not None)
            + f"\n## Stages\n\n{_stages(run, run_dir, view.recipe)}"
            + reward_section(view.recipe, summary)
            + f"\n## Data\n\n| card | license | domain | languages |\n|---|---|---|---|\n{rows}\n\n"
            f"## Usage\n\n{_usage(out, run, adapter, base_path)}\n"
            f"## Recipe\n\n<details><summary>Resolved recipe</summary>\n\n```yaml\n{recipe_text}```\n\n</details>\n")
    return ModelCard(body)


def check_card(card) -> list[str]:
    """Local metadata checks mirroring the Hub's rules for the fields we set; an empty list means valid."""
    from huggingface_hub import ModelCard

    data = ModelCard(str(card)).data  # round-trip: the YAML header parses back
    problems = []
    if not data.license:
        problems.append("license is missing")
    elif data.license == "other" and not data.get("license_name"):
        log.warning("model card license is 'other'; set export.license or give the base a license")
    if data.base_model and not REPO_ID.match(str(data.base_model)):
        problems.append(f"base_model '{data.base_model}' is not a hub repo id")
    relation = data.get("base_model_relation")
    if relation and relation not in RELATIONS:
        problems.append(f"base_model_relation '{relation}' is not one of {RELATIONS}")
    if relation and not data.base_model:
        problems.append("base_model_relation without base_model")
    if data.pipeline_tag not in PIPELINES:
        problems.append(f"pipeline_tag '{data.pipeline_tag}' is not one of {PIPELINES}")
    problems += [f"language {x!r} is not a language code" for x in data.language or [] if not LANGUAGE.match(x)]
    problems += [f"dataset '{d}' is not a hub repo id" for d in data.datasets or [] if not REPO_ID.match(d)]
    return problems


def write_model_card(out: Path, run_dir: RunDir | Path, adapter: bool = False, base_path: Path | None = None):
    """Build, check and save ``out/README.md``."""
    card = build_card(Path(out), RunDir.of(run_dir), adapter, base_path)
    problems = check_card(card)
    if problems:
        raise UserError("model card metadata is invalid: " + "; ".join(problems))
    card.save(Path(out) / "README.md")
    return card
