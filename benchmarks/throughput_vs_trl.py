"""Real-token training throughput: qwen35-tune packing vs TRL SFTTrainer defaults (padded batches), same data.

    QWEN35_TUNE_CACHE=/tmp/q35 python benchmarks/throughput_vs_trl.py [--rows 96] [--kind dense]

Tiny random Qwen3.5 (3 Gated DeltaNet + 1 gated attention layer), fp32, CPU unless CUDA is present. Both runs
use TRL's SFTTrainer over the same tokenised rows (long-tailed lengths, 85% short and 15% ~8x longer) for one
epoch with the same batch of 8 rows' worth of tokens: TRL's default padding collator, against our packed rows
(``pack_rows`` to 8 mean rows, or the longest row if longer) with the boundary-aware collator and the per-sample
GDN fallback. Real tokens = tokens of the rows trained on (padding excluded). Prints tokens/s and the ratio.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time

import torch
from datasets import Dataset


def _rows(n: int, vocab: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    lengths = [max(16, min(1024, int(rng.lognormvariate(0, 0.5) * (64 if rng.random() < 0.85 else 512))))
               for _ in range(n)]  # fmt: skip
    ids = [[rng.randrange(vocab) for _ in range(n)] for n in lengths]
    return Dataset.from_dict({"input_ids": ids, "labels": [[-100] * 4 + row[4:] for row in ids]})


def _train(model_path: str, ds: Dataset, collator, batch_size: int) -> float:
    from trl import SFTConfig, SFTTrainer

    from qwen35_tune.models.load import load_model

    model = load_model(model_path, "float32")
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=1,
                         learning_rate=1e-4, logging_steps=1000, save_strategy="no", report_to="none",
                         disable_tqdm=True, dataset_kwargs={"skip_prepare_dataset": True},
                         remove_unused_columns=False, use_cpu=not torch.cuda.is_available(), seed=0)  # fmt: skip
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, data_collator=collator)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--kind", default="dense", choices=["dense", "moe"])
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from qwen35_tune import patches
    from qwen35_tune.data.packing import pack_rows, packing_stats
    from qwen35_tune.models.tiny import resolve_tiny
    from qwen35_tune.train.collator import build_collator

    path = str(resolve_tiny(f"tiny://{args.kind}"))
    from transformers import AutoConfig

    ds = _rows(args.rows, AutoConfig.from_pretrained(path).get_text_config().vocab_size, seed=0)
    tokens = sum(len(r) for r in ds["input_ids"])
    batch = 8
    target = max(max(len(r) for r in ds["input_ids"]), batch * tokens // len(ds))
    trl_seconds = _train(path, ds, None, batch)  # None = TRL's default collator: pad to the batch's longest row

    patches.apply_gdn_packed_segments()
    packed = pack_rows(ds, target, seed=0)
    ours_seconds = _train(path, packed, build_collator(0, packed=True), 1)
    print(f"model tiny://{args.kind}  rows {len(ds)}  real tokens {tokens}  device "
          f"{'cuda' if torch.cuda.is_available() else f'cpu x{torch.get_num_threads()} threads'}")
    print(f"TRL SFTTrainer default (padding, batch {batch}): {tokens / trl_seconds:8.1f} real tokens/s "
          f"({trl_seconds:.1f} s)")
    print(f"qwen35-tune packed (rows of <= {target}, eff. {packing_stats(packed, target).efficiency:.3f}): "
          f"{tokens / ours_seconds:8.1f} real tokens/s ({ours_seconds:.1f} s)")
    print(f"speed-up {trl_seconds / ours_seconds:.2f}x (goal >= 2.5x)")


if __name__ == "__main__":
    main()
