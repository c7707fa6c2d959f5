"""`preview` without a terminal (CI logs, NO_COLOR) marks trained tokens with ⟦…⟧ so the mask is visible."""

from __future__ import annotations

from pathlib import Path

from qwen35_tune.cli import main
from qwen35_tune.data.formats import normalise_row
from qwen35_tune.data.preview import marked_text
from qwen35_tune.data.render import render_with_mask, trained_texts

RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_lora.yaml")


def test_marked_text_brackets_exactly_the_trained_runs(tiny_tokenizer):
    row = normalise_row({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                                      {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao."}]},
                        "messages")
    rendered = render_with_mask(tiny_tokenizer, row)
    marked = marked_text(rendered, tiny_tokenizer)
    assert marked.replace("⟦", "").replace("⟧", "") == rendered.text
    inside = [part.split("⟧")[0] for part in marked.split("⟦")[1:]]
    assert inside == trained_texts(rendered, tiny_tokenizer) == ["Hello.<|im_end|>", "Ciao.<|im_end|>"]
    assert "Hi" in marked.split("⟦")[0]  # the prompt stays outside the marks


def test_preview_plain_output_shows_mask(capsys, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["preview", RECIPE, "--rows", "1"]) == 0
    out = capsys.readouterr().out
    assert "⟦trained⟧" in out and "\x1b[" not in out
    assert out.count("⟦") == out.count("⟧") >= 3  # legend + the row's two assistant turns
