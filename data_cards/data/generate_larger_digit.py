"""Write the learnable verifiable task behind benchmarks/grpo_learning_signal.py: "which of two digits is larger?".

- ``larger_digit.jsonl`` (format: verifiable): every ordered pair of different digits, the larger one as the answer
  (90 rows). A correct answer is one digit, which math-verify checks like any math answer.
- ``larger_digit_warmup.jsonl`` (format: prompt_completion): the same prompts answered with one of the two digits
  picked at random (seeded). A short SFT on it teaches a random tiny model the answer's form (one digit, then the end
  of the turn) and nothing about which digit is right, so GRPO starts from about half correct and has the comparison
  itself to learn.

Run from anywhere: `python data_cards/data/generate_larger_digit.py`; output is deterministic (seeded, committed).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent


def prompt(a: int, b: int) -> str:
    return f"Which is larger, {a} or {b}? Answer with the digit."


def rows() -> tuple[list[dict], list[dict]]:
    rng = random.Random(2024)
    pairs = [(a, b) for a in range(10) for b in range(10) if a != b]
    verifiable = [{"prompt": prompt(a, b), "answer": str(max(a, b))} for a, b in pairs]
    warmup = [{"prompt": prompt(a, b), "completion": str(rng.choice((a, b)))} for a, b in pairs]
    return verifiable, warmup


def main() -> None:
    verifiable, warmup = rows()
    for name, items in (("larger_digit.jsonl", verifiable), ("larger_digit_warmup.jsonl", warmup)):
        with (HERE / name).open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in items)


if __name__ == "__main__":
    main()
