"""Pack multimodal rows into rows of at most a target length, keeping each sample's media with it.

The bins come from the same best-fit-decreasing packer as text rows (``data.packing.pack_rows``, i.e. TRL's
``pack_dataset(strategy="bfd")``), run on the token ids plus a token-aligned row-index column so we learn which rows
share a bin. Pixel arrays are not token-aligned, so TRL cannot carry them; we concatenate each bin's media ourselves
and record per sample how many images and videos it has (``image_counts`` / ``video_counts``) next to
``seq_lengths``. ``train.vision_collator.VisionCollator`` splits a packed row back into its samples to compute each
one's M-RoPE indices.
"""

from __future__ import annotations

from qwen35_tune.data.packing import pack_rows

MEDIA_PAIRS = (("pixel_values", "image_grid_thw", "image_counts"),
               ("pixel_values_videos", "video_grid_thw", "video_counts"))  # fmt: skip


def pack_media_rows(dataset, target_length: int, seed: int):
    """Packed dataset: per row the concatenated ids/labels/types/media, ``seq_lengths`` and per-sample media counts."""
    from datasets import Dataset

    indexed = dataset.add_column("row_index", [[i] * len(ids) for i, ids in enumerate(dataset["input_ids"])])
    bins = pack_rows(indexed, target_length, seed, extra_columns=("row_index",))
    columns: dict[str, list] = {key: [] for key in ("input_ids", "labels", "mm_token_type_ids", "seq_lengths")}
    for pixels, grid, counts in MEDIA_PAIRS:
        columns.update({pixels: [], grid: [], counts: []})
    for packed in bins:
        members = list(dict.fromkeys(packed["row_index"]))  # row order within the bin, each once
        rows = [dataset[i] for i in members]
        assert [len(r["input_ids"]) for r in rows] == packed["seq_lengths"], "packer reordered samples in a bin"
        columns["input_ids"].append([t for r in rows for t in r["input_ids"]])
        columns["labels"].append([t for r in rows for t in r["labels"]])
        columns["mm_token_type_ids"].append(
            [t for r in rows for t in (r.get("mm_token_type_ids") or [0] * len(r["input_ids"]))]
        )
        columns["seq_lengths"].append(packed["seq_lengths"])
        for pixels, grid, counts in MEDIA_PAIRS:
            columns[pixels].append([p for r in rows for p in r.get(pixels) or []])  # text-only datasets lack them
            columns[grid].append([g for r in rows for g in r.get(grid) or []])
            columns[counts].append([len(r.get(grid) or []) for r in rows])
    return Dataset.from_dict(columns, features=_features())


def _features():
    from datasets import Features, Sequence, Value

    ints, floats = Sequence(Value("int64")), Sequence(Sequence(Value("float32")))
    return Features({"input_ids": ints, "labels": ints, "mm_token_type_ids": ints, "seq_lengths": ints,
                     "pixel_values": floats, "image_grid_thw": Sequence(ints), "image_counts": ints,
                     "pixel_values_videos": floats, "video_grid_thw": Sequence(ints),
                     "video_counts": ints})  # fmt: skip
