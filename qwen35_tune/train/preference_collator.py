"""Batches of preference pairs for TRL's DPOTrainer: every chosen sequence, then every rejected one, padded, with a
``completion_mask`` over the answer tokens (the only tokens DPO scores).

Text pairs go through TRL's own ``DataCollatorForPreference``. Pairs whose prompt holds images or videos go through
the SFT ``VisionCollator`` (pixels loaded from the stored references and checked against the stored grids,
``mm_token_type_ids``, dummy image for sharded runs), each pair given as its two sequences with the answer as the
only labelled tokens; the labels then become the ``completion_mask`` (the trainer derives its own labels from it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from qwen35_tune.data.render_media import GRID_KEYS, REF_KEYS

SIDES = ("chosen_ids", "rejected_ids")  # TRL's order: the first half of a batch is chosen, the second rejected
REFERENCE_LOGPS = ("ref_chosen_logps", "ref_rejected_logps")  # added by TRL when precompute_ref_log_probs is on


def has_media_columns(dataset) -> bool:
    return dataset is not None and "prompt_mm_token_type_ids" in dataset.column_names


@dataclass
class PreferenceMediaCollator:
    """Pairs with media as the ``VisionCollator`` batches them (see module doc)."""

    vision: Any  # train.vision_collator.VisionCollator (padded)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows = []
        for side in SIDES:
            for example in examples:
                prompt, answer = list(example["prompt_ids"]), list(example[side])
                types = list(example.get("prompt_mm_token_type_ids") or [0] * len(prompt))
                row = {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer,
                       "mm_token_type_ids": types + [0] * len(answer)}  # fmt: skip
                row.update({key: example.get(key) or [] for key in (*GRID_KEYS, *REF_KEYS)})
                rows.append(row)
        batch = self.vision(rows)
        batch["completion_mask"] = (batch.pop("labels") != -100).long()
        for key in REFERENCE_LOGPS:
            if key in examples[0]:
                batch[key] = torch.tensor([example[key] for example in examples])
        return batch


def build_preference_collator(recipe, train_ds, eval_ds, tokenizer, processor, config):
    """TRL's preference collator for text pairs; ``PreferenceMediaCollator`` when any pair holds media."""
    if has_media_columns(train_ds) or has_media_columns(eval_ds):
        from qwen35_tune.train.vision_collator import build_vision_collator

        sharded = int(os.environ.get("WORLD_SIZE", "1")) > 1  # as for SFT: every rank must run the vision tower
        vision = build_vision_collator(processor, tokenizer.pad_token_id, packed=False, dummy_image=sharded,
                                       settings=recipe.model.vision)  # fmt: skip
        return PreferenceMediaCollator(vision)
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    return DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id, max_length=config.max_length,
                                     pad_to_multiple_of=config.pad_to_multiple_of)  # fmt: skip
