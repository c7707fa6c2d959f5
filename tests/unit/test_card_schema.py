"""Data cards: one way to say each thing; sources resolved and checked; problems at the card's file:line."""

from pathlib import Path

import pytest

from qwen35_tune.cards import DataCard, HubSource, LocalSource, load_card
from qwen35_tune.errors import RecipeError

FIXTURES = Path(__file__).parent / "fixtures"
CARDS = FIXTURES / "cards"


@pytest.fixture(autouse=True)
def _in_fixtures(monkeypatch):
    monkeypatch.chdir(FIXTURES)


def problems(path):
    with pytest.raises(RecipeError) as info:
        load_card(path)
    assert str(info.value).splitlines()[0].endswith("in the data card:")
    return info.value.problems


def test_local_card_resolves_source_against_the_card_file():
    card = load_card("cards/chat.yaml")
    assert isinstance(card.source, LocalSource)
    assert card.source_paths == [str(CARDS / "data" / "chat.jsonl")]
    assert card.source_files() == [CARDS / "data" / "chat.jsonl"]
    assert card.languages == ["en", "no"]  # YAML 1.2: `no` is a string
    assert card.license == "apache-2.0" and card.format == "messages" and card.max_bad_fraction == 0.05


def test_hub_card():
    card = load_card(CARDS / "hub.yaml")
    assert isinstance(card.source, HubSource)
    assert (card.source.hub, card.source.split, card.source.streaming) == (
        "HuggingFaceH4/ultrachat_200k",
        "train_sft",
        False,
    )
    assert card.source_paths == [] and card.columns == {"messages": "messages"}


def test_bad_key_reports_card_file_and_line():
    found = problems("cards/bad_key.yaml")
    assert [str(p) for p in found] == [
        "cards/bad_key.yaml:1 license: required key is missing",
        "cards/bad_key.yaml:2 licence: unknown key (did you mean 'license'?)",
    ]


def test_missing_source_file_is_a_problem_at_source_path():
    [problem] = problems("cards/missing_source.yaml")
    assert (problem.file, problem.line, problem.key) == ("cards/missing_source.yaml", 4, "source.path")
    assert "no file matches" in problem.message and "data/nowhere.jsonl" in problem.message


def test_path_and_hub_together_is_a_problem():
    [problem] = problems("cards/both_sources.yaml")
    assert (problem.line, problem.key) == (3, "source") and "either 'path'" in problem.message


def test_typo_in_source_gets_a_suggestion(tmp_path):
    card = tmp_path / "c.yaml"
    card.write_text("name: c\nlicense: mit\nsource:\n  pth: x.jsonl\n")
    found = {(p.line, p.key, p.message) for p in problems(card)}
    assert (4, "source.pth", "unknown key (did you mean 'path'?)") in found


def test_globs_and_extensions(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("x\n")
    (tmp_path / "notes.xml").write_text("x\n")
    good = tmp_path / "good.yaml"
    good.write_text("name: g\nlicense: mit\nsource:\n  path: ['*.jsonl']\n")
    assert [f.name for f in load_card(good).source_files()] == ["a.jsonl", "b.jsonl"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: g\nlicense: mit\nsource:\n  path: notes.xml\n")
    [problem] = problems(bad)
    assert problem.key == "source.path" and "'notes.xml' is not one of .jsonl" in problem.message
    # plain text is a source of format: text only (continued pretraining); a chat card is told so
    bad.write_text("name: g\nlicense: mit\nsource:\n  path: notes.txt\n")
    [problem] = problems(bad)
    assert problem.key == "source.path" and "'notes.txt' is plain text, which only format: text" in problem.message
    text = tmp_path / "text.yaml"
    text.write_text("name: g\nlicense: mit\nformat: text\nsource:\n  path: notes.txt\n")
    assert [f.name for f in load_card(text).source_files()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ("format: chatml", "format", "expected one of 'messages'"),
        ("max_bad_fraction: 2", "max_bad_fraction", "must be at most 1"),
        ("license: MIT License", "license", "must be a license id"),
        ("languages: en", "languages", "expected a list"),
    ],
)
def test_field_checks(tmp_path, line, key, words):
    base = ["name: c", "license: mit", f"source: {{path: {CARDS / 'data' / 'chat.jsonl'}}}"]
    card = tmp_path / "c.yaml"
    card.write_text("\n".join([*(b for b in base if not b.startswith(key + ":")), line]) + "\n")
    [problem] = problems(card)
    assert (problem.line, problem.key) == (len(card.read_text().splitlines()), key) and words in problem.message


def test_every_field_is_described_and_strict():
    from qwen35_tune.recipe import Recipe
    from qwen35_tune.recipe import schema as rs

    for model in (DataCard, LocalSource, HubSource, Recipe, rs.ModelSection, rs.MethodSection, rs.LoraSection,
                  rs.QuantSection, rs.DataSection, rs.CardRef, rs.ChatSection, rs.TrainSection, rs.TrackingSection,
                  rs.ExportSection):  # fmt: skip
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
        assert model.model_config["extra"] == "forbid" and model.model_config["frozen"] is True
