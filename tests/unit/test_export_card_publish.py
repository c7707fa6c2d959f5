"""Model card metadata from the run (validated locally), adapter-only export, publish --dry-run file list, and the
token never reaching a file or the output. No network, no forward pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen35_tune.cli import main
from qwen35_tune.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SECRET = "hf_THIS_IS_A_SECRET_TOKEN_123"


@pytest.fixture
def adapter_run(tmp_path, monkeypatch) -> Path:
    """A run directory with a (fake but well-formed) adapter, the resolved tiny recipe and a summary."""
    import torch
    from safetensors.torch import save_file

    from qwen35_tune.recipe import load_recipe

    monkeypatch.setenv("HF_TOKEN", SECRET)
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    save_file({"base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight": torch.zeros(4, 64)},
              str(run / "adapter" / "adapter_model.safetensors"))
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    (run / "adapter" / "tokenizer.json").write_text("{}")
    recipe = load_recipe(REPO / "recipes" / "tiny" / "sft_lora.yaml", ["export.license=apache-2.0"])
    (run / "recipe.yaml").write_text(recipe.to_yaml())
    (run / "summary.json").write_text(json.dumps({"name": "tiny-sft-lora", "steps": 30, "final_loss": 0.7,
                                                  "first_loss": 3.1, "hardware": "x86_64"}))
    base = tmp_path / "base"
    base.mkdir()
    (run / "run.json").write_text(json.dumps({"base_model": "Qwen/Qwen3.5-9B", "base_path": str(base),
                                              "method": "lora", "weights": "adapter"}))
    return run


def test_adapter_only_export_has_a_valid_card_from_the_data_cards(adapter_run):
    from huggingface_hub import ModelCard

    from qwen35_tune.export.card import check_card

    assert main(["merge", str(adapter_run), "--adapter-only"]) == 0
    out = adapter_run / "adapter_export"
    card = ModelCard.load(out / "README.md")
    assert check_card(card) == []
    data = card.data
    assert data.base_model == "Qwen/Qwen3.5-9B" and data.base_model_relation == "adapter"
    assert data.library_name == "peft" and data.license == "apache-2.0" and data.pipeline_tag == "text-generation"
    assert data.language == ["en", "fr"] and "lora" in data.tags  # data_cards/tiny_chat.yaml languages
    assert "tiny_chat" in card.text and "final loss | 0.7" in card.text and "name: tiny-sft-lora" in card.text
    assert (out / "adapter_model.safetensors").exists() and (out / "tokenizer.json").exists()


def test_publish_dry_run_lists_exactly_the_folder_and_the_token_appears_nowhere(adapter_run, capsys):
    assert main(["-v", "merge", str(adapter_run), "--adapter-only"]) == 0
    out = adapter_run / "adapter_export"
    (out / ".cache").mkdir()
    (out / ".cache" / "junk.lock").write_text("x")
    merge_output = capsys.readouterr()
    assert main(["-v", "publish", str(out), "--repo", "me/tiny-adapter", "--dry-run"]) == 0
    printed = capsys.readouterr()
    listed = [line.split()[-1] for line in printed.out.splitlines() if line.strip() and "dry run" not in line]
    expected = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert "README.md" in expected and "adapter_model.safetensors" in expected
    assert listed == expected
    assert f"{len(expected)} files would be uploaded to me/tiny-adapter" in printed.out
    assert SECRET not in printed.out + printed.err + merge_output.out + merge_output.err
    for path in adapter_run.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_card_check_rejects_bad_metadata():
    from huggingface_hub import ModelCard, ModelCardData

    from qwen35_tune.export.card import check_card

    data = ModelCardData(base_model="not a repo", base_model_relation="derived", license=None,
                         pipeline_tag="text-to-image", language=["English"], datasets=["local.jsonl"])
    problems = check_card(ModelCard(f"---\n{data.to_yaml()}\n---\n# x\n"))
    assert len(problems) == 6, problems


def test_publish_refuses_bad_repo_ids_and_folders_without_weights(tmp_path):
    from qwen35_tune.export.publish import publish_folder

    with pytest.raises(UserError, match="not a hub repo id"):
        publish_folder(tmp_path, "no-slash", dry_run=True)
    with pytest.raises(UserError, match="no safetensors weights"):
        publish_folder(tmp_path, "me/x", dry_run=True)
    assert main(["publish", str(tmp_path), "--repo", "me/x", "--dry-run"]) == 2


def test_adapter_keys_without_base_tensor_are_an_error(tmp_path):
    import torch
    from safetensors.torch import save_file

    from qwen35_tune.export.adapter_map import AdapterPlan

    save_file({"base_model.model.model.layers.0.nope.lora_A.weight": torch.zeros(4, 8),
               "base_model.model.model.layers.0.nope.lora_B.weight": torch.zeros(8, 4)},
              str(tmp_path / "adapter_model.safetensors"))
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    with pytest.raises(UserError, match="model.layers.0.nope"):
        AdapterPlan(tmp_path, {"model.layers.0.other.weight": (8, 8)})


def _export_folder(folder: Path, manifest: dict | None) -> Path:
    """A folder shaped like a merge output (weights, config, card), with ``manifest`` as its export_manifest.json."""
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "README.md"):
        (folder / name).write_text("{}")
    if manifest is not None:
        (folder / "export_manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(("name", "manifest", "says"), [
    ("merged", {"method": "lora", "verified": False}, "says the export was not verified"),
    ("merged.unverified", {"method": "lora", "verified": False}, "did not pass verification"),
    ("merged.unverified", None, "did not pass verification"),
])  # fmt: skip
def test_publish_refuses_an_export_that_was_not_verified(tmp_path, capsys, name, manifest, says):
    folder = _export_folder(tmp_path / name, manifest)
    assert main(["publish", str(folder), "--repo", "me/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert says in err and "qwen35-tune merge RUN_DIR" in err and "Traceback" not in err, err


def test_publish_takes_a_verified_export_or_a_folder_merge_did_not_write(tmp_path, capsys):
    verified = _export_folder(tmp_path / "merged", {"method": "lora", "verified": True})
    downloaded = _export_folder(tmp_path / "some-model", None)
    for folder in (verified, downloaded):
        assert main(["publish", str(folder), "--repo", "me/x", "--dry-run"]) == 0


def test_push_to_hub_of_an_unverified_merge_is_a_recipe_error():
    from qwen35_tune.errors import RecipeError
    from qwen35_tune.recipe import load_recipe

    push = ["export.push_to_hub=true", "export.hub_repo_id=me/x", "export.verify=false"]
    with pytest.raises(RecipeError, match="export.verify: push_to_hub uploads only a verified merge"):
        load_recipe(REPO / "recipes" / "tiny" / "sft_lora.yaml", push)
    load_recipe(REPO / "recipes" / "tiny" / "sft_lora.yaml", [*push, "export.adapter_only=true"])  # no merge to verify
