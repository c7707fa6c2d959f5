"""What a trainer needs to train from a stream (``data.streaming``) and resume it exactly.

``StreamedData`` is a trainer mixin (mixed into ``train.trainer.QwenTrainerMixin``; inert without a stream):

- the stream reads its own share of the documents on each data-parallel rank, so its data loader is prepared for
  device placement only: accelerate would otherwise dispatch batches from rank 0 or slice the stream again;
- each batch carries the number of its last row (``StreamCollator``); ``training_step`` reports it to the stream
  (``commit``), so the stream knows what was trained, however far its loader has read ahead;
- ``_save_checkpoint`` writes each rank's committed stream state into the checkpoint folder while it is still being
  staged (``train.resume.AtomicCheckpoints`` renames it into place afterwards), and the per-card counts, summed over
  ranks, into data_stats.json; ``train`` restores the state from the checkpoint it resumes from and tells the
  Trainer not to skip batches (the stream continues at the saved document and token itself).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from qwen35_tune import strict_json
from qwen35_tune.errors import UserError

log = logging.getLogger(__name__)
STEP_KEY = "stream_step"


def is_stream(dataset) -> bool:
    """Whether ``dataset`` is the training stream of a recipe with streaming cards (``data.streaming``)."""
    from qwen35_tune.data.streaming import StreamingTrainData

    return isinstance(dataset, StreamingTrainData)


class StreamCollator:
    """The run's collator over stream rows; the last row's number rides along as the batch's ``stream_step``.
    The trainer collates eval rows with it too: those are not from the stream and carry no number."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, rows: list[dict]) -> dict:
        steps = [row[STEP_KEY] for row in rows if STEP_KEY in row]
        batch = self.inner([{k: v for k, v in row.items() if k != STEP_KEY} for row in rows])
        if steps:
            batch[STEP_KEY] = max(steps)
        return batch


def state_files(folder: Path, rank: int, world: int) -> tuple[Path, Path]:
    """(JSON state, filter bits) of one rank in a checkpoint folder."""
    stem = folder / f"stream_state-rank{rank}-of-{world}"
    return stem.with_suffix(".json"), stem.with_suffix(".npz")


def save_stream_state(stream, folder: Path, rank: int, world: int) -> None:
    """This rank's committed stream state into ``folder``."""
    saved = stream.state_dict()
    meta_path, bits_path = state_files(folder, rank, world)
    filters = {name: {k: v for k, v in f.items() if k != "array"} for name, f in saved["filters"].items()}
    meta_path.write_text(json.dumps({"state": saved["state"], "filters": filters}))
    if saved["filters"]:
        arrays = {f"filter_{i}": f["array"] for i, f in enumerate(saved["filters"].values())}
        np.savez_compressed(bits_path, **arrays)


def load_stream_state(stream, folder: Path, rank: int, world: int) -> None:
    """Restore this rank's stream state from a checkpoint folder (UserError when it is missing or does not fit)."""
    meta_path, bits_path = state_files(folder, rank, world)
    if not meta_path.exists():
        others = sorted(p.name for p in folder.glob("stream_state-rank*.json"))
        hint = f" (it holds {', '.join(others)}: resume with the same process count)" if others else ""
        raise UserError(f"{folder}: no data-stream position for rank {rank} of {world}{hint}; a streaming run resumes "
                        "only from its own checkpoints")
    saved = json.loads(meta_path.read_text())
    if saved["filters"]:
        with np.load(bits_path) as arrays:
            for i, name in enumerate(saved["filters"]):
                saved["filters"][name]["array"] = arrays[f"filter_{i}"]
    try:
        stream.load_state_dict(saved)
    except ValueError as exc:
        raise UserError(f"{folder}: cannot continue this run's data stream from it: {exc}") from None
    log.info("data stream: continuing after row %d (per card: %s)", saved["state"]["step"],
             ", ".join(f"{s['name']} at pass {s.get('epoch', 0) + 1}" for s in saved["state"]["sources"]))


