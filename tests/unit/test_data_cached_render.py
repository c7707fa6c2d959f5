"""The bulk renderer gives exactly render_with_mask's ids and labels, reports bad rows in place, and a second
call with the same rows, tokenizer, template and options is read from the cache (a changed option is not)."""

from __future__ import annotations

from qwen35_tune.data.cached_render import render_rows_cached
from qwen35_tune.data.formats import normalise_row
from qwen35_tune.data.render import render_with_mask

ROWS = [
    normalise_row({"question": f"What is {i} + 1?", "reasoning": f"{i} plus one.", "answer": f"{i + 1}."}, "cot")
    for i in range(5)
] + [{"messages": [{"role": "assistant", "content": "no prompt"}, {"role": "user", "content": "x"},
                   {"role": "assistant", "content": "y"}]}]


def test_same_as_render_with_mask_and_cached(tmp_path, tiny_tokenizer):
    out = render_rows_cached(ROWS, tiny_tokenizer, cache_dir=tmp_path)
    for row, ids, labels, problem in zip(ROWS[:5], out["input_ids"], out["labels"], out["problem"], strict=False):
        expected = render_with_mask(tiny_tokenizer, row)
        assert (ids, labels, problem) == (expected.input_ids, expected.labels, "")
    assert "starts with an assistant turn" in out["problem"][5]
    files = sorted(tmp_path.glob("render-*.arrow"))
    assert len(files) == 1
    again = render_rows_cached(ROWS, tiny_tokenizer, cache_dir=tmp_path)
    assert again["input_ids"] == out["input_ids"] and sorted(tmp_path.glob("render-*.arrow")) == files
    other = render_rows_cached(ROWS, tiny_tokenizer, cache_dir=tmp_path, enable_thinking=False)
    assert len(sorted(tmp_path.glob("render-*.arrow"))) == 2
    assert other["input_ids"][0] != out["input_ids"][0]  # thinking off drops the reasoning


def test_heap_freeze_only_in_forked_workers():
    """Freezing the main process's heap would keep its cyclic garbage forever: only a worker (another pid) does it."""
    import gc
    import os

    from qwen35_tune.data.cached_render import freeze_inherited_heap

    before = gc.get_freeze_count()
    freeze_inherited_heap(os.getpid())
    assert gc.get_freeze_count() == before
    pid = os.fork()
    if pid == 0:  # the worker: freezes once, then exits with whether it did
        freeze_inherited_heap(os.getppid())
        os._exit(0 if gc.get_freeze_count() > 0 else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_plain_text_rows_need_no_chat_template(tmp_path, tiny_tokenizer):
    """Continued pre-training on a base model's tokenizer, which may carry no chat template at all."""
    import copy

    base = copy.deepcopy(tiny_tokenizer)
    base.chat_template = None
    rows = [{"text": f"Document {i} about bond yields."} for i in range(600)]  # enough rows for worker processes
    out = render_rows_cached(rows, base, cache_dir=tmp_path, num_proc=2)
    assert not any(out["problem"])
    assert out["input_ids"][3] == out["labels"][3] == base(rows[3]["text"] + base.pad_token)["input_ids"]


def test_a_new_render_version_does_not_read_old_caches(tmp_path, tiny_tokenizer, monkeypatch):
    """Caches written before a change to rendering or masking must not be read back after it."""
    import qwen35_tune.data.cached_render as cached_render

    render_rows_cached(ROWS, tiny_tokenizer, cache_dir=tmp_path)
    monkeypatch.setattr(cached_render, "RENDER_VERSION", cached_render.RENDER_VERSION + "-next")
    render_rows_cached(ROWS, tiny_tokenizer, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("render-*.arrow"))) == 2
