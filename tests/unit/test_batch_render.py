"""The batched renderer (compiled template, one tokenizer call per batch, vectorised labels) gives exactly
render_with_mask's text, ids and labels, or the same rejection, on every mask fixture and both templates."""

from __future__ import annotations

import pytest

from qwen35_tune.data.batch_render import _labels, render_batch
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.render import render_with_mask
from tests.unit.test_masks import ALT_TEMPLATE, FIXTURES

EXTRA = [
    {"text": "Plain continued pre-training text."},
    {"messages": [{"role": "assistant", "content": "no prompt"}, {"role": "user", "content": "x"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late system"},
                  {"role": "assistant", "content": "b"}]},
]


def _outcome(fn):
    try:
        row = fn()
    except BadRow as exc:
        return ("bad", str(exc))
    return ("ok", row.text, row.input_ids, row.labels)


@pytest.mark.parametrize("template", [None, ALT_TEMPLATE], ids=["qwen3_5", "chatml_alt"])
@pytest.mark.parametrize("options", [{}, {"enable_thinking": False}, {"train_on": "final_turn_only"},
                                     {"train_on": "all", "mask_empty_think": False}], ids=str)
def test_batch_equals_reference(tiny_tokenizer, template, options):
    rows = [normalise_row(raw, "messages") for raw, _, _ in FIXTURES.values()] + EXTRA
    got = render_batch(tiny_tokenizer, rows, template=template, **options)
    assert len(got) == len(rows)
    for row, out in zip(rows, got, strict=True):
        want = _outcome(lambda row=row: render_with_mask(tiny_tokenizer, row, template=template, **options))
        have = ("bad", str(out)) if isinstance(out, BadRow) else ("ok", out.text, out.input_ids, out.labels)
        assert have == want
    assert any(not isinstance(out, BadRow) for out in got)
    if not options:  # the assistant-first row is rejected the same way
        assert any(isinstance(out, BadRow) for out in got)


def test_labels_from_offsets():
    ids, offsets = [10, 11, 12, 13, 14], [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert _labels(ids, offsets, [(3, 5), (8, 9)]) == [-100, 11, 12, -100, 14]
    assert _labels(ids, offsets, [(0, 10)]) == ids
    assert _labels([], [], [(0, 1)]) == []