def summed_stats(stats: list[dict]) -> dict:
    """Per-card stream counts of every rank added up (each rank counts only the documents it owns)."""
    out: dict = {"rows": sum(s["rows"] for s in stats), "ranks": len(stats), "sources": []}
    for parts in zip(*(s["sources"] for s in stats), strict=True):
        entry: dict = {"name": parts[0]["name"], "streaming": parts[0]["streaming"]}
        for part in parts:
            for key, value in part.items():
                if key in ("name", "streaming"):
                    continue
                if key == "epochs":
                    entry[key] = max(entry.get(key, 0), value)
                elif isinstance(value, dict):
                    bucket = entry.setdefault(key, {})
                    for reason, n in value.items():
                        bucket[reason] = bucket.get(reason, 0) + n
                else:
                    entry[key] = entry.get(key, 0) + value
        out["sources"].append(entry)
    return out


class StreamedData:
    """Trainer mixin: see the module docstring. ``run_dir`` is set by ``QwenTrainerMixin``."""

    run_dir: Path | None = None

    def __init__(self, *args, train_dataset=None, **kwargs):
        stream = train_dataset if is_stream(train_dataset) else None
        if stream is not None:
            # TRL's SFTTrainer takes only datasets' Dataset / IterableDataset and reads a row of it at init; the
            # stream is installed once the trainer is built (only our data loader below ever iterates it).
            from datasets import Dataset

            train_dataset = Dataset.from_dict({"input_ids": [[0]], "labels": [[0]]})
        super().__init__(*args, train_dataset=train_dataset, **kwargs)
        if stream is not None:
            self.train_dataset = stream

    def _stream(self):
        return self.train_dataset if is_stream(self.train_dataset) else None

    def get_train_dataloader(self):
        stream = self._stream()
        if stream is None:
            return super().get_train_dataloader()
        from accelerate.data_loader import prepare_data_loader
        from torch.utils.data import DataLoader

        loader = DataLoader(stream, batch_size=self._train_batch_size, collate_fn=self.data_collator, num_workers=0,
                            pin_memory=self.args.dataloader_pin_memory)  # fmt: skip
        return prepare_data_loader(loader, device=self.args.device, num_processes=1, process_index=0,
                                   split_batches=False, put_on_device=True, dispatch_batches=False)  # fmt: skip

    def training_step(self, model, inputs, num_items_in_batch=None):
        # a stream's batches are dicts; GRPO's are lists of prompt rows (never streamed: nothing to commit)
        step = inputs.pop(STEP_KEY, None) if isinstance(inputs, dict) else None
        if step is not None and self._stream() is not None:
            self._stream().commit(int(step))
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial):  # private hook: qwen35_tune.patches.TRAINER_PRIVATE_HOOKS
        super()._save_checkpoint(model, trial)
        stream = self._stream()
        if stream is None:
            return
        folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
        save_stream_state(stream, folder, self.args.process_index, self.args.world_size)
        self._write_stream_stats(stream)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        stream = self._stream()
        if stream is not None:
            self.args.ignore_data_skip = True  # the stream restores its own position; skipping rows would lose them
            if resume_from_checkpoint is True:
                from transformers.trainer_utils import get_last_checkpoint

                resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint:
                load_stream_state(stream, Path(resume_from_checkpoint), self.args.process_index, self.args.world_size)
            else:
                stream.quarantine.restore(0)  # a fresh start: a killed earlier attempt's lines go
        result = super().train(resume_from_checkpoint, *args, **kwargs)
        if stream is not None:
            self._write_stream_stats(stream)
        return result

    def _write_stream_stats(self, stream) -> None:
        """The per-card counts of what was trained so far, summed over ranks, into data_stats.json (rank 0)."""
        import torch.distributed as dist

        stats = [stream.stats()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, stats[0])
            stats = gathered
        if not self.is_world_process_zero() or self.run_dir is None:
            return
        path = self.run_dir / "data_stats.json"
        data_stats = json.loads(path.read_text()) if path.exists() else {}
        data_stats["stream"] = summed_stats(stats)
        path.write_text(strict_json.dumps(data_stats, indent=2))
