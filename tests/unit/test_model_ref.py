"""`validate` tells at once when model.name_or_path cannot be loaded here (a missing folder, a folder that is not a
checkpoint, an impossible Hub id, a Hub id offline and not cached), at the recipe line, with what to do; other
commands do not check (they may never load the model, or read a run's recipe on another machine)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from huggingface_hub import constants

from qwen35_tune.cli import main
from qwen35_tune.recipe import RecipeError, load_recipe
from qwen35_tune.recipe.model_ref import model_ref_problem

FIXTURES = Path(__file__).parent / "fixtures"
BASE = FIXTURES / "recipes" / "base.yaml"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache, offline; cache(repo_id) adds a repo's config.json the way huggingface_hub stores it."""
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def cache(repo_id: str, ref: str = "main") -> None:
        repo = root / f"models--{repo_id.replace('/', '--')}"
        (repo / "snapshots" / COMMIT).mkdir(parents=True)
        (repo / "snapshots" / COMMIT / "config.json").write_text("{}")
        (repo / "refs").mkdir()
        (repo / "refs" / ref).write_text(COMMIT)

    return cache


def test_a_missing_folder(tmp_path):
    assert "folder not found: " in model_ref_problem(str(tmp_path / "nope" / "model"))
    assert "folder not found: ./checkpoints/x" in model_ref_problem("./checkpoints/x")
    assert "folder not found" in model_ref_problem("~/no/such/checkpoint")


def test_a_folder_that_is_not_a_checkpoint(tmp_path):
    assert "has no config.json" in model_ref_problem(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert model_ref_problem(str(tmp_path)) is None
    assert "is a file" in model_ref_problem(str(tmp_path / "config.json"))


@pytest.mark.parametrize("name", ["not a/valid id", "org/name with space", "a--b/c", "ends-with-dot./x."])
def test_an_impossible_hub_id(name):
    assert "neither an existing folder nor a valid Hub id" in model_ref_problem(name)


def test_tiny_models_are_built_here():
    assert model_ref_problem("tiny://moe") is None


def test_offline_a_hub_id_must_be_cached(hub_cache):
    problem = model_ref_problem("Qwen/Qwen3.5-9B")
    assert "not in the local Hugging Face cache" in problem and "hf download Qwen/Qwen3.5-9B" in problem
    hub_cache("Qwen/Qwen3.5-9B")
    assert model_ref_problem("Qwen/Qwen3.5-9B") is None
    assert "at revision 'v2'" in model_ref_problem("Qwen/Qwen3.5-9B", revision="v2")


def test_online_an_uncached_hub_id_is_left_to_the_hub(hub_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert model_ref_problem("Qwen/Qwen3.5-9B") is None


def test_load_recipe_checks_only_when_asked(hub_cache, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"extends: {BASE}\nmodel:\n  name_or_path: Qwen/Qwen3.5-9B\n")
    assert load_recipe(recipe).model.name_or_path == "Qwen/Qwen3.5-9B"  # plan, launch, eval of a run: no check
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, check_model=True)
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.key) == (str(recipe), 3, "model.name_or_path")


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model.name_or_path=/no/such/checkpoint", "folder not found: /no/such/checkpoint"),
        ("model.name_or_path=Qwen/Qwen3.5-9B", "not in the local Hugging Face cache"),
        ("model.name_or_path=Qwen//Qwen3.5", "folder not found"),
    ],
)
def test_validate_exits_2_naming_the_key(hub_cache, capsys, override, words):
    assert main(["validate", str(BASE), override]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"<override> model\.name_or_path: .*{re.escape(words)}", err), err
    assert f"in override '{override}'" in err and "Traceback" not in err


def test_validate_passes_a_cached_hub_id(hub_cache, capsys):
    hub_cache("Qwen/Qwen3.5-9B")
    assert main(["validate", str(BASE), "model.name_or_path=Qwen/Qwen3.5-9B"]) == 0
