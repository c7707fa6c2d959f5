"""Hostile and odd rows get a reason and go to quarantine (card, file, row number), never a traceback: rows nested
thousands of levels deep, lines too long to hold, NaN and infinity, files that are empty or not what they say, CSV
cells that are numbers, wrong types in every field a format reads, and vision tokens or image parts with no media.
Validate reads only a first line, and never fails on one."""

from __future__ import annotations

import json
import math
import re

import pytest

from qwen35_tune.data.formats import BadRow, normalise_row
from qwen35_tune.data.sources import iter_rows
from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe

GOOD = {"prompt": "What is 1+1?", "completion": "2"}


def _reasons(path, **kwargs) -> list[tuple[int, object]]:
    return [(n, str(row) if isinstance(row, BadRow) else row) for _, n, row in iter_rows([path], **kwargs)]


def _card_recipe(tmp_path, data_file: str, fmt: str = "prompt_completion", bad: float = 0.6):
    (tmp_path / "c.yaml").write_text(f"name: c\nlicense: mit\nformat: {fmt}\nmax_bad_fraction: {bad}\n"
                                     f"source: {{path: {data_file}}}\n")
    (tmp_path / "r.yaml").write_text("name: r\nmodel: {name_or_path: 'tiny://dense'}\ntrain: {max_length: 64}\n"
                                     "data: {cards: [{path: c.yaml}]}\n")
    return tmp_path / "r.yaml"


@pytest.mark.parametrize("depth", [150, 1500, 100_000])
def test_deeply_nested_rows_are_bad_rows(tmp_path, depth):
    path = tmp_path / "rows.jsonl"
    deep = '{"prompt": "q", "completion": "a", "x": ' + "[" * depth + "]" * depth + "}"
    path.write_text(deep + "\n" + json.dumps(GOOD) + "\n")
    got = _reasons(path)
    assert got == [(1, "row is nested more than 100 levels deep"), (2, GOOD)]


