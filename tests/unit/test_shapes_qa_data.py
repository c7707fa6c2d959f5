"""The generated shape-QA set is what its cards claim: every answer follows from the drawn shapes, every image shows
them (each shape's colour inside its box, white in empty quadrants), no held-out image is a training image, and the
committed set stays small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "data_cards/data"
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (235, 200, 20)}


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def _expected(row: dict) -> str:
    shapes, question = row["shapes"], row["messages"][0]["content"]
    if row["kind"] == "colour":
        return next(s["colour"] for s in shapes if f"the {s['shape']}?" in question)
    if row["kind"] == "shape":
        return shapes[0]["shape"]
    if row["kind"] == "count":
        return str(len(shapes))
    colour = question.split("How many ")[1].split(" ")[0]
    return str(sum(s["colour"] == colour for s in shapes))


@pytest.mark.parametrize("name", ["shapes_qa.jsonl", "shapes_qa_eval.jsonl"])
def test_every_answer_follows_from_the_drawing(name):
    rows = _rows(name)
    assert len(rows) >= 100
    for row in rows:
        user, assistant = row["messages"]
        assert user["content"].startswith("<image>\n") and len(row["images"]) == 1
        assert assistant["content"] == _expected(row)


def test_images_show_the_listed_shapes():
    for row in _rows("shapes_qa_eval.jsonl"):
        image = Image.open(DATA / "shapes_qa" / row["images"][0]).convert("RGB")
        assert image.size == (64, 64)
        cells = {s["cell"]: s for s in row["shapes"]}
        for cell in range(4):
            if cell in cells:
                x0, y0, x1, y1 = cells[cell]["box"]
                point = ((x0 + x1) // 2, y0 + 2 * (y1 - y0) // 3)  # inside a circle, square or triangle alike
                want = COLOURS[cells[cell]["colour"]]
            else:
                point, want = ((cell % 2) * 32 + 16, (cell // 2) * 32 + 16), (255, 255, 255)
            pixel = image.getpixel(point)
            assert max(abs(a - b) for a, b in zip(pixel, want, strict=True)) < 40, (row["images"][0], cell, pixel)


def test_held_out_images_are_distinct_and_the_set_is_small():
    train = {(DATA / "shapes_qa" / r["images"][0]).read_bytes() for r in _rows("shapes_qa.jsonl")}
    held_out = [(DATA / "shapes_qa" / r["images"][0]).read_bytes() for r in _rows("shapes_qa_eval.jsonl")]
    assert not any(b in train for b in held_out)
    total = sum(f.stat().st_size for f in (DATA / "shapes_qa").glob("*.png"))
    total += sum((DATA / n).stat().st_size for n in ("shapes_qa.jsonl", "shapes_qa_eval.jsonl"))
    assert total < 1_000_000
