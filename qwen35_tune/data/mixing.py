"""Rows of several cards into one training set: a random eval holdout per card, then a mix by card weight."""

from __future__ import annotations

import random


def split_eval(rows: list, fraction: float, rng: random.Random) -> tuple[list, list]:
    """(train, eval): ``fraction`` of the rows (at least one) held out at random, eval rows in their card order."""
    if fraction <= 0:
        return rows, []
    order = list(range(len(rows)))
    rng.shuffle(order)
    n_eval = max(1, round(len(rows) * fraction))
    eval_idx = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in eval_idx], [rows[i] for i in sorted(eval_idx)]


def mix_by_weight(per_card: list[list], weights: list[float], rng: random.Random) -> list:
    """Mix cards in proportion to their weights; equal weights keep every row once (a plain concatenation).

    With unequal weights the mix keeps the total row count and gives card i ``total * w_i / sum(w)`` rows,
    sampling without replacement when it has enough and repeating rows (upsampling) when it has too few.
    """
    if len(set(weights)) <= 1:
        return [row for rows in per_card for row in rows]
    total, weight_sum = sum(len(rows) for rows in per_card), sum(weights)
    mixed: list = []
    for rows, weight in zip(per_card, weights, strict=True):
        want = round(total * weight / weight_sum)
        if not rows or want == 0:
            continue
        repeats, rest = divmod(want, len(rows))
        mixed.extend(rows * repeats + rng.sample(rows, rest))
    rng.shuffle(mixed)
    return mixed
