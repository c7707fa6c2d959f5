"""The kernel doctor: fla's version floor, causal-conv1d optional (fla's convolution bound instead), the attention
implementation checked before loading, which implementation ran, and ``doctor RECIPE`` offline."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from qwen35_tune import doctor, patches
from qwen35_tune.errors import UserError
from tests.unit.test_fla_conv_binding import reference_fla_causal_conv1d

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_with_fla(monkeypatch):
    """A CUDA machine with flash-linear-attention VERSION and no causal-conv1d, as far as the doctor can tell."""

    def install(version: str | None):
        versions = {"fla": version}
        monkeypatch.setattr(patches, "installed_version", lambda module: versions.get(module))
        monkeypatch.setattr(patches, "_load_fla_conv", lambda: reference_fla_causal_conv1d
                            if patches.version_at_least(version, patches.FLA_MIN_VERSION) else None)
        if version is not None:  # transformers binds fla's chunk kernel whenever fla imports
            def chunk(*args, **kwargs):
                raise AssertionError("not called")

            chunk._qwen35_tune_binding = "fla (test)"
            for name, _ in patches._GDN_CLASSES:
                monkeypatch.setattr(importlib.import_module(name), "torch_chunk_gated_delta_rule", chunk)

    patches.remove_fla_causal_conv1d()
    yield install
    patches.remove_fla_causal_conv1d()


@pytest.mark.parametrize("version", ["0.4.1", "0.4.2", "0.5.0", "0.6.0"])
def test_fla_version_floor_is_the_first_release_with_grouped_value_heads(version):
    problem = doctor.fla_problem(version)
    assert (problem is None) == (version >= "0.5.0")
    if problem:
        assert f"flash-linear-attention {version}" in problem and "'flash-linear-attention>=0.5.0'" in problem
    assert doctor.fla_problem(None) is None


@pytest.mark.parametrize("allow_slow", [False, True])
def test_train_refuses_a_known_bad_fla_on_cuda_even_when_slow_kernels_are_allowed(gpu_with_fla, allow_slow):
    gpu_with_fla("0.4.2")
    with pytest.raises(UserError, match=r"0\.4\.2 .*wrong outputs.*pip install -U 'flash-linear-attention>=0\.5\.0'"):
        doctor.check_kernels("qwen3_5", "sdpa", allow_slow=allow_slow, on_cuda=True)
    assert not hasattr(importlib.import_module(patches.DENSE_MODELING).causal_conv1d_fn, "_qwen35_tune_original")


@pytest.mark.parametrize("model_type", ["qwen3_5", "qwen3_5_moe"])
def test_fla_without_causal_conv1d_is_the_fast_path_on_cuda(gpu_with_fla, model_type):
    gpu_with_fla("0.6.0")
    choice = doctor.check_kernels(model_type, "sdpa", allow_slow=False, on_cuda=True)
    assert (choice.chunk, choice.conv) == ("fla 0.6.0", "fla-triton 0.6.0") and not choice.slow()
    assert choice.packed_rows.startswith("varlen")
    assert doctor.last_kernel_choice() == choice.to_dict()


def test_cuda_without_fla_refuses_naming_the_fix_not_causal_conv1d(gpu_with_fla):
    gpu_with_fla(None)
    with pytest.raises(UserError, match="model.allow_slow_kernels") as err:
        doctor.check_kernels("qwen3_5", None, allow_slow=False, on_cuda=True)
    assert "flash-linear-attention>=0.5.0" in str(err.value) and "causal-conv1d" not in str(err.value)
    choice = doctor.check_kernels("qwen3_5", None, allow_slow=True, on_cuda=True)
    assert choice.slow() == ["recurrence", "convolution"] and choice.attention == "sdpa"


def test_cpu_never_binds_fla_and_reports_the_torch_path(gpu_with_fla):
    gpu_with_fla("0.6.0")
    choice = doctor.check_kernels("qwen3_5", "sdpa", allow_slow=False, on_cuda=False)
    assert choice.conv == "torch" and choice.packed_rows.startswith("per-sample")


@pytest.mark.parametrize("name", ["flash_attention_2", "flash_attention_3", "kernels-community/flash-attn2"])
def test_gpu_only_attention_on_cpu_is_a_clear_error(name):
    with pytest.raises(UserError, match=f"model.attn_implementation: {name} needs a CUDA GPU"):
        doctor.check_attn_implementation(name, on_cuda=False)


def test_attention_needs_its_package_on_cuda(monkeypatch):
    installed: set[str] = set()
    real_find_spec = importlib.util.find_spec
    absent = ("flash_attn", "flash_attn_interface", "kernels")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in installed else
                        None if name in absent else real_find_spec(name, *a))
    for name, fix in (("flash_attention_2", "flash-attn"), ("flash_attention_3", "flash-attn-3"),
                      ("kernels-community/flash-attn2", "pip install kernels")):
        with pytest.raises(UserError, match=fix):
            doctor.check_attn_implementation(name, on_cuda=True)
    installed.update({"flash_attn", "kernels"})
    assert doctor.check_attn_implementation("flash_attention_2", on_cuda=True) == "flash_attention_2"
    assert doctor.check_attn_implementation("kernels-community/flash-attn2", on_cuda=True).startswith("kernels")
    for name in (None, "sdpa", "eager"):
        assert doctor.check_attn_implementation(name, on_cuda=False) == name


def test_run_config_records_the_implementations_that_ran():
    from qwen35_tune.recipe import load_recipe
    from qwen35_tune.train.tracking import run_config

    doctor.check_kernels("qwen3_5", "sdpa", allow_slow=False, on_cuda=False)
    kernels = run_config(load_recipe(REPO / "recipes/tiny/sft_lora.yaml"))["kernels"]
    assert kernels == {"chunk": "torch", "conv": "torch", "attention": "sdpa",
                       "packed_rows": "per-sample Gated DeltaNet (qwen35-tune patch)"}


@pytest.mark.parametrize("recipe,model_type", [("qwen3_5_9b/lora.yaml", "qwen3_5"),
                                               ("qwen3_5_35b_a3b/qlora.yaml", "qwen3_5_moe")])
def test_doctor_recipe_works_offline_from_the_shipped_configs(recipe, model_type, capsys, monkeypatch):
    from qwen35_tune import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert doctor.model_type_of(f"Qwen/{'Qwen3.5-9B' if '9b' in recipe else 'Qwen3.5-35B-A3B'}") == model_type
    assert cli.main(["doctor", str(REPO / "recipes" / recipe)]) == 0
    out = capsys.readouterr().out
    assert "flash-linear-attention" in out and ">= 0.5.0" in out and "GDN convolution" in out and "torch" in out


def test_doctor_exits_2_for_flash_attention_on_cpu(capsys):
    from qwen35_tune import cli

    recipe = str(REPO / "recipes/qwen3_5_9b/lora.yaml")
    code = cli.main(["doctor", recipe, "model.attn_implementation=flash_attention_2", "train.packing=true"])
    assert code == 2 and "flash_attention_2 needs a CUDA GPU" in capsys.readouterr().out


def test_train_refuses_flash_attention_on_cpu_before_building_data(tmp_path, capsys):
    from qwen35_tune import cli

    code = cli.main(["train", str(REPO / "recipes/tiny/sft_lora.yaml"), "--output-dir", str(tmp_path / "run"),
                     "model.attn_implementation=flash_attention_2"])
    assert code == 2
    assert "model.attn_implementation: flash_attention_2 needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "run" / "data_stats.json").exists()


def test_recipe_accepts_hub_attention_kernels_and_rejects_typos():
    from qwen35_tune.recipe import RecipeError, load_recipe

    path = REPO / "recipes/qwen3_5_9b/lora.yaml"
    for name in ("flash_attention_3", "kernels-community/flash-attn2", "kernels-community/vllm-flash-attn3@v1:fwd"):
        assert load_recipe(path, [f"model.attn_implementation={name}"]).model.attn_implementation == name
    with pytest.raises(RecipeError, match="model.attn_implementation: unknown attention implementation"):
        load_recipe(path, ["model.attn_implementation=flash_attention2"])
