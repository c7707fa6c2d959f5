"""The hand-written mask fixtures hold on Qwen's official Qwen3.5/3.6 chat templates too, and the fast batched
renderer gives exactly the reference path's ids and labels on them.

Real checkpoints carry their own template, which never reaches these machines with the weights; TRL's wheel ships
verbatim copies of the official ones (trl/chat_templates/), so the tests read them from the installed package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.data.batch_render import render_batch
from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.render import render_with_mask, trained_texts
from tests.unit.data_kit import FEATURES, conversation_features, random_conversation
from tests.unit.test_masks import FIXTURES

OFFICIAL = ["qwen3_5_think.jinja", "qwen3_5_nothink.jinja", "qwen3_6.jinja"]


def _official(name: str | None) -> str | None:
    if name is None:  # the project's own template, which the tiny tokenizer carries
        return None
    trl = pytest.importorskip("trl")
    path = Path(trl.__file__).parent / "chat_templates" / name
    if not path.is_file():
        pytest.skip(f"this TRL has no copy of {name}")
    return path.read_text()


@pytest.mark.parametrize("template_name", OFFICIAL)
@pytest.mark.parametrize("name", FIXTURES)
def test_official_template_trains_the_hand_written_spans(tiny_tokenizer, template_name, name):
    raw, expected, _ = FIXTURES[name]
    row = render_with_mask(tiny_tokenizer, normalise_row(raw, "messages"), template=_official(template_name))
    assert trained_texts(row, tiny_tokenizer) == expected


@pytest.mark.parametrize("options", [{}, {"enable_thinking": False}, {"train_on": "final_turn_only"}], ids=str)
@pytest.mark.parametrize("template_name", OFFICIAL)
def test_batched_renderer_equals_reference_on_official_template(tiny_tokenizer, template_name, options):
    template = _official(template_name)
    rows = [normalise_row(raw, "messages") for raw, _, _ in FIXTURES.values()]
    for row, got in zip(rows, render_batch(tiny_tokenizer, rows, template=template, **options), strict=True):
        try:
            want = render_with_mask(tiny_tokenizer, row, template=template, **options)
        except BadRow as exc:
            assert isinstance(got, BadRow) and str(got) == str(exc)
            continue
        assert not isinstance(got, BadRow), got
        assert (got.text, got.input_ids, got.labels) == (want.text, want.input_ids, want.labels)


RANDOM_ROWS, DEFAULT_ROWS = 150, 30  # the default run renders the first 30 of the 150; the slow lane the rest


@pytest.mark.parametrize("rows_slice", [pytest.param(slice(0, DEFAULT_ROWS), id="first"),
                                        pytest.param(slice(DEFAULT_ROWS, RANDOM_ROWS), id="rest",
                                                     marks=pytest.mark.slow)])  # fmt: skip
@pytest.mark.parametrize("options", [{}, {"enable_thinking": False}, {"train_on": "final_turn_only"},
                                     {"mask_empty_think": False}], ids=str)
@pytest.mark.parametrize("template_name", [None, "chatml_alt", "qwen3_5_think.jinja"])
def test_random_conversations_train_and_batched_equals_reference(tiny_tokenizer, template_name, options, rows_slice):
    """150 random valid conversations (tool chains before later questions, parallel calls, JSON-string arguments,
    content parts, decomposed accents): none is quarantined, and the fast path (compiled template, edge-derived
    labels, run checks) gives the reference path's text, ids and labels row by row. The default run takes the first
    30, which hold every one of ``FEATURES`` at least three times (checked), the slow lane the other 120."""
    import random
    from collections import Counter

    from tests.unit.test_masks import ALT_TEMPLATE

    template = {None: None, "chatml_alt": ALT_TEMPLATE}.get(template_name) or _official(template_name)
    rng = random.Random(7)
    parts = template_name != "chatml_alt"  # that test template only takes string content
    raws = [random_conversation(rng, parts) for _ in range(RANDOM_ROWS)][rows_slice]
    if rows_slice.start == 0:
        held = Counter(feature for raw in raws for feature in conversation_features(raw))
        thin = {f: held[f] for f in FEATURES - ({"content parts"} if not parts else set()) if held[f] < 3}
        assert not thin, f"the first {DEFAULT_ROWS} conversations hold too few of {thin}: raise DEFAULT_ROWS"
    rows = [normalise_row(raw, "messages") for raw in raws]
    got = render_batch(tiny_tokenizer, rows, template=template, **options)
    for index, (row, fast) in enumerate(zip(rows, got, strict=True), start=rows_slice.start):
        try:
            want = render_with_mask(tiny_tokenizer, row, template=template, **options)
        except BadRow as exc:
            raise AssertionError(f"valid conversation {index} quarantined: {exc}\n{row}") from None
        assert not isinstance(fast, BadRow), fast
        assert (fast.text, fast.input_ids, fast.labels) == (want.text, want.input_ids, want.labels)
