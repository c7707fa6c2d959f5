"""Merge verification proves the merge for bf16 bases (every real Qwen3.5 checkpoint): each tensor the adapter touches
equals base + adapter computed independently of the merge (peft on the trained model, transformers' own key mapping)
to one bf16 rounding step, every other tensor is byte-identical, and in fp32 the folder gives the logits of the
correctly rounded merge. Planted corruptions fail on dense, MoE (routed experts) and vision (tower targets too), and
`merge` then exits 2 naming the tensor and the size of the error, leaving no folder that looks verified."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qwen35_tune.cli import main
from qwen35_tune.errors import UserError
from qwen35_tune.export.merge import merge_run
from qwen35_tune.export.verify import verify_export
from tests.smoke.export_kit import make_adapter_run, resave_base

pytestmark = pytest.mark.smoke

VISION_TARGETS = r".*(language_model.*\.(q_proj|in_proj_z|up_proj)|visual\.blocks\.\d+\.(attn\.qkv|mlp\.linear_fc1))"


def _bf16_merge(tmp: Path, kind: str, tiny: Path, shards: int = 1, **lora) -> tuple[Path, Path]:
    base = resave_base(tiny, tmp / f"{kind}-base", dtype="bfloat16", shards=shards)
    run = make_adapter_run(base, tmp / f"{kind}-run", **lora)
    merge_run(run)  # verified: raises if the correct merge did not pass
    return base, run


@pytest.fixture(scope="module")
def dense(tmp_path_factory, tiny_dense):
    return _bf16_merge(tmp_path_factory.mktemp("dense"), "dense", tiny_dense, shards=2,
                       target_modules=["q_proj", "in_proj_qkv", "gate_proj", "down_proj"])


@pytest.fixture(scope="module")
def moe(tmp_path_factory, tiny_moe):
    return _bf16_merge(tmp_path_factory.mktemp("moe"), "moe", tiny_moe, target_modules=["q_proj"],
                       target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])


@pytest.fixture(scope="module")
def vision(tmp_path_factory, tiny_vision):
    return _bf16_merge(tmp_path_factory.mktemp("vision"), "vision", tiny_vision, target_modules=VISION_TARGETS)


def _touched(run: Path) -> list[str]:
    return json.loads((run / "merged" / "export_manifest.json").read_text())["touched"]


@pytest.mark.parametrize("kind", ["dense", "moe", "vision"])
def test_correct_bf16_merges_verify_tensor_by_tensor_and_in_fp32_logits(kind, request):
    base, run = request.getfixturevalue(kind)
    report = json.loads((run / "merged_verify.json").read_text())
    touched = _touched(run)
    assert report["problems"] == [] and report["atol"] == 1e-4 and "BF16" in report["dtypes"]
    assert report["expected_changed"] == len(touched) == report["changed"] > 0
    # The merged folder behaves exactly like the correctly rounded merge; its distance from the adapter model is
    # bf16 rounding, measured and reported (not a blanket tolerance).
    assert report["merged_vs_expected_logit_diff"] <= 1e-4 and report["expected_vs_trained_logit_diff"] <= 1e-4
    assert 1e-3 < report["rounding_logit_diff"] == pytest.approx(report["max_abs_logit_diff"], rel=1e-3)
    if kind == "moe":  # gate, up and down of every routed expert
        from tests.smoke.export_kit import load_tensors

        experts = {k for k in load_tensors(base) if ".mlp.experts." in k}
        assert experts and experts <= set(touched)
    if kind == "vision":
        assert any(k.startswith("model.visual.blocks.") for k in touched)


def _corrupt(run: Path, tmp_path: Path, change) -> Path:
    """A copy of the verified export with ``change(key, tensor)`` applied (None: leave the tensor)."""
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "bad"
    shutil.copytree(run / "merged", bad)
    for shard in sorted(bad.glob("*.safetensors")):
        tensors = load_file(shard)
        changed = {k: change(k, t) for k, t in tensors.items()}
        save_file({k: (t if changed[k] is None else changed[k].contiguous()) for k, t in tensors.items()}, str(shard),
                  metadata={"format": "pt"})
    return bad


def _random_like(tensor):
    import torch

    gen = torch.Generator().manual_seed(0)
    return (torch.randn(tensor.shape, generator=gen) * tensor.float().std()).to(tensor.dtype)


def _one_step_up(tensor):
    """Every value moved to its next bf16 neighbour (the smallest change a bf16 tensor can show)."""
    import torch

    return (tensor.view(torch.int16) + 1).view(torch.bfloat16)


def _with_nan(tensor):
    flat = tensor.clone().flatten()
    flat[7] = float("nan")
    return flat.view_as(tensor)


EXPERT = "model.layers.0.mlp.experts.2."
# model -> {key: (change(tensor, ctx), what the error must say about it)}; each key's check is independent of the
# others, so one corrupted folder per model shows every corruption caught on its own.
TOUCHED = "differs from the expected value by up to"
UNTOUCHED = "not changed by the adapter but differs from the base"
CORRUPTIONS = {
    "dense": {
        "model.layers.3.self_attn.q_proj.weight": (lambda t, ctx: _random_like(t), TOUCHED),  # the reported case
        "model.layers.0.mlp.down_proj.weight": (  # the delta applied twice
            lambda t, ctx: (2 * t.float() - ctx.base["model.layers.0.mlp.down_proj.weight"].float()).to(t.dtype),
            TOUCHED),
        "model.layers.2.linear_attn.in_proj_qkv.weight": (lambda t, ctx: _with_nan(t), TOUCHED),
        "model.layers.0.mlp.up_proj.weight": (lambda t, ctx: _one_step_up(t), UNTOUCHED),
    },
    "moe": {
        "model.layers.1.mlp.experts.5.up_proj.weight": (  # one routed expert left unmerged
            lambda t, ctx: ctx.base["model.layers.1.mlp.experts.5.up_proj.weight"], TOUCHED),
        EXPERT + "gate_proj.weight": (lambda t, ctx: ctx.merged[EXPERT + "up_proj.weight"], TOUCHED),  # gate/up
        EXPERT + "up_proj.weight": (lambda t, ctx: ctx.merged[EXPERT + "gate_proj.weight"], TOUCHED),  # swapped
        "model.layers.3.self_attn.q_proj.weight": (lambda t, ctx: _random_like(t), TOUCHED),
    },
    "vision": {
        "model.visual.blocks.1.attn.qkv.weight": (  # a vision-tower target left unmerged
            lambda t, ctx: ctx.base["model.visual.blocks.1.attn.qkv.weight"], TOUCHED),
        "model.language_model.layers.3.self_attn.q_proj.weight": (lambda t, ctx: _random_like(t), TOUCHED),
        "model.visual.blocks.0.norm1.weight": (lambda t, ctx: _one_step_up(t), UNTOUCHED),
    },
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_planted_corruptions_fail_verification(kind, request, tmp_path):
    from types import SimpleNamespace

    from tests.smoke.export_kit import load_tensors

    base, run = request.getfixturevalue(kind)
    ctx = SimpleNamespace(base=load_tensors(base), merged=load_tensors(run / "merged"))
    planted = CORRUPTIONS[kind]
    bad = _corrupt(run, tmp_path, lambda k, t: planted[k][0](t, ctx) if k in planted else None)
    with pytest.raises(UserError) as err:
        verify_export(bad, base, run_dir=run)
    lines = [line.strip() for line in str(err.value).splitlines()]
    for key, (_, says) in planted.items():
        assert any(line.startswith(f"- {key}: {says}") for line in lines), (key, str(err.value))
    named = {line[2:].split(":", 1)[0] for line in lines if line.startswith("- model.")}
    assert named == set(planted)  # nothing else is blamed
    assert any(line.startswith("- logits differ from the correctly rounded merge's") for line in lines)


def test_merge_exits_2_naming_the_tensor_and_leaves_no_verified_folder(dense, monkeypatch, tmp_path, capsys):
    """A merge bug (one tensor's update scaled wrongly): `merge` exits 2, says which tensor and by how much, and
    neither `merged/` nor `merged_verify.json` is left to pass for a good export (a previous good one is gone too)."""
    from qwen35_tune.export import adapter_map

    base, good_run = dense
    run = tmp_path / "run"
    shutil.copytree(good_run, run, ignore=shutil.ignore_patterns("merged*"))
    assert main(["merge", str(run)]) == 0 and (run / "merged_verify.json").exists()
    real = adapter_map.AdapterPlan.apply

    def buggy(self, base_key, weight):
        merged = real(self, base_key, weight)
        if base_key == "model.layers.1.mlp.gate_proj.weight":
            return (merged.float() * 1.01).to(merged.dtype)
        return merged

    monkeypatch.setattr(adapter_map.AdapterPlan, "apply", buggy)
    assert main(["merge", str(run)]) == 2
    err = capsys.readouterr().err
    assert "model.layers.1.mlp.gate_proj.weight: differs from the expected value by up to" in err
    assert "Traceback" not in err and "merged.unverified" in err
    assert not (run / "merged").exists() and not (run / "merged_verify.json").exists()
    assert "model.layers.1.mlp.gate_proj.weight" in (run / "merged.unverified" / "VERIFICATION_FAILED.txt").read_text()
    assert json.loads((run / "merged.unverified" / "export_manifest.json").read_text())["verified"] is False


def test_an_interrupted_or_unverified_merge_never_looks_verified(dense, monkeypatch, tmp_path):
    from qwen35_tune.export import merge

    _, good_run = dense
    assert json.loads((good_run / "merged" / "export_manifest.json").read_text())["verified"] is True
    run = tmp_path / "run"
    shutil.copytree(good_run, run)  # with its verified merged/ and merged_verify.json
    real, written = merge.write_shard, []

    def disk_full_on_second_shard(*args, **kwargs):
        if written:
            raise OSError(28, "No space left on device")
        written.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(merge, "write_shard", disk_full_on_second_shard)
    with pytest.raises(OSError):
        merge_run(run)
    assert not (run / "merged").exists() and not (run / "merged_verify.json").exists()
    monkeypatch.setattr(merge, "write_shard", real)
    out = merge_run(run, verify=False)  # merge --no-verify: complete, but says it is not verified
    assert out == run / "merged" and not (run / "merged_verify.json").exists()
    assert json.loads((out / "export_manifest.json").read_text())["verified"] is False


def test_dora_merge_verifies_and_a_missing_rescale_fails(tmp_path, tiny_dense, monkeypatch):
    import torch
    from safetensors.torch import load_file, save_file

    from qwen35_tune.export import adapter_map

    base = resave_base(tiny_dense, tmp_path / "base", dtype="bfloat16")
    run = make_adapter_run(base, tmp_path / "run", target_modules=["q_proj", "down_proj"], use_dora=True)
    # A fresh DoRA magnitude equals the row norms (the rescale is then 1): make it trained-looking.
    weights = run / "adapter" / "adapter_model.safetensors"
    tensors = load_file(weights)
    gen = torch.Generator().manual_seed(3)
    tensors = {k: v * (1 + 0.2 * torch.rand(v.shape, generator=gen)) if "magnitude" in k else v
               for k, v in tensors.items()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    merge_run(run)
    assert json.loads((run / "merged_verify.json").read_text())["expected_changed"] == 5  # 1 q_proj, 4 down_proj
    real = adapter_map.AdapterPlan.apply

    def without_magnitude(self, base_key, weight):  # DoRA treated as plain LoRA
        self.updates[base_key] = [u if u.kind != "dora" else adapter_map.Update("lora", u.a_key, u.b_key,
                                                                                 scaling=u.scaling)
                                  for u in self.updates[base_key]]
        return real(self, base_key, weight)

    monkeypatch.setattr(adapter_map.AdapterPlan, "apply", without_magnitude)
    with pytest.raises(UserError, match=r"self_attn\.q_proj\.weight: differs from the expected value by up to"):
        merge_run(run)


def test_full_fine_tune_export_is_checked_against_the_trained_weights(tmp_path, tiny_dense):
    import torch
    from transformers import AutoModelForCausalLM

    base = resave_base(tiny_dense, tmp_path / "base", dtype="bfloat16", shards=2)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        model.model.layers[3].self_attn.o_proj.weight.mul_(1.5)
    model.save_pretrained(tmp_path / "run" / "model")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base / name, tmp_path / "run" / "model")
    run = tmp_path / "run"
    (run / "run.json").write_text(json.dumps({"base_model": "tiny://dense", "base_path": str(base),
                                              "method": "full", "weights": "model"}))
    out = merge_run(run)
    report = json.loads((run / "merged_verify.json").read_text())
    assert report["expected_changed"] == 1 and report["merged_vs_expected_logit_diff"] <= 1e-4
    bad = _corrupt(run, tmp_path, lambda k, t: _random_like(t) if k.endswith("layers.3.self_attn.o_proj.weight")
                   else None)
    with pytest.raises(UserError, match=r"model\.layers\.3\.self_attn\.o_proj\.weight: differs from the expected"):
        verify_export(bad, base, run_dir=run)
    assert out == run / "merged"
