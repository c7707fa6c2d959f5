"""QLoRA merge targets on the tiny dense model: the dequantised-base merge reproduces the trained 4-bit+adapter model
(and is verified against it), the original-base merge keeps untouched 16-bit weights and differs by the quantisation
error; the streamed dequantisation equals what bitsandbytes holds in the loaded 4-bit model."""

from __future__ import annotations

import json

import pytest

from qwen35_tune.cli import main
from tests.smoke.export_kit import load_tensors, make_adapter_run, resave_base

pytestmark = pytest.mark.smoke
pytest.importorskip("bitsandbytes")

QUANT = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
         "bnb_4bit_compute_dtype": "float32"}


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_dense):
    """A qlora run directory (random non-zero adapter) on a 2-shard fp32 base with mtp.* tensors."""
    import yaml

    tmp = tmp_path_factory.mktemp("qlora")
    base = resave_base(tiny_dense, tmp / "base", shards=2)
    run = make_adapter_run(base, tmp / "run", target_modules=["q_proj", "in_proj_qkv", "down_proj"])
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "method": "qlora"}))
    recipe = {"model": {"dtype": "float32"}, "method": {"kind": "qlora", "quantization": QUANT}, "export": {}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["merge", str(run)]) == 0  # default target: dequantized, verified against the 4-bit model
    assert main(["merge", str(run), "--qlora-base", "original", "--out", str(run / "merged-original")]) == 0
    return base, run


def test_default_merges_into_the_dequantized_base_and_matches_the_4bit_model(qlora_run):
    base, run = qlora_run
    manifest = json.loads((run / "merged" / "export_manifest.json").read_text())
    assert manifest["qlora_merge_base"] == "dequantized"
    report = json.loads((run / "merged_verify.json").read_text())
    assert report["atol"] == 1e-4 and report["max_abs_logit_diff"] <= 1e-4 and report["problems"] == []
    before, after = load_tensors(base), load_tensors(run / "merged")
    touched = set(manifest["touched"])
    assert report["expected_changed"] == len(touched) == report["changed"]  # each checked tensor by tensor
    # every quantised Linear weight changed (dequantised), lm_head / norms / mtp.* / fp32 GDN params byte-identical
    assert "model.layers.0.mlp.up_proj.weight" in touched and "lm_head.weight" not in touched
    for key, tensor in before.items():
        assert after[key].equal(tensor) != (key in touched), key


def test_original_target_keeps_16bit_weights_and_is_further_from_the_trained_model(qlora_run):
    base, run = qlora_run
    out = run / "merged-original"
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert manifest["qlora_merge_base"] == "original"
    before, after = load_tensors(base), load_tensors(out)
    assert after["model.layers.0.mlp.up_proj.weight"].equal(before["model.layers.0.mlp.up_proj.weight"])
    assert set(manifest["touched"]) == {k for k in before if k.endswith(("q_proj.weight", "in_proj_qkv.weight",
                                                                       "down_proj.weight")) and "mtp." not in k}
    original = json.loads((run / "merged-original_verify.json").read_text())
    dequantized = json.loads((run / "merged_verify.json").read_text())
    assert original["expected_changed"] == len(manifest["touched"])  # base + peft's delta, tensor by tensor
    assert original["atol"] is None  # logits reported, not enforced: this merge is knowingly not the trained model
    assert original["max_abs_logit_diff"] > 100 * dequantized["max_abs_logit_diff"]


def test_streamed_dequantization_equals_the_loaded_4bit_weights(qlora_run):
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    from qwen35_tune.export.qlora import Dequantizer, quantized_reference
    from qwen35_tune.rundir import RunDir

    base, run = qlora_run
    view = RunDir(run).view
    dequantizer, tensors = Dequantizer(base, view.quantization, view.dtype), load_tensors(base)
    model = quantized_reference(RunDir(run), base)
    layers = {n.removeprefix("base_model.model.").replace(".base_layer", ""): m for n, m in model.named_modules()
              if isinstance(m, bnb.nn.Linear4bit)}
    assert len(layers) == len(dequantizer.specs) == 31
    for name, module in layers.items():
        expected = dequantize_4bit(module.weight.data, module.weight.quant_state)
        assert dequantizer(f"{name}.weight", tensors[f"{name}.weight"]).equal(expected), name
    assert dequantizer("lm_head.weight", tensors["lm_head.weight"]) is None


def test_a_wrongly_dequantized_tensor_fails_verification(qlora_run, tmp_path):
    """Not adapted, only dequantised: it must still equal bitsandbytes' dequantisation of what training held."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from qwen35_tune.errors import UserError
    from qwen35_tune.export.verify import verify_export

    base, run = qlora_run
    bad = tmp_path / "bad"
    shutil.copytree(run / "merged", bad)
    key = "model.layers.0.mlp.up_proj.weight"
    index = json.loads((bad / "model.safetensors.index.json").read_text())["weight_map"]
    tensors = load_file(bad / index[key])
    tensors[key] = load_tensors(base)[key]  # the original weight: the 4-bit round trip skipped
    save_file(tensors, str(bad / index[key]), metadata={"format": "pt"})
    with pytest.raises(UserError, match=rf"{key}: differs from the expected value by up to"):
        verify_export(bad, base, run_dir=run)
    assert torch.equal(tensors[key], load_tensors(base)[key])
