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
from tests.unit.test_masks import FIXTURES

OFFICIAL = ["qwen3_5_think.jinja", "qwen3_5_nothink.jinja", "qwen3_6.jinja"]


def _official(name: str) -> str:
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
