"""Regenerate the shape-QA image set: coloured shapes on white, with short exact answers checkable from the drawing.

Run: python data_cards/data/generate_shapes_qa.py   (deterministic; the images and JSONL files are committed)

Each 64x64 PNG holds 1-3 shapes (circle, square, triangle; red, green, blue, yellow), one per quadrant, each of a
random size and place inside it (no drawing repeats, within or across splits). Questions:
"What colour is the square?" and "What shape is shown?" (single-shape images), "How many shapes are there?" and
"How many red shapes are there?" (two or three shapes). Every row also keeps the drawn ``shapes`` and the answer
``kind``, so tests can re-check each answer.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
IMAGE_DIR = HERE / "shapes_qa"
SIZE, CELL, MARGIN = 64, 32, 5
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
# The answers each kind of question can have (the benchmark scores the model's choice among them).
CHOICES = {"colour": list(COLOURS), "shape": list(SHAPES), "count": ["1", "2", "3"],
           "colour_count": ["0", "1", "2", "3"]}
SPLITS = {"train": (600, 7), "eval": (100, 8)}  # rows, seed


def draw(shapes: list[dict]) -> Image.Image:
    """One image; each shape fills most of its quadrant so even a 2x2-token view keeps its colour."""
    image = Image.new("RGB", (SIZE, SIZE), "white")
    pen = ImageDraw.Draw(image)
    for s in shapes:
        x0, y0, x1, y1 = s["box"]
        fill = COLOURS[s["colour"]]
        if s["shape"] == "circle":
            pen.ellipse((x0, y0, x1, y1), fill=fill)
        elif s["shape"] == "square":
            pen.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            pen.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
    # An adaptive palette keeps each PNG at a few hundred bytes (the committed set stays well under 1 MB).
    return image.quantize(colors=8, method=Image.Quantize.MEDIANCUT)


def question(rng: random.Random, shapes: list[dict]) -> tuple[str, str, str]:
    """(kind, question, answer) for this drawing; every question has one answer readable from the pixels.

    Colour and shape are asked about single-shape images only (a tiny model learns them in a few hundred CPU steps;
    binding a colour to one of several shapes is left out), counts about any image.
    """
    kinds = ["colour", "colour", "shape", "shape"] if len(shapes) == 1 else ["count", "count", "colour_count"]
    kind = rng.choice(kinds)
    target = shapes[0]
    if kind == "colour":
        return kind, f"What colour is the {target['shape']}? Answer with one word.", target["colour"]
    if kind == "shape":
        return kind, "What shape is shown? Answer with one word.", target["shape"]
    if kind == "count":
        return kind, "How many shapes are there? Answer with a number.", str(len(shapes))
    colour = rng.choice(sorted({s["colour"] for s in shapes}) + list(COLOURS))  # half the time a colour present
    n = sum(s["colour"] == colour for s in shapes)
    return kind, f"How many {colour} shapes are there? Answer with a number.", str(n)


def _box(rng: random.Random, cell: int) -> list[int]:
    """A square box of 16-24 px placed at random inside its quadrant (so held-out drawings differ from training's)."""
    size = rng.randint(16, CELL - 2 * MARGIN + 2)
    x0 = (cell % 2) * CELL + rng.randint(MARGIN - 2, CELL - size - MARGIN + 2)
    y0 = (cell // 2) * CELL + rng.randint(MARGIN - 2, CELL - size - MARGIN + 2)
    return [x0, y0, x0 + size, y0 + size]


def make_row(rng: random.Random, split: str, i: int, avoid: set[str]) -> dict:
    """One row; ``avoid`` holds the drawings of earlier rows and splits, so no drawing is used twice."""
    while True:
        n = rng.choice([1, 1, 1, 2, 3])
        cells = sorted(rng.sample(range(4), n))
        shapes = [{"shape": rng.choice(SHAPES), "colour": rng.choice(list(COLOURS)), "cell": c, "box": _box(rng, c)}
                  for c in cells]
        key = json.dumps(shapes)
        if key not in avoid:
            avoid.add(key)
            break
    name = f"{split}_{i:04d}.png"
    draw(shapes).save(IMAGE_DIR / name, optimize=True)
    kind, text, answer = question(rng, shapes)
    return {
        "messages": [{"role": "user", "content": f"<image>\n{text}"}, {"role": "assistant", "content": answer}],
        "images": [name],
        "kind": kind,
        "shapes": shapes,
    }


def preference_rows(rows: list[dict], rng: random.Random) -> list[dict]:
    """Preference pairs over the same images (stage: dpo): the right answer chosen over another answer the question
    allows (shapes_qa_preference.jsonl, used by recipes/tiny/dpo_vision.yaml)."""
    pairs = []
    for row in rows:
        answer = row["messages"][1]["content"]
        wrong = rng.choice([choice for choice in CHOICES[row["kind"]] if choice != answer])
        pairs.append({"prompt": row["messages"][0]["content"], "chosen": answer, "rejected": wrong,
                      "images": row["images"]})
    return pairs


def write_preference(rows: list[dict]) -> None:
    out = HERE / "shapes_qa_preference.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(rows[:PREFERENCE_ROWS], random.Random(9))))
    print(f"wrote {PREFERENCE_ROWS} pairs to {out.name}")


PREFERENCE_ROWS = 200  # the first training rows' images, with a right and a wrong answer


def main() -> None:
    IMAGE_DIR.mkdir(exist_ok=True)
    for old in IMAGE_DIR.glob("*.png"):
        old.unlink()
    drawn: set[str] = set()
    for split, (count, seed) in SPLITS.items():
        rng = random.Random(seed)
        rows = [make_row(rng, split, i, drawn) for i in range(count)]
        out = HERE / ("shapes_qa.jsonl" if split == "train" else "shapes_qa_eval.jsonl")
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} rows to {out.name}")
        if split == "train":
            write_preference(rows)


if __name__ == "__main__":
    main()
