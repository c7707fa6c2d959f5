"""Batches of multimodal rows for Qwen3.5 vision checkpoints: padded, or packed into one flat row.

Rows carry ``input_ids``, ``labels``, ``mm_token_type_ids`` and, for rows with media, ``image_grid_thw`` /
``video_grid_thw`` plus either the pixel arrays (``pixel_values`` / ``pixel_values_videos``) or, as the training
datasets do, the media references (``image_refs`` / ``video_refs``) that ``pixel_loader``
(``data.render_media.PixelLoader``) turns into pixels here; text-only rows carry empty media lists, so one
dataset and one batch may mix both. Pixel rows are concatenated and grids stacked in row order, which is the order
the model's placeholder scatter and ``get_rope_index`` consume them in.

Packed (``packed=True``): the batch's rows (plain rows, or rows binned to ``train.packing_length`` by
``data.pack_media``, which are split back into their samples first) become one row, like TRL's padding-free collator,
with ``cu_seq_lens_q/k``, ``max_length_q/k`` and ``seq_idx`` keeping the Gated DeltaNet and conv layers per sample,
labels -100 on each sample's first token, and 4-row ``position_ids``: row 0 restarts at 0 per sample (the text
positions transformers derives the block-diagonal attention mask from), rows 1-3 are each sample's own 3-D M-RoPE
indices from the model's ``get_rope_index``, concatenated. transformers would otherwise compute M-RoPE over the
packed row as one sequence, shifting every later sample's positions; given 4-row ``position_ids`` it uses them as
they are (``Qwen3_5TextModel.forward``), so packed equals unpacked.

Text-only batches under DeepSpeed ZeRO-3 / FSDP: the vision tower's parameters are sharded and gathered by forward
hooks (collectives), so a rank whose batch has no image would skip the tower while other ranks run it, and the job
hangs. With ``dummy_image=True`` such a batch gets one 32x32 all-zero image (one merged vision token) appended where no
real token can see it: in a padded batch as masked-out tail tokens of the first row (attention_mask 0, labels -100);
in a packed batch as its own extra sample (labels -100). Every rank then runs the same parameters and the loss and
the gradients of real tokens are unchanged. It is off by default (one process, or DDP with a frozen tower, needs none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MEDIA = (("pixel_values", "image_grid_thw"), ("pixel_values_videos", "video_grid_thw"))
# One 32x32 image at patch 16, merge 2, temporal patch 2: grid (1, 2, 2) = 4 patches of 3*2*16*16 values.
DUMMY_GRID, DUMMY_PATCH_DIM = (1, 2, 2), 3 * 2 * 16 * 16


@dataclass
class VisionCollator:
    """Collate multimodal rows (see module doc). ``rope_index``: the model's ``get_rope_index`` (packed mode only;
    ``bind_model`` sets it once the model is loaded)."""

    pad_token_id: int
    packed: bool = False
    dummy_image: bool = False
    image_token_id: int | None = None
    vision_start_id: int | None = None
    vision_end_id: int | None = None
    rope_index: Callable | None = None
    pixel_loader: Callable | None = None

    def bind_model(self, model) -> None:
        """Take ``get_rope_index`` from a ``...ForConditionalGeneration`` model (or its inner model).

        Kept as the method's class plus the config, not a bound method, so dataloader workers started with
        ``spawn`` pickle a config rather than the whole model.
        """
        inner = getattr(model, "model", model)
        if not hasattr(inner, "get_rope_index"):
            raise ValueError(f"{type(model).__name__} has no get_rope_index (not a Qwen3.5 vision model)")
        self.rope_index = RopeIndex(type(inner), inner.config)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if any(r.get("seq_lengths") for r in rows) and not self.packed:
            raise ValueError("rows packed by data.pack_media need VisionCollator(packed=True)")
        rows = [sample for r in rows for sample in self._samples(self._tensors(r), r.get("seq_lengths"))]
        if self.dummy_image and not any(r["pixel_values"] is not None or r["pixel_values_videos"] is not None
                                        for r in rows):
            rows = self._with_dummy(rows)
        return self._pack(rows) if self.packed else self._pad(rows)

    def _tensors(self, row: dict) -> dict:
        import torch

        if any(row.get(key) for key in ("image_refs", "video_refs")) and not (
            row.get("pixel_values") or row.get("pixel_values_videos")
        ):
            row = {**row, **self._load_pixels(row)}

        out = {k: torch.as_tensor(row[k], dtype=torch.long) for k in ("input_ids", "labels")}
        types = row.get("mm_token_type_ids")
        out["mm_token_type_ids"] = torch.as_tensor(types if types else [0] * len(out["input_ids"]), dtype=torch.long)
        out["_pad_tail"] = 0
        for counts in ("image_counts", "video_counts"):
            out[counts] = row.get(counts)
        for pixels, grid in MEDIA:
            has = row.get(pixels) is not None and len(row[pixels]) > 0
            out[pixels] = torch.as_tensor(row[pixels], dtype=torch.float32) if has else None
            out[grid] = torch.as_tensor(row[grid], dtype=torch.long).reshape(-1, 3) if has else None
        return out

    def _load_pixels(self, row: dict) -> dict:
        """Pixels for the row's media references, checked against the grids stored when the row was rendered."""
        import numpy as np

        if self.pixel_loader is None:
            raise ValueError("rows store media references: build the collator with a pixel_loader")
        loaded = self.pixel_loader(row.get("image_refs") or [], row.get("video_refs") or [])
        for grid in ("image_grid_thw", "video_grid_thw"):
            stored = np.asarray(row.get(grid) or [], dtype=np.int64).reshape(-1, 3)
            fresh = loaded.get(grid, np.zeros((0, 3), dtype=np.int64)).reshape(-1, 3)
            if not np.array_equal(stored, fresh):
                raise ValueError(f"media changed since the data was rendered ({grid} {stored.tolist()} now "
                                 f"{fresh.tolist()}): rebuild the run's data")
        return {k: v for k, v in loaded.items() if k.startswith("pixel")}

    @staticmethod
    def _samples(row: dict, seq_lengths: list[int] | None) -> list[dict]:
        """A row packed by ``data.pack_media`` split back into its samples (ids, labels, types and media)."""
        if not seq_lengths:
            return [row]
        import torch

        samples = [{"_pad_tail": 0} for _ in seq_lengths]
        for key in ("input_ids", "labels", "mm_token_type_ids"):
            for sample, part in zip(samples, torch.split(row[key], seq_lengths), strict=True):
                sample[key] = part
        for (pixels, grid), counts in zip(MEDIA, ("image_counts", "video_counts"), strict=True):
            per_sample = row[counts] if row.get(counts) is not None else [0] * len(seq_lengths)
            grids = torch.split(row[grid], list(per_sample)) if row[grid] is not None else [None] * len(samples)
            for sample, g in zip(samples, grids, strict=True):
                sample[grid] = g if g is not None and len(g) else None
            sizes = [int(g.prod(-1).sum()) if g is not None else 0 for g in (s[grid] for s in samples)]
            parts = torch.split(row[pixels], sizes) if row[pixels] is not None else [None] * len(samples)
            for sample, part in zip(samples, parts, strict=True):
                sample[pixels] = part if part is not None and len(part) else None
        return samples

    def _dummy_row(self) -> dict:
        import torch

        ids = torch.tensor([self.vision_start_id, self.image_token_id, self.vision_end_id])
        return {"input_ids": ids, "labels": torch.full((3,), -100), "mm_token_type_ids": torch.tensor([0, 1, 0]),
                "pixel_values": torch.zeros(4, DUMMY_PATCH_DIM), "image_grid_thw": torch.tensor([DUMMY_GRID]),
                "pixel_values_videos": None, "video_grid_thw": None, "_pad_tail": 0}  # fmt: skip

    def _with_dummy(self, rows: list[dict]) -> list[dict]:
        import torch

        if None in (self.image_token_id, self.vision_start_id, self.vision_end_id):
            raise ValueError("dummy_image needs image_token_id, vision_start_id and vision_end_id")
        dummy = self._dummy_row()
        if self.packed:
            return [*rows, dummy]
        first = dict(rows[0])  # masked tail of the first row: nothing attends to it and it carries no label
        for key in ("input_ids", "labels", "mm_token_type_ids"):
            first[key] = torch.cat([first[key], dummy[key]])
        first.update(pixel_values=dummy["pixel_values"], image_grid_thw=dummy["image_grid_thw"], _pad_tail=3)
        return [first, *rows[1:]]

    @staticmethod
    def _media(rows: list[dict]) -> dict:
        import torch

        out = {}
        for pixels, grid in MEDIA:
            present = [r for r in rows if r[pixels] is not None]
            if present:
                out[pixels] = torch.cat([r[pixels] for r in present])
                out[grid] = torch.cat([r[grid] for r in present])
        return out

    def _pad(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        batch = {"input_ids": torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)}
        batch["labels"] = torch.full((len(rows), width), -100, dtype=torch.long)
        batch["attention_mask"] = torch.zeros((len(rows), width), dtype=torch.long)
        batch["mm_token_type_ids"] = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            for key in ("input_ids", "labels", "mm_token_type_ids"):
                batch[key][i, :n] = row[key]
            batch["attention_mask"][i, : n - row["_pad_tail"]] = 1
        return {**batch, **self._media(rows)}

    def _pack(self, rows: list[dict]) -> dict:
        import torch

        if self.rope_index is None:
            raise ValueError("packed VisionCollator needs the model's get_rope_index: call bind_model(model) first")
        lengths = [len(r["input_ids"]) for r in rows]
        positions = []
        for row in rows:
            ids, types = row["input_ids"][None], row["mm_token_type_ids"][None]
            if row["image_grid_thw"] is None and row["video_grid_thw"] is None:
                mrope = torch.arange(ids.shape[1]).expand(3, 1, -1)
            else:
                mrope, _ = self.rope_index(ids, types, image_grid_thw=row["image_grid_thw"],
                                           video_grid_thw=row["video_grid_thw"])  # fmt: skip
            text = torch.arange(ids.shape[1]).view(1, 1, -1)
            positions.append(torch.cat([text, mrope.to(torch.long)], dim=0))
        labels = torch.cat([torch.cat([torch.tensor([-100]), r["labels"][1:]]) for r in rows])
        cuts = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
        batch = {
            "input_ids": torch.cat([r["input_ids"] for r in rows])[None],
            "labels": labels[None],
            "mm_token_type_ids": torch.cat([r["mm_token_type_ids"] for r in rows])[None],
            "position_ids": torch.cat(positions, dim=2),
            "cu_seq_lens_q": cuts, "cu_seq_lens_k": cuts,
            "max_length_q": max(lengths), "max_length_k": max(lengths),
            "seq_idx": torch.repeat_interleave(torch.arange(len(rows), dtype=torch.int32), torch.tensor(lengths))[
                None
            ],
        }  # fmt: skip
        return {**batch, **self._media(rows)}


class RopeIndex:
    """The model class's own ``get_rope_index``, called with a stand-in ``self`` that holds only the config.

    Upstream's method reads nothing but ``self.config`` and ``self.get_vision_position_ids`` (a pure function of its
    arguments), so this computes exactly what the loaded model would, without a reference to its weights.
    """

    def __init__(self, model_class, config):
        self.model_class, self.config = model_class, config

    def get_vision_position_ids(self, *args, **kwargs):
        return self.model_class.get_vision_position_ids(self, *args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self.model_class.get_rope_index(self, *args, **kwargs)


def build_vision_collator(processor, pad_token_id: int, packed: bool, dummy_image: bool = False,
                          settings=None) -> VisionCollator:
    """A ``VisionCollator`` with the special token ids taken from the processor's tokenizer, loading pixels for media
    references with the processor (``settings``: ``model.vision``, for video frame sampling)."""
    from qwen35_tune.data.render_media import PixelLoader
    from qwen35_tune.models.processor import VisionSettings

    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
    return VisionCollator(pad_token_id, packed=packed, dummy_image=dummy_image,
                          image_token_id=processor.image_token_id, vision_start_id=ids[0], vision_end_id=ids[1],
                          pixel_loader=PixelLoader(processor, settings or VisionSettings()))
