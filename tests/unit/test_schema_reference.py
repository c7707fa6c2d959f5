"""`qwen35-tune schema`: every field of every recipe and data-card model is shown with its description (and has
one), sections and keys are found the way users type them, unknown ones exit 2 with a did-you-mean, and
docs/recipe-keys.md is the command's current output."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from qwen35_tune.cards.schema import DataCard
from qwen35_tune.cli import main
from qwen35_tune.recipe.reference import EXTRA, extra_docs, key_docs, select
from qwen35_tune.recipe.reference_render import WIDTH, render
from qwen35_tune.recipe.schema import Recipe, TrainSection, extra_key_refused
from qwen35_tune.recipe.trainer_options import sft_arguments
from qwen35_tune.yaml_lines import StrictModel

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "recipe-keys.md"


def _models(annotation, seen: set) -> list[type[BaseModel]]:
    """Every pydantic model a type mentions, however nested (lists, unions, Annotated), each once."""
    found = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in seen:
        seen.add(annotation)
        found.append(annotation)
        for info in annotation.model_fields.values():
            found += _models(info.annotation, seen)
    for arg in typing.get_args(annotation):
        found += _models(arg, seen)
    return found


MODELS = _models(Recipe, set()) + _models(DataCard, set())
FIELDS = [(model, name, info) for model in MODELS for name, info in model.model_fields.items()]


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def listing() -> str:
    docs, focus = select(None)
    return render(docs, focus, "text", head=True)


def test_the_walk_reaches_every_section():
    names = {m.__name__ for m in MODELS}
    assert {"Recipe", "ModelSection", "VisionSection", "LoraSection", "QuantSection", "CardRef", "PartLearningRates",
            "DecontaminateSection", "EvalSection", "DataCard", "LocalSource", "HubSource"} <= names  # fmt: skip
    assert len(FIELDS) > 120

    def subclasses(cls):
        return {cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))}

    assert subclasses(StrictModel) - {StrictModel} <= set(MODELS), "a model no recipe or card reaches"


@pytest.mark.parametrize(("model", "name", "info"), FIELDS, ids=[f"{m.__name__}.{n}" for m, n, _ in FIELDS])
def test_every_field_has_a_description(model, name, info):
    assert info.description and len(info.description.split()) >= 2, (
        f"{model.__name__}.{name} has no description: give it Field(description=...) (qwen35-tune schema shows it)"
    )


def test_every_field_is_listed_with_its_description(listing):
    docs = key_docs()
    flat = _flat(listing)
    for model, name, info in FIELDS:
        matches = [d for d in docs if d.key.rsplit(".", 1)[-1] == name
                   and d.description == info.description]  # fmt: skip
        assert matches, f"{model.__name__}.{name} is missing from the reference"
        assert all(d.key in listing for d in matches)
        assert _flat(info.description) in flat, f"{model.__name__}.{name}: description not shown"
    assert len(docs) == len({d.key for d in docs})


def test_listing_fits_80_columns(listing):
    detail = render(*select(EXTRA), "text")
    for text in (listing, detail, render(*select("train.optim"), "text")):
        assert max(len(line) for line in text.splitlines()) <= WIDTH


def test_a_key_shows_type_default_bounds_and_its_library(capsys):
    assert main(["schema", "train.learning_rate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train.learning_rate\n") and "Peak learning rate." in out
    assert "float" in out and "0.0002" in out and "> 0, <= 1.0" in out and "TRL SFTConfig argument" in out
    assert "num_train_epochs" not in out  # one key, not its section


def test_library_enums_are_shown_for_the_keys_checked_against_them():
    (doc,), focus = select("train.lr_scheduler_type")
    assert focus is doc and set(doc.choices) == set(sft_arguments()["lr_scheduler_type"].choices)
    assert "cosine_with_min_lr" in render([doc], doc)


@pytest.mark.parametrize(("query", "key"), [
    ("data.cards.0.weight", "data.cards[].weight"), ("data.cards[1].path", "data.cards[].path"),
    ("chat.thinking", "chat.enable_thinking"), ("card.source.hub", "card.source.hub"), ("seed", "seed")])
def test_keys_are_found_as_users_write_them(query, key):
    docs, focus = select(query)
    assert focus is not None and focus.key == key and docs == [focus]


def test_a_section_shows_exactly_its_keys():
    docs, focus = select("method.lora")
    assert focus is None and docs[0].key == "method.lora"
    from qwen35_tune.recipe.schema import LoraSection

    assert [d.key for d in docs[1:]] == [f"method.lora.{name}" for name in LoraSection.model_fields]
    assert all(d.library == "peft LoraConfig argument" for d in docs[1:])
    cards, _ = select("data.cards")
    assert [d.key for d in cards] == ["data.cards", "data.cards[].path", "data.cards[].weight",
                                      "data.cards[].max_samples", "data.cards[].eval_fraction",
                                      "data.cards[].eval_split"]  # fmt: skip


def test_card_keys_say_which_source_form_they_belong_to():
    docs, _ = select("card.source")
    forms = {d.key: d.variant for d in docs}
    assert forms["card.source.path"] == "local" and forms["card.source.hub"] == "hub"
    assert forms["card.source.split"] == "hub"
    recipe_only, _ = select("recipe")
    assert not any(d.key.startswith("card") for d in recipe_only)
    card_only, _ = select("card")
    assert card_only[0].key == "card" and all(d.key.startswith("card") for d in card_only)


def test_own_keys_in_library_sections_are_marked():
    docs = {d.key: d for d in key_docs()}
    assert docs["train.packing_length"].library.startswith("qwen35-tune's own key")
    assert docs["train.extra"].library.startswith("qwen35-tune's own key")
    assert docs["train.max_length"].library == "TRL SFTConfig argument"
    assert docs["method.quantization.bnb_4bit_quant_type"].library == "BitsAndBytesConfig argument"
    assert "TRL SFTConfig arguments" in docs["train"].library and not docs["model.dtype"].library


@pytest.mark.parametrize(("query", "hint"), [("train.lr", "'train.learning_rate'"), ("trian", "'train'"),
                                             ("method.lora.rank", "'method.lora.r'"), ("sorce", "'card.source'"),
                                             ("train.extra.learning_rate", "set this as train.learning_rate"),
                                             ("train.extra.adam_beta", "'adam_beta1'")])  # fmt: skip
def test_unknown_key_exits_2_with_did_you_mean(query, hint, capsys):
    assert main(["schema", query]) == 2
    err = capsys.readouterr().err
    assert hint in err and "Traceback" not in err


def test_train_extra_lists_what_it_accepts_and_nothing_it_refuses(capsys):
    assert main(["schema", EXTRA]) == 0
    out = capsys.readouterr().out
    accepted = {d.key.rsplit(".", 1)[1] for d in extra_docs()}
    assert accepted == {name for name in sft_arguments() if extra_key_refused(name) is None}
    assert {"adam_beta1", "torch_compile", "logging_strategy"} <= accepted
    assert not accepted & (set(TrainSection.model_fields) | {"output_dir", "seed", "disable_tqdm"})
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line[2] != " "}
    assert listed == accepted
    assert main(["schema", f"{EXTRA}.adam_beta1"]) == 0
    one = capsys.readouterr().out
    assert "0.9" in one and "Adam" in one  # the library's own default and help text


def test_json_holds_every_key(capsys):
    assert main(["schema", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["key"] for d in data] == [d.key for d in key_docs()]
    weight = next(d for d in data if d["key"] == "data.cards[].weight")
    assert weight["default"] == 1.0 and ["<=", 1_000_000.0] in weight["bounds"]


def test_committed_markdown_reference_is_current():
    docs, focus = select(None)
    assert DOC.read_text() == render(docs, focus, "markdown"), (
        "docs/recipe-keys.md is stale: regenerate it with `qwen35-tune schema --format markdown > docs/recipe-keys.md`"
    )
    assert "| `train.learning_rate` | float | 0.0002 | > 0, <= 1.0 | Peak learning rate. |" in DOC.read_text()
