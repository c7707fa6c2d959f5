"""Pack multimodal rows into rows of at most a target length, keeping each sample's media with it.

The bins come from the same best-fit-decreasing packer as text rows (``data.packing.pack_rows``, i.e. TRL's
``pack_dataset(strategy="bfd")``), run on the token ids plus a token-aligned row-index column so we learn which rows
share a bin. Media (references, or pixel arrays where a dataset stores them) are not token-aligned, so TRL cannot carry
them; we concatenate each bin's media ourselves and record per sample how many images and videos it has
(``image_counts`` / ``video_counts``) next to ``seq_lengths``. ``train.vision_collator.VisionCollator`` splits a
packed row back into its samples to compute each one's M-RoPE indices.
"""

from __future__ import annotations

from qwen35_tune.data.packing import pack_rows

GRID_COUNTS = (("image_grid_thw", "image_counts"), ("video_grid_thw", "video_counts"))
CARRIED = ("image_refs", "video_refs", "pixel_values", "pixel_values_videos")  # whichever the dataset has


def pack_media_rows(dataset, target_length: int, seed: int):
    """Packed dataset: per row the concatenated ids/labels/types/media, ``seq_lengths`` and per-sample media counts."""
    from datasets import Dataset

    indexed = dataset.add_column("row_index", [[i] * len(ids) for i, ids in enumerate(dataset["input_ids"])])
    bins = pack_rows(indexed, target_length, seed, extra_columns=("row_index",))
    carried = [key for key in CARRIED if key in dataset.column_names]
    columns: dict[str, list] = {key: [] for key in ("input_ids", "labels", "mm_token_type_ids", "seq_lengths")}
    for grid, counts in GRID_COUNTS:
        columns.update({grid: [], counts: []})
    columns.update({key: [] for key in carried})
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
        for grid, counts in GRID_COUNTS:
            columns[grid].append([g for r in rows for g in r.get(grid) or []])  # text-only datasets lack them
            columns[counts].append([len(r.get(grid) or []) for r in rows])
        for key in carried:
            columns[key].append([item for r in rows for item in r.get(key) or []])
    return Dataset.from_dict(columns, features=_features(carried))


def _features(carried: list[str]):
    from datasets import Features, Sequence, Value

    ints = Sequence(Value("int64"))
    kinds = {"image_refs": Sequence(Value("string")), "video_refs": Sequence(Value("string")),
             "pixel_values": Sequence(Sequence(Value("float32"))),
             "pixel_values_videos": Sequence(Sequence(Value("float32")))}  # fmt: skip
    return Features({"input_ids": ints, "labels": ints, "mm_token_type_ids": ints, "seq_lengths": ints,
                     "image_grid_thw": Sequence(ints), "image_counts": ints, "video_grid_thw": Sequence(ints),
                     "video_counts": ints, **{key: kinds[key] for key in carried}})  # fmt: skip