def test_a_deep_element_of_a_json_array_is_one_bad_row(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text("[" + json.dumps(GOOD) + ", " + "[" * 50_000 + '"]]"' + "]" * 50_000 + ", 7, "
                    + json.dumps(GOOD) + "]")
    assert _reasons(path) == [(1, GOOD), (2, "row is nested more than 100 levels deep"),
                              (3, "row is not a JSON object"), (4, GOOD)]


def test_nesting_inside_json_strings_is_checked_after_decoding():
    tools = "[" * 5000 + "]" * 5000
    with pytest.raises(BadRow, match="'tools' is a string but not valid JSON"):
        normalise_row({**GOOD, "tools": tools}, "prompt_completion")
    args = json.dumps({"x": json.loads("[" * 200 + "]" * 200)})
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": args}}]}]}
    with pytest.raises(BadRow, match="nested more than 100 levels"):
        normalise_row(row, "messages")


def test_a_line_too_long_to_hold_is_skipped_as_a_bad_row(tmp_path, monkeypatch):
    import qwen35_tune.data.sources as sources

    monkeypatch.setattr(sources, "MAX_ROW_BYTES", 1000)
    path = tmp_path / "rows.jsonl"
    long_row = json.dumps({"prompt": "x" * 5000, "completion": "a"})
    path.write_text(json.dumps(GOOD) + "\n" + long_row + "\n" + json.dumps(GOOD) + "\n")
    assert _reasons(path) == [(1, GOOD), (2, "line is longer than 0 MiB"), (3, GOOD)]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_bad_rows(number):
    args = json.loads('{"amount": ' + number + "}")
    row = {"messages": [{"role": "user", "content": "pay"},
                        {"role": "assistant", "content": "", "tool_calls": [{"name": "pay", "arguments": args}]}]}
    with pytest.raises(BadRow, match="JSON cannot represent"):
        normalise_row(row, "messages")
    assert normalise_row({**GOOD, "score": args["amount"]}, "prompt_completion")  # a column no format reads


def test_quarantine_lines_stay_strict_json(tmp_path, tiny_tokenizer):
    """A parquet float column holding NaN is copied into quarantine.jsonl as a string, not as bare NaN."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qwen35_tune.data.build import build_datasets

    table = pa.table({"prompt": ["q1", "q2", "q3"], "completion": ["a", "", "c"], "score": [1.0, math.nan, 2.0]})
    pq.write_table(table, tmp_path / "rows.parquet")
    build_datasets(load_recipe(_card_recipe(tmp_path, "rows.parquet")), tiny_tokenizer, tmp_path)
    line = (tmp_path / "quarantine.jsonl").read_text().splitlines()[0]
    record = json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name} in quarantine.jsonl"))
    assert record["row"] == 2 and record["raw"]["score"] == "nan"


def test_csv_cells_are_text_numbers_included(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("prompt,completion,enable_thinking\nWhat is 1+1?,2,false\nNA,3.0,\n\"a, quoted\",007,TRUE\n")
    assert _reasons(path, bool_columns=("enable_thinking",)) == [
        (1, {"prompt": "What is 1+1?", "completion": "2", "enable_thinking": False}),
        (2, {"prompt": "NA", "completion": "3.0"}),  # an empty cell is left out, 'NA' stays text
        (3, {"prompt": "a, quoted", "completion": "007", "enable_thinking": True}),
    ]
    row = normalise_row(_reasons(path, bool_columns=("enable_thinking",))[0][1], "prompt_completion")
    assert row["messages"][1]["content"] == "2" and row["enable_thinking"] is False


def test_a_csv_card_with_numbers_trains(tmp_path, tiny_tokenizer):
    from qwen35_tune.data.build import build_datasets

    (tmp_path / "rows.csv").write_text("prompt,completion\nWhat is 1+1?,2\nWhat is 2+2?,4\n")
    train, _, stats = build_datasets(load_recipe(_card_recipe(tmp_path, "rows.csv", bad=0)), tiny_tokenizer)
    assert len(train) == 2 and not stats["cards"][0]["bad"]


def test_broken_csv_records_are_bad_rows_the_rest_is_read(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b'prompt,completion\nok,fine\nx,"y"z\ncaf\xe9,latin-1\none,two,three\nshort\nlast,row\n')
    got = _reasons(path)
    assert got[0] == (1, {"prompt": "ok", "completion": "fine"}) and got[-1] == (6, {"prompt": "last",
                                                                                     "completion": "row"})
    assert "broken CSV record" in got[1][1] and got[2] == (3, "row is not valid UTF-8")
    assert got[3] == (4, "row has 3 fields, the header has 2") and got[4] == (5, "row has 1 fields, the header has 2")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("rows.json", b"[{}, {]", r"rows\.json:1: not valid JSON"),
    ("rows.json", b'{"prompt": "q"}', r"rows\.json: a \.json source must hold a list"),
    ("rows.parquet", b"", r"rows\.parquet: could not be read as PARQUET"),
    ("rows.parquet", b"PAR1 this is not parquet", r"rows\.parquet: could not be read as PARQUET"),
    ("rows.csv", b"a,a\n1,2\n", r"rows\.csv: could not be read as CSV: column 'a' appears twice"),
])
def test_files_that_are_not_what_they_say_name_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        list(iter_rows([tmp_path / name]))


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.json", "rows.csv"])
def test_empty_files_say_the_card_has_no_rows(tmp_path, tiny_tokenizer, name):
    from qwen35_tune.data.build import build_datasets

    (tmp_path / name).write_bytes(b"")
    with pytest.raises(UserError, match=r"data card 'c': its source has no rows"):
        build_datasets(load_recipe(_card_recipe(tmp_path, name)), tiny_tokenizer, tmp_path)
    assert json.loads((tmp_path / "data_stats.json").read_text())["error"].startswith("data card 'c'")


@pytest.mark.parametrize("first_line", [b"[" * 100_000 + b"]" * 100_000, b'{"prompt": "caf\xe9"}', b"\x00\xff junk"])
def test_validate_never_fails_on_the_first_data_line(tmp_path, first_line):
    (tmp_path / "rows.jsonl").write_bytes(first_line + b"\n" + json.dumps(GOOD).encode() + b"\n")
    assert load_recipe(_card_recipe(tmp_path, "rows.jsonl")).name == "r"


@pytest.mark.parametrize("content", [b"", b"not parquet at all", b"PAR1" + b"\x00" * 64 + b"PAR1"])
def test_validate_never_blames_the_recipe_for_a_junk_parquet(tmp_path, content):
    (tmp_path / "rows.parquet").write_bytes(content)
    assert load_recipe(_card_recipe(tmp_path, "rows.parquet")).name == "r"


@pytest.mark.parametrize(("row", "fmt", "reason"), [
    ({"instruction": None, "output": "a"}, "alpaca", "'instruction' is null"),
    ({"instruction": "  ", "input": "", "output": "a"}, "alpaca", "'instruction' is empty"),
    ({"instruction": 3, "output": "a"}, "alpaca", "'instruction' must be a string, not int"),
    ({"instruction": ["x"], "input": "y", "output": "a"}, "alpaca", "'instruction' must be a string, not list"),
    ({"instruction": "q", "input": 5, "output": "a"}, "alpaca", "'input' must be a string, not int"),
    ({"prompt": None, "completion": "a"}, "prompt_completion", "'prompt' is null"),
    ({"question": "", "reasoning": "r", "answer": "a"}, "cot", "'question' is empty"),
    ({"question": "q", "reasoning": 5, "answer": "a"}, "cot", "reasoning must be a string, not int"),
    ({**GOOD, "enable_thinking": "yes"}, "prompt_completion", "'enable_thinking' must be true or false, not 'yes'"),
    ({**GOOD, "enable_thinking": 1}, "prompt_completion", "'enable_thinking' must be true or false, not '1'"),
    ({**GOOD, "enable_thinking": "false"}, "prompt_completion", "must be true or false, not 'false'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": 7, "arguments": {}}}]}]}, "messages", "function name must be a string"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "tool", "content": "r", "name": ["x"]}, {"role": "assistant", "content": "b"}]},
     "messages", "'name' must be a string"),
    ({"messages": [{"role": "user", "content": "q"}] * 3000 + [{"role": "assistant", "content": "a"}]}, "messages",
     "row has 3001 messages, more than 2048"),
])
def test_wrong_types_and_missing_prompts_are_bad_rows(row, fmt, reason):
    with pytest.raises(BadRow, match=re.escape(reason)):
        normalise_row(row, fmt)


def test_an_empty_prompt_is_fine_with_an_image_and_thinking_flags_are_kept():
    row = normalise_row({"prompt": "", "completion": "A red square.", "images": ["red.png"]}, "prompt_completion")
    assert row["messages"][0]["content"] == "" and row["images"] == ["red.png"]
    assert normalise_row({**GOOD, "enable_thinking": False}, "prompt_completion")["enable_thinking"] is False
    assert "enable_thinking" not in normalise_row({**GOOD, "enable_thinking": None}, "prompt_completion")


@pytest.mark.parametrize("text", ["look: <|image_pad|>", "<|vision_start|><|vision_end|>", "a <|video_pad|> b"])
def test_vision_tokens_written_as_text_are_bad_rows(text):
    with pytest.raises(BadRow, match="which only the image processor may place"):
        normalise_row({"prompt": text, "completion": "a"}, "prompt_completion")
    with pytest.raises(BadRow, match="which only the image processor may place"):
        normalise_row({"text": text}, "text")
    tools = [{"type": "function", "function": {"name": "f", "description": text}}]
    with pytest.raises(BadRow, match="which only the image processor may place"):
        normalise_row({**GOOD, "tools": tools}, "prompt_completion")


@pytest.mark.parametrize("part", [{"type": "image"}, {"type": "image_url", "image_url": {"url": "x.png"}},
                                  {"image": "/etc/passwd"}, {"type": "video", "video": "clip.mp4"}])
def test_media_parts_without_the_rows_media_are_bad_rows(part):
    messages = [{"role": "user", "content": [part, {"type": "text", "text": "What is it?"}]},
                {"role": "assistant", "content": "A cat."}]
    with pytest.raises(BadRow, match=r"message 0: content part 0 is an (image|video), but the row has no"):
        normalise_row({"messages": messages}, "messages")


def test_image_url_parts_count_as_the_rows_images():
    from qwen35_tune.data.render_media import place_media

    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a.png"}},
                                             {"type": "text", "text": "What?"}]}]
    placed = place_media(messages, 1, 0)[0]["content"]
    assert [p["type"] for p in placed] == ["image", "text"]  # one image part, not one more prepended


def test_failed_builds_still_write_data_stats_and_say_where(tmp_path, tiny_tokenizer):
    from qwen35_tune.data.build import build_datasets

    (tmp_path / "rows.jsonl").write_text(json.dumps({"prompt": None, "completion": "a"}) + "\n")
    recipe = load_recipe(_card_recipe(tmp_path, "rows.jsonl", bad=1.0))
    with pytest.raises(UserError) as info:
        build_datasets(recipe, tiny_tokenizer, tmp_path)
    message = str(info.value)
    assert "no training rows left" in message and "c: 1 rows (1 bad)" in message
    stats = json.loads((tmp_path / "data_stats.json").read_text())
    assert str(tmp_path / "data_stats.json") in message and stats["cards"][0]["bad"] == {"'prompt' is null": 1}
    assert str(tmp_path / "quarantine.jsonl") in message and (tmp_path / "quarantine.jsonl").read_text()
    with pytest.raises(UserError) as info:  # without a run folder, nothing is promised on disk
        build_datasets(recipe, tiny_tokenizer, None)
    assert "data_stats.json" not in str(info.value) and "c: 1 rows (1 bad)" in str(info.value)


def test_a_card_over_its_bad_fraction_writes_stats_and_names_the_quarantine(tmp_path, tiny_tokenizer):
    from qwen35_tune.data.build import build_datasets

    (tmp_path / "rows.jsonl").write_text(json.dumps(GOOD) + "\n" + "{bad\n")
    recipe = load_recipe(_card_recipe(tmp_path, "rows.jsonl", bad=0.1))
    with pytest.raises(UserError, match=re.escape(f"are in {tmp_path / 'quarantine.jsonl'}")):
        build_datasets(recipe, tiny_tokenizer, tmp_path)
    stats = json.loads((tmp_path / "data_stats.json").read_text())
    assert "max_bad_fraction" in stats["error"] and stats["cards"][0]["rows"] == 2


def test_integers_too_long_to_convert_are_bad_rows(tmp_path):
    huge = "9" * 5000  # past Python's 4300-digit limit: json raises ValueError, not JSONDecodeError
    (tmp_path / "rows.jsonl").write_text('{"prompt": "q", "completion": "a", "n": ' + huge + "}\n"
                                         + json.dumps(GOOD) + "\n")
    got = _reasons(tmp_path / "rows.jsonl")
    assert got[0][0] == 1 and "Exceeds the limit (4300 digits)" in got[0][1] and got[1] == (2, GOOD)
    (tmp_path / "rows.json").write_text(f'[{huge}, {{"n": {huge}}}, "{huge}", ' + json.dumps(GOOD) + "]")
    got = _reasons(tmp_path / "rows.json")
    assert [n for n, _ in got] == [1, 2, 3, 4] and "4300 digits" in got[0][1] and "4300 digits" in got[1][1]
    assert got[2:] == [(3, "row is not a JSON object"), (4, GOOD)]
    tools = '[{"x": ' + huge + "}]"
    with pytest.raises(BadRow, match="'tools' is a string but not valid JSON"):
        normalise_row({**GOOD, "tools": tools}, "prompt_completion")


@pytest.mark.parametrize("text", ["lone \ud800 high", "lone \udfff low"])
def test_lone_surrogates_are_bad_rows_and_quarantine_stays_json(tmp_path, tiny_tokenizer, text):
    from qwen35_tune.data.build import build_datasets

    with pytest.raises(BadRow, match="lone surrogate"):
        normalise_row({"prompt": text, "completion": "a"}, "prompt_completion")
    args = {text: "v"}  # in a key, which the template writes too
    row = {"messages": [{"role": "user", "content": "q"},
                        {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": args}]}]}
    with pytest.raises(BadRow, match="lone surrogate"):
        normalise_row(row, "messages")
    escaped = json.dumps({"prompt": text, "completion": "a"})  # JSON's \ud800 escape, as files hold it
    (tmp_path / "rows.jsonl").write_text(escaped + "\n" + json.dumps(GOOD) + "\n")
    build_datasets(load_recipe(_card_recipe(tmp_path, "rows.jsonl")), tiny_tokenizer, tmp_path)
    record = json.loads((tmp_path / "quarantine.jsonl").read_text())
    assert record["raw"]["prompt"] == text and "lone surrogate" in record["reason"]


@pytest.mark.parametrize(("images", "reason"), [
    ([{"bytes": "not bytes"}], "'images' entry 0 is a dict, not a path, URI or image"),
    (["a.png", 3], "'images' entry 1 is a int, not a path, URI or image"),
    ([["a.png"]], "'images' entry 0 is a list"),
    (["a.png"] * 257, "'images' lists 257 entries, more than 256 per row"),
])
def test_media_columns_hold_references_only(images, reason):
    with pytest.raises(BadRow, match=re.escape(reason)):
        normalise_row({**GOOD, "images": images}, "prompt_completion")


def test_a_parquet_row_holding_too_much_text_is_a_bad_row(tmp_path, monkeypatch):
    """Parquet and Hub rows have no line to measure: their strings are counted as the row is checked."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import qwen35_tune.data.row_limits as row_limits

    monkeypatch.setattr(row_limits, "MAX_ROW_BYTES", 1000)
    pq.write_table(pa.table({"prompt": ["q", "x" * 2000], "completion": ["a", "b"]}), tmp_path / "rows.parquet")
    got = _reasons(tmp_path / "rows.parquet")
    assert got == [(1, {"prompt": "q", "completion": "a"}), (2, "row holds more than 0 MiB of text")]
