"""Streaming export of tiny Qwen3.5 bases saved like real checkpoints (mtp.* tensors, fp32 GDN params, bf16, shards):
every tensor kept in the base layout, merges match the adapter model, verification catches corrupted folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qwen35_tune.cli import main
from qwen35_tune.errors import UserError
from tests.smoke.export_kit import load_tensors, make_adapter_run, resave_base

pytestmark = pytest.mark.smoke

DENSE_TARGETS = ["q_proj", "in_proj_qkv", "out_proj", "gate_proj", "down_proj"]


def _merged(tmp: Path, kind: str, base: Path, shards: int, dtype: str = "float32", **lora) -> tuple[Path, Path]:
    base = resave_base(base, tmp / f"{kind}-base", dtype=dtype, shards=shards)
    run = make_adapter_run(base, tmp / f"{kind}-run", base_model="Qwen/Qwen3.5-9B", **lora)
    assert main(["merge", str(run)]) == 0
    return base, run


@pytest.fixture(scope="module")
def dense(tmp_path_factory, tiny_dense):
    return _merged(tmp_path_factory.mktemp("dense"), "dense", tiny_dense, shards=3, target_modules=DENSE_TARGETS)


@pytest.fixture(scope="module")
def moe(tmp_path_factory, tiny_moe):
    experts = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    return _merged(tmp_path_factory.mktemp("moe"), "moe", tiny_moe, shards=2, target_modules=["q_proj"],
                   target_parameters=experts)


@pytest.fixture(scope="module")
def vision(tmp_path_factory, tiny_vision):
    return _merged(tmp_path_factory.mktemp("vision"), "vision", tiny_vision, shards=1, dtype="bfloat16",
                   target_modules=r".*language_model.*\.(q_proj|in_proj_z|up_proj)")


def test_multi_shard_base_gives_multi_shard_output_with_correct_index(dense):
    base, run = dense
    out = run / "merged"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    base_index = json.loads((base / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == base_index["weight_map"] and len(set(index["weight_map"].values())) == 3
    tensors = load_tensors(out)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    for key, file in index["weight_map"].items():  # each key really lives in the shard the index names
        from safetensors import safe_open

        with safe_open(out / file, "pt") as f:
            assert key in f.keys()


def test_dense_merge_keeps_mtp_and_untouched_tensors_and_matches_adapter(dense):
    base, run = dense
    before, after = load_tensors(base), load_tensors(run / "merged")
    assert set(before) == set(after) and any(k.startswith("mtp.") for k in after)
    touched = set(json.loads((run / "merged" / "export_manifest.json").read_text())["touched"])
    assert touched and all(any(f".{t}.weight" in k for t in DENSE_TARGETS) for k in touched)
    for key, tensor in before.items():
        assert after[key].dtype == tensor.dtype
        assert after[key].equal(tensor) != (key in touched), key
    report = json.loads((run / "merged_verify.json").read_text())
    assert report["max_abs_logit_diff"] <= 1e-4 and report["problems"] == []
    assert report["loaded_class"] == "Qwen3_5ForCausalLM" and report["generation"]


def test_moe_routed_expert_adapters_merge_into_per_expert_tensors(moe):
    base, run = moe
    before, after = load_tensors(base), load_tensors(run / "merged")
    experts = [k for k in before if ".mlp.experts." in k]
    assert experts and all(not after[k].equal(before[k]) for k in experts)  # gate, up and down of every expert
    assert all(after[k].equal(before[k]) for k in before if "shared_expert" in k or k.startswith("mtp."))
    report = json.loads((run / "merged_verify.json").read_text())
    assert report["max_abs_logit_diff"] <= 1e-4


def test_moe_expert_merge_equals_peft_merge(moe):
    """The per-expert split of the fused delta is peft's own merge, expert by expert (gate rows, then up rows)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, run = moe
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                      run / "adapter").merge_and_unload()
    fused = model.model.layers[1].mlp.experts
    after = load_tensors(run / "merged")
    half = fused.gate_up_proj.shape[1] // 2
    for e in (0, 7):
        prefix = f"model.layers.1.mlp.experts.{e}."
        assert torch.allclose(after[prefix + "gate_proj.weight"], fused.gate_up_proj[e, :half], atol=1e-6)
        assert torch.allclose(after[prefix + "up_proj.weight"], fused.gate_up_proj[e, half:], atol=1e-6)
        assert torch.allclose(after[prefix + "down_proj.weight"], fused.down_proj[e], atol=1e-6)


def test_vision_bf16_merge_keeps_layout_dtypes_and_vision_tower(vision):
    import torch

    base, run = vision
    out = run / "merged"
    before, after = load_tensors(base), load_tensors(out)
    assert set(before) == set(after)
    assert all(after[k].equal(before[k]) for k in before if k.startswith(("model.visual.", "mtp.")))
    assert {after[k].dtype for k in after if k.endswith("A_log")} == {torch.float32}
    assert after["model.language_model.layers.3.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert not after["model.language_model.layers.3.self_attn.q_proj.weight"].equal(
        before["model.language_model.layers.3.self_attn.q_proj.weight"])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen3_5ForConditionalGeneration"]
    assert (out / "processor_config.json").read_bytes() == (base / "processor_config.json").read_bytes()
    report = json.loads((run / "merged_verify.json").read_text())
    assert report["loaded_class"] == "Qwen3_5ForConditionalGeneration" and report["atol"] == 1e-4
    assert report["merged_vs_expected_logit_diff"] <= 1e-4 < report["rounding_logit_diff"]  # bf16: now enforced


