"""Regenerate tiny_chat.jsonl: small, varied, verifiable chats the project writes itself (no copied datasets).

Run: python data_cards/data/generate_tiny_chat.py   (deterministic; the output is committed)
"""

import json
import random
from pathlib import Path

rng = random.Random(1234)
SYSTEMS = ["You are a concise assistant.", "You are a helpful tutor who explains briefly.", None, None]
UNITS = [("kilometres", "metres", 1000), ("hours", "minutes", 60), ("kilograms", "grams", 1000), ("days", "hours", 24)]
COLOURS = {"red": "rouge", "blue": "bleu", "green": "vert", "black": "noir", "white": "blanc", "yellow": "jaune"}


def arithmetic() -> tuple[str, str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op = rng.choice(["+", "-", "*"])
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    reasoning = f"I need {a} {op} {b}. Computing it gives {result}."
    return f"What is {a} {op} {b}?", f"{a} {op} {b} = {result}.", reasoning


def conversion() -> tuple[str, str, str]:
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(2, 40)
    reasoning = f"One of the {big} is {factor} {small}, so {n} × {factor} = {n * factor}."
    return f"How many {small} are in {n} {big}?", f"{n} {big} is {n * factor} {small}.", reasoning


def translation() -> tuple[str, str, str]:
    en, fr = rng.choice(sorted(COLOURS.items()))
    question = f"Translate the colour '{en}' into French."
    return question, f"In French, '{en}' is '{fr}'.", f"The French word for {en} is {fr}."


def make_row(i: int) -> dict:
    kind = [arithmetic, conversion, translation][i % 3]
    question, answer, reasoning = kind()
    messages = []
    system = rng.choice(SYSTEMS)
    if system:
        messages.append({"role": "system", "content": system})
    if i % 5 == 0:  # a two-turn chat: the first answer is history, the second is the final turn
        q0, a0, _ = arithmetic()
        messages += [{"role": "user", "content": q0}, {"role": "assistant", "content": a0}]
    messages.append({"role": "user", "content": question})
    final = {"role": "assistant", "content": answer}
    if i % 4 == 0:
        final["reasoning_content"] = reasoning
    messages.append(final)
    return {"messages": messages}


if __name__ == "__main__":
    out = Path(__file__).with_name("tiny_chat.jsonl")
    out.write_text("".join(json.dumps(make_row(i), ensure_ascii=False) + "\n" for i in range(96)), encoding="utf-8")
    print(f"wrote {out}")
