"""Recipe checks for the vision options that need no model: per-part learning rates, and audio on Qwen3.5.

Qwen3.5 checkpoints have a vision tower but no audio encoder, so a card with an ``audios`` column would train on
text with the audio silently dropped; that is refused at validate time, naming the card. A local checkpoint whose
config does declare an audio encoder (``audio_config``) is let through: its processor routes the audio.
Imports nothing heavy (validate must not import torch).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from qwen35_tune.cards.peek import first_row_keys
from qwen35_tune.recipe.bounds import MAX_LEARNING_RATE
from qwen35_tune.registry import ALL_PRESETS, PRESET_ALIASES
from qwen35_tune.yaml_lines import StrictModel

# Which recipe.train.learning_rates part is reached by which LoRA target preset.
LR_PRESETS = {"vision": ("vision",), "projector": ("projector",),
              "language_model": ("attention", "linear_attention", "mlp", "language", "all")}  # fmt: skip
AUDIO_COLUMN = "audios"
PART_NAMES = {"vision": "vision tower", "projector": "projector (merger)", "language_model": "language model"}


class PartLearningRates(StrictModel):
    """``train.learning_rates``: peak learning rates of model parts that should not use ``train.learning_rate``."""

    vision: float | None = Field(
        None, gt=0, le=MAX_LEARNING_RATE, description="Vision tower (patch embedding and blocks)."
    )
    projector: float | None = Field(
        None, gt=0, le=MAX_LEARNING_RATE, description="Vision-language projector (merger)."
    )
    language_model: float | None = Field(
        None, gt=0, le=MAX_LEARNING_RATE, description="Everything else (the language model)."
    )

    def given(self) -> dict[str, float]:
        """Part -> rate for the parts that have one."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


def audio_encoder_in_config(config: dict) -> bool:
    """True when a model config (config.json as a dict) declares an audio encoder its processor can feed."""
    return any(key in config for key in ("audio_config", "audio_encoder_config", "audio_token_id"))


def local_model_config(name_or_path: str) -> dict | None:
    """config.json of a local checkpoint folder, None for tiny:// models and Hub ids (those are Qwen3.5 here)."""
    path = Path(name_or_path).expanduser() / "config.json"
    if name_or_path.startswith("tiny://") or not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # the model loader reports an unreadable config with its own message


def _first_row_keys(file: str) -> set[str]:
    """Column names of a local data file, read from its first row / header only (cheap at validate time)."""
    return first_row_keys(file)  # never raises: a bad first line or file is the data reader's business (quarantine)


def card_has_audio(card) -> bool:
    """True when a card maps an ``audios`` column or its local files carry one."""
    if AUDIO_COLUMN in card.columns:
        return True
    return any(AUDIO_COLUMN in _first_row_keys(str(f)) for f in card.source_files())


def _audio_problem(recipe) -> tuple[str, str] | None:
    config = local_model_config(recipe.model.name_or_path)
    if config is not None and audio_encoder_in_config(config):
        return None  # e.g. an omni model: the processor routes audio to its encoder
    for which, refs in (("cards", recipe.data.cards), ("eval_cards", recipe.data.eval_cards)):
        for i, ref in enumerate(refs):
            card = recipe._cards.get(ref.path)  # only cards load_recipe validated (no re-reading here)
            if card is not None and card_has_audio(card):
                return (f"data.{which}.{i}.path", f"card '{card.name}' has an '{AUDIO_COLUMN}' column, but "
                        f"{recipe.model.name_or_path} is a Qwen3.5 model: it has a vision tower and no audio encoder, "
                        "so the audio would be dropped. Remove the column (or the card), or use a model with an "
                        "audio encoder")
    return None


def _lr_problem(recipe) -> tuple[str, str] | None:
    rates, method = recipe.train.learning_rates.given(), recipe.method
    for part in rates:
        key = f"train.learning_rates.{part}"
        if method.kind == "full":
            if method.freeze is not None and (part in method.freeze or (
                    part == "language_model" and "language_model" in method.freeze)):
                return key, f"method.freeze freezes '{part}', so it has nothing to train at this rate; remove one"
            continue
        targets = method.lora.target_modules
        names = [targets] if isinstance(targets, str) else list(targets)
        names = [PRESET_ALIASES.get(n, n) for n in names]
        if isinstance(targets, str) and names[0] not in ALL_PRESETS:
            continue  # a regex: only the loaded model can tell what it reaches (checked when the optimizer is built)
        if not set(names) & set(LR_PRESETS[part]) and not (part == "language_model" and set(names) - set(ALL_PRESETS)):
            return key, (f"LoRA trains only method.lora.target_modules ({', '.join(names)}), none of which is in the "
                         f"{PART_NAMES[part]}; add '{LR_PRESETS[part][0]}' to target_modules or remove this rate")
    return None


def recipe_vision_problem(recipe) -> tuple[str, str] | None:
    """(dotted key, message) of the first vision-option problem in a recipe, or None."""
    return _lr_problem(recipe) or _audio_problem(recipe)
