"""Write the learnable verifiable task behind benchmarks/grpo_learning_signal.py: "which of two digits is larger?".

- ``larger_digit.jsonl`` (format: verifiable): every ordered pair of different digits, the larger one as the answer
  (90 rows). A correct answer is one digit, which math-verify checks like any math answer.
- ``larger_digit_warmup.jsonl`` (format: prompt_completion): each prompt twice, once answered with each of its two
  digits (180 rows). A short SFT on it teaches a random tiny model the answer's form (one of the prompt's digits, then
  the end of the turn) and nothing about which digit is right: every prompt's two answers are equally likely after
  it, so each GRPO group starts with right and wrong completions (about half correct) and has the comparison itself
  to learn. (One answer per prompt would be memorised, leaving groups that all agree: no signal.)

Run from anywhere: `python data_cards/data/generate_larger_digit.py`; output is deterministic (committed).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent


def prompt(a: int, b: int) -> str:
    return f"Which is larger, {a} or {b}? Answer with the digit."


def rows() -> tuple[list[dict], list[dict]]:
    pairs = [(a, b) for a in range(10) for b in range(10) if a != b]
    verifiable = [{"prompt": prompt(a, b), "answer": str(max(a, b))} for a, b in pairs]
    warmup = [{"prompt": prompt(a, b), "completion": str(digit)} for a, b in pairs for digit in (a, b)]
    return verifiable, warmup


def main() -> None:
    verifiable, warmup = rows()
    for name, items in (("larger_digit.jsonl", verifiable), ("larger_digit_warmup.jsonl", warmup)):
        with (HERE / name).open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in items)


if __name__ == "__main__":
    main()
