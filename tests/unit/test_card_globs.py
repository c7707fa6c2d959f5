"""A card's source globs never search forever and read each file once: '**' over a folder linked into itself is an
error at validate time (glob would list it 40 levels deep, or exponentially with two links), a folder reached through
a link is fine, and a file matched twice (two patterns, or a link) gives its rows once."""

from __future__ import annotations

import json

import pytest

from qwen35_tune.cards import load_card
from qwen35_tune.data.sources import iter_card_rows
from qwen35_tune.errors import UserError


def _card(tmp_path, paths: str):
    (tmp_path / "c.yaml").write_text(f"name: c\nlicense: mit\nformat: prompt_completion\nsource: {{path: {paths}}}\n")
    return tmp_path / "c.yaml"


@pytest.fixture
def data(tmp_path):
    (tmp_path / "data" / "v3").mkdir(parents=True)
    (tmp_path / "data" / "v3" / "rows.jsonl").write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    return tmp_path / "data"


@pytest.mark.parametrize("links", [["a"], ["a", "b"]])  # one loop: 41 copies of each file; two: a search without end
def test_a_link_loop_under_a_double_star_is_an_error_not_a_hang(tmp_path, data, links):
    for name in links:
        (data / "v3" / name).symlink_to(data)
    with pytest.raises(UserError, match=r"source\.path: .*leads back to .*data, a folder it is in, so '\*\*' would "
                                        r"search it forever"):
        load_card(_card(tmp_path, "data/**/*.jsonl"))
    assert load_card(_card(tmp_path, "data/v3/*.jsonl")).source_files() == [data / "v3" / "rows.jsonl"]


def test_links_without_loops_are_followed_and_each_file_read_once(tmp_path, data):
    (data / "latest").symlink_to(data / "v3")
    card = load_card(_card(tmp_path, "['data/**/*.jsonl', data/v3/rows.jsonl]"))
    assert card.source_files() == [data / "latest" / "rows.jsonl"]  # one path per real file
    assert len(list(iter_card_rows(card))) == 1


def test_too_many_folders_to_search_is_an_error(tmp_path, data, monkeypatch):
    import qwen35_tune.cards.globs as globs

    for i in range(6):
        (data / f"d{i}").mkdir()
    monkeypatch.setattr(globs, "MAX_SEARCHED_FOLDERS", 5)
    with pytest.raises(UserError, match=r"'\*\*' would search more than 5 folders"):
        load_card(_card(tmp_path, "data/**/*.jsonl"))


def test_a_folder_named_like_a_data_file_is_not_read(tmp_path, data):
    (data / "odd.jsonl").mkdir()
    card = load_card(_card(tmp_path, "data/**/*.jsonl"))
    assert [file for file, _, _ in iter_card_rows(card)] == [str(data / "v3" / "rows.jsonl")]
