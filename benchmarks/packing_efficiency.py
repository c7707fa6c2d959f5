"""Packing efficiency (real tokens / token slots) on a long-tailed, CoT-like length distribution.

    python benchmarks/packing_efficiency.py [--rows 20000] [--target 8192]

Lengths: 85% short answers (lognormal around ~300 tokens), 15% reasoning traces ~8x longer, all capped at the
target. Prints the packed figures next to what padding to the longest row of each batch of 8 would use.
"""

from __future__ import annotations

import argparse
import random
import time

from datasets import Dataset

from qwen35_tune.data.packing import pack_rows, packing_stats


def long_tailed_lengths(n: int, cap: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        mu = 300 if rng.random() < 0.85 else 2400
        out.append(max(8, min(cap, int(rng.lognormvariate(0, 0.6) * mu))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--target", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lengths = long_tailed_lengths(args.rows, args.target, args.seed)
    ds = Dataset.from_dict({"input_ids": [[1] * n for n in lengths], "labels": [[1] * n for n in lengths]})
    started = time.perf_counter()
    packed = pack_rows(ds, args.target, args.seed)
    seconds = time.perf_counter() - started
    stats = packing_stats(packed, args.target)
    rng = random.Random(args.seed)
    order = lengths[:]
    rng.shuffle(order)
    padded_slots = sum(max(order[i : i + 8]) * len(order[i : i + 8]) for i in range(0, len(order), 8))
    print(f"rows {args.rows}  tokens {sum(lengths)}  mean {sum(lengths) / len(lengths):.0f}  "
          f"p50 {sorted(lengths)[len(lengths) // 2]}  max {max(lengths)}  target {args.target}")
    print(f"packed rows {stats.packed_rows}  packing efficiency {stats.efficiency:.4f}  ({seconds:.2f} s to pack)")
    print(f"padding (batches of 8, random order) efficiency {sum(lengths) / padded_slots:.4f}")


if __name__ == "__main__":
    main()