def test_dora_merge_equals_peft_merge(tmp_path, tiny_dense):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from qwen35_tune.export.merge import merge_run

    base = resave_base(tiny_dense, tmp_path / "base")
    run = make_adapter_run(base, tmp_path / "run", target_modules=["q_proj", "down_proj"], use_dora=True)
    merge_run(run, verify=False)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                      run / "adapter").merge_and_unload()
    expected, after = model.state_dict(), load_tensors(run / "merged")
    for key in ("model.layers.3.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        assert torch.allclose(after[key], expected[key], atol=1e-5), key
        assert not after[key].equal(load_tensors(base)[key])


def test_full_fine_tune_export_carries_mtp_through(tmp_path, tiny_dense):
    import torch
    from transformers import AutoModelForCausalLM

    from qwen35_tune.export.merge import merge_run

    base = resave_base(tiny_dense, tmp_path / "base", dtype="bfloat16", shards=2)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(0.5)
    run = tmp_path / "run"
    model.save_pretrained(run / "model")  # transformers drops mtp.* here, as in a real full fine-tune
    shutil.copy(base / "tokenizer.json", run / "model")
    shutil.copy(base / "tokenizer_config.json", run / "model")
    (run / "run.json").write_text(json.dumps({"base_model": "tiny://dense", "base_path": str(base),
                                              "method": "full", "weights": "model"}))
    out = merge_run(run)
    before, after = load_tensors(base), load_tensors(out)
    assert set(after) == set(before) and after["mtp.fc.weight"].equal(before["mtp.fc.weight"])
    key = "model.layers.0.mlp.up_proj.weight"
    assert after[key].dtype == torch.bfloat16 and torch.allclose(after[key].float(), before[key].float() + 0.5,
                                                                 atol=0.05)


def test_verify_catches_corrupted_merges(dense, tmp_path, capsys):
    """Negative control: a changed untouched tensor, and a merged tensor that no longer gives the adapter's logits."""
    import torch
    from safetensors.torch import load_file, save_file

    from qwen35_tune.export.verify import verify_export

    base, run = dense
    bad = tmp_path / "bad"
    shutil.copytree(run / "merged", bad)
    index = json.loads((bad / "model.safetensors.index.json").read_text())["weight_map"]
    touched = json.loads((bad / "export_manifest.json").read_text())["touched"][0]
    for key, change in (("mtp.norm.weight", 1e-3), (touched, 0.05)):
        tensors = load_file(bad / index[key])
        tensors[key] = tensors[key] + change * torch.ones_like(tensors[key])
        save_file(tensors, str(bad / index[key]), metadata={"format": "pt"})
    with pytest.raises(UserError) as err:
        verify_export(bad, base, run_dir=run)
    message = str(err.value)
    assert "mtp.norm.weight: not changed by the adapter but differs from the base" in message
    assert f"{touched}: differs from the expected value by up to 0.05" in message
    assert "logits differ from the correctly rounded merge's" in message
    assert main(["verify", str(run / "merged"), "--base", str(base), "--run", str(run)]) == 0
    assert main(["verify", str(bad), "--base", str(base)]) == 2
    assert "mtp.norm.weight" in capsys.readouterr().err


def test_an_old_run_whose_recipe_this_version_refuses_still_merges(dense, tmp_path, caplog, capsys):
    """recipe.yaml from an older version: a bound tightened since (lora.r) and a data card gone. The merge warns naming
    them and runs with the recipe's export settings read alone (its license reaches the card); a refused key that
    export reads stops `merge` with exit 2 at its line, before anything is written."""
    import logging

    from huggingface_hub import ModelCard

    from qwen35_tune.export.merge import merge_run
    from qwen35_tune.recipe import load_recipe

    _, good = dense
    run = tmp_path / "run"
    shutil.copytree(good, run, ignore=shutil.ignore_patterns("merged*"))
    repo = Path(__file__).resolve().parents[2]
    text = load_recipe(repo / "recipes/tiny/sft_lora.yaml", ["export.license=apache-2.0"]).to_yaml()
    text = text.replace("  r: 16\n", "  r: 1000000\n").replace(str(repo / "data_cards"), "/gone/data_cards")
    (run / "recipe.yaml").write_text(text)
    with caplog.at_level(logging.WARNING):
        out = merge_run(run)
    assert "method.lora.r" in caplog.text and "data card not found" in caplog.text
    assert json.loads((out / "export_manifest.json").read_text())["verified"] is True
    assert ModelCard.load(out / "README.md").data.license == "apache-2.0"

    (run / "recipe.yaml").write_text(text.replace("  verify: true\n", "  verify: maybe\n"))
    shutil.rmtree(out)
    assert main(["merge", str(run)]) == 2
    err = capsys.readouterr().err
    assert "recipe.yaml:" in err and "export.verify" in err and "Correct them in" in err and "Traceback" not in err
    assert not out.exists() and not (run / "merged.unverified").exists()
