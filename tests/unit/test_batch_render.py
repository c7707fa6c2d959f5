"""The batched renderer (compiled template, one tokenizer call per batch, vectorised labels) gives exactly
render_with_mask's text, ids and labels, or the same rejection, on every mask fixture and both templates."""

from __future__ import annotations

import pytest

from qwen35_tune.data.batch_render import labels_from_offsets, render_batch
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.render import render_with_mask
from tests.unit.test_masks import ALT_TEMPLATE, FIXTURES

EXTRA = [
    {"text": "Plain continued pre-training text."},
    {"messages": [{"role": "assistant", "content": "no prompt"}, {"role": "user", "content": "x"}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late system"},
                  {"role": "assistant", "content": "b"}]},
    # content parts: the alternative template only concatenates strings and crashes (TypeError) on them
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]},
                  {"role": "assistant", "content": "c"}]},
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
    assert labels_from_offsets(ids, offsets, [(3, 5), (8, 9)]) == [-100, 11, 12, -100, 14]
    assert labels_from_offsets(ids, offsets, [(0, 10)]) == ids
    assert labels_from_offsets([], [], [(0, 1)]) == []


def test_edge_runs_train_exactly_the_tokens_the_offsets_do(tiny_tokenizer):
    """Labels from the tokens at the span edges equal labels from every offset, on text where spans start and end
    inside tokens and inside multi-byte characters split over several byte-level tokens."""
    import random

    from qwen35_tune.data.batch_render import edge_runs, runs_to_labels
    from qwen35_tune.data.render import trained_runs

    rng = random.Random(0)
    pieces = ["hello", " world", "\n\n", "  ", "数学题", "🙂🙃", "é", "e\u0301", "<|im_end|>", "<think>", "123", ".",
              "ünï"]
    backend = tiny_tokenizer.backend_tokenizer
    checked = 0
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(3, 12)))
        cuts = sorted(rng.sample(range(len(text) + 1), 2 * rng.randint(1, 3)))
        spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=True) if b > a]
        encoding = backend.encode(text, add_special_tokens=False)
        runs = edge_runs(encoding, len(encoding.ids), spans)
        if runs is None:  # an edge character in no token: the caller uses every offset instead
            continue
        expected = labels_from_offsets(encoding.ids, encoding.offsets, spans)
        assert runs_to_labels(encoding.ids, runs) == expected, (text, spans)
        assert runs == trained_runs(expected)
        checked += 1
    assert checked > 250


def test_a_template_that_crashes_on_a_row_quarantines_that_row(tiny_tokenizer):
    rows = [normalise_row(raw, "messages") for raw in (EXTRA[-1], FIXTURES["single_turn"][0])]
    crashed, fine = render_batch(tiny_tokenizer, rows, template=ALT_TEMPLATE)
    assert isinstance(crashed, BadRow) and "chat template failed on this conversation (TypeError" in str(crashed)
    assert not isinstance(fine, BadRow)
