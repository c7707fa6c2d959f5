"""export.push_to_hub at the end of train: the verified merged folder goes to export.hub_repo_id (private as set)
through huggingface_hub, with the upload functions replaced (no network), and the token lands in no written file."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.cli import main
from qwen35_tune.errors import RecipeError
from qwen35_tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes/tiny/sft_lora.yaml"
SECRET = "hf_PUSH_TEST_SECRET_TOKEN_987"
pytestmark = pytest.mark.smoke


def test_train_pushes_the_merged_folder_and_never_writes_the_token(tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_TOKEN", SECRET)
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw["repo_id"], kw)))
    run = tmp_path / "run"
    argv = ["train", str(RECIPE), "--output-dir", str(run), "train.max_steps=2", "train.max_length=128",
            "train.per_device_train_batch_size=4", "data.cards.0.eval_fraction=0", "export.push_to_hub=true",
            "export.hub_repo_id=someone/tiny-qwen", "export.private=false"]
    assert main(argv) == 0
    assert [c[:2] for c in calls] == [("create", "someone/tiny-qwen"), ("upload", "someone/tiny-qwen")]
    assert calls[0][2]["private"] is False
    assert Path(calls[1][2]["folder_path"]) == run / "merged"
    assert (run / "merged_verify.json").exists()  # pushed only after verification
    assert "published: https://huggingface.co/someone/tiny-qwen" in capsys.readouterr().out
    written = [p for p in run.rglob("*") if p.is_file()]
    assert written and not [p for p in written if SECRET.encode() in p.read_bytes()]


def test_push_without_merge_or_repo_is_a_recipe_error():
    with pytest.raises(RecipeError, match="export.merge: true"):
        load_recipe(RECIPE, ["export.merge=false", "export.push_to_hub=true", "export.hub_repo_id=a/b"])
    with pytest.raises(RecipeError, match="needs hub_repo_id"):
        load_recipe(RECIPE, ["export.push_to_hub=true"])
