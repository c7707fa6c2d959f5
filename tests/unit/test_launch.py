"""Launch configs are accepted by accelerate (and DeepSpeed where it is installed), ``--launch`` builds the right
accelerate command, and the SLURM script renders for a recipe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from qwen35_tune.launch import LAUNCH_DIR, STRATEGIES, accelerate_command, config_path, render_sbatch

REPO = Path(__file__).resolve().parents[2]
R9B = REPO / "recipes" / "qwen3_5_9b" / "lora.yaml"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_accelerate_parses_config(strategy):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(config_path(strategy)))
    expected = {"ddp": "MULTI_GPU", "fsdp2": "FSDP"}.get(strategy, "DEEPSPEED")
    assert str(config.distributed_type).endswith(expected)
    assert config.mixed_precision in (None, "no")  # the recipe decides the precision (train/precision.py)
    if expected == "DEEPSPEED":
        ds_file = Path(config.deepspeed_config["deepspeed_config_file"])
        assert ds_file.is_absolute() and ds_file.is_file()  # made absolute so it works from any directory
        assert config.deepspeed_config["zero3_init_flag"] == (strategy != "zero2")


def test_fsdp2_config_builds_the_plugin():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import FullyShardedDataParallelPlugin

    fsdp = load_config_from_file(str(config_path("fsdp2"))).fsdp_config
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"],
        transformer_cls_names_to_wrap=fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","),
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"], state_dict_type=fsdp["fsdp_state_dict_type"],
    )  # fmt: skip
    assert plugin.fsdp_version == 2
    import transformers

    for name in fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","):
        assert hasattr(transformers.models.qwen3_5.modeling_qwen3_5, name) or hasattr(
            transformers.models.qwen3_5_moe.modeling_qwen3_5_moe, name), name


def test_fsdp2_config_wraps_every_unsplittable_block_class():
    """launch/accelerate/fsdp2.yaml names every class transformers lists as unsplittable, for all Qwen3.5 variants
    (moved from tests/smoke/test_fsdp2_units.py with the CPU fully_shard probe of the removed train/fsdp2.py)."""
    import transformers
    import yaml

    config = yaml.safe_load(config_path("fsdp2").read_text())["fsdp_config"]
    assert config["fsdp_version"] == 2 and config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    listed = set(config["fsdp_transformer_layer_cls_to_wrap"].split(","))
    wanted: set[str] = set()
    for name in ("Qwen3_5ForConditionalGeneration", "Qwen3_5ForCausalLM", "Qwen3_5MoeForConditionalGeneration",
                 "Qwen3_5MoeForCausalLM"):  # fmt: skip
        wanted |= set(getattr(transformers, name)._no_split_modules)
    assert wanted and wanted <= listed, wanted - listed


@pytest.mark.parametrize("stage", ["zero2", "zero3", "zero3_offload"])
def test_deepspeed_json(stage):
    raw = json.loads((LAUNCH_DIR / "deepspeed" / f"{stage}.json").read_text())
    assert raw["zero_optimization"]["stage"] == (2 if stage == "zero2" else 3)
    assert ("offload_optimizer" in raw["zero_optimization"]) == (stage == "zero3_offload")
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig

    concrete = json.loads(json.dumps(raw).replace('"auto"', "1"))  # what transformers fills in from the recipe
    concrete["bf16"]["enabled"] = True
    config = DeepSpeedConfig(concrete)
    assert config.zero_optimization_stage == raw["zero_optimization"]["stage"]


def test_launch_command_strips_its_own_flags():
    cmd = accelerate_command("zero3", 4, ["train", "r.yaml", "--launch", "zero3", "--num-processes", "4", "a.b=1"])
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    assert cmd[-5:] == ["-m", "qwen35_tune", "train", "r.yaml", "a.b=1"]


def test_unknown_strategy_is_a_user_error():
    from qwen35_tune.errors import UserError

    with pytest.raises(UserError, match="zero1"):
        config_path("zero1")


def test_slurm_script(tmp_path, capsys):
    from qwen35_tune.cli import main

    out = tmp_path / "job.sbatch"
    assert main(["launch", "slurm", str(R9B), "train.learning_rate=1e-4", "--nodes", "4", "--gpus-per-node", "8",
                 "--strategy", "zero3", "--output-dir", str(tmp_path / "run"), "--out", str(out)]) == 0  # fmt: skip
    assert capsys.readouterr().out.strip() == f"sbatch {out}"
    text = out.read_text()
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --signal=USR1@300", "#SBATCH --requeue", "NUM_PROCESSES=$((SLURM_NNODES * 8))",
                 '--machine_rank "$SLURM_NODEID"', "--rdzv_backend c10d", 'trap "" USR1',
                 "train.learning_rate=1e-4", "--resume auto", f"--output-dir {tmp_path / 'run'}"):  # fmt: skip
        assert line in text, line
    config = text.split("--config_file ")[1].split()[0]
    assert Path(config).is_file() and str(tmp_path / "run") in config  # on the shared run dir, not /tmp
    assert "$" not in text.split("#SBATCH --job-name=")[1].splitlines()[0]
    subprocess.run(["bash", "-n", str(out)], check=True)  # valid shell


def test_render_rejects_zero_nodes(tmp_path):
    from qwen35_tune.errors import UserError

    with pytest.raises(UserError):
        render_sbatch(R9B, [], name="x", nodes=0, gpus_per_node=8, strategy="ddp", output_dir=tmp_path)


@pytest.mark.parametrize("recipe,expected", [("qwen3_5_35b_a3b/lora.yaml", "zero3"),
                                             ("qwen3_5_35b_a3b/qlora.yaml", "ddp"),
                                             ("qwen3_5_9b/lora.yaml", "ddp")])  # fmt: skip
def test_slurm_defaults_to_plans_strategy(tmp_path, capsys, recipe, expected):
    from qwen35_tune.cli import main
    from qwen35_tune.plan import load_model_config, make_plan, parse_gpus
    from qwen35_tune.recipe import load_recipe

    path = REPO / "recipes" / recipe
    out = tmp_path / "job.sbatch"
    assert main(["launch", "slurm", str(path), "--nodes", "1", "--gpus-per-node", "8", "--gpu", "H100-80GB",
                 "--output-dir", str(tmp_path / "run"), "--out", str(out)]) == 0  # fmt: skip
    r = load_recipe(path)
    plan = make_plan(r, load_model_config(r.model.name_or_path), parse_gpus("8xH100-80GB"))
    assert plan.recommended.strategy == expected
    config = out.read_text().split("--config_file ")[1].split()[0]
    assert Path(config).name == f"{expected}.yaml"
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0].startswith(f"strategy: {expected} (what `qwen35-tune plan` recommends for 8xH100-80GB")
    assert printed[-1] == f"sbatch {out}"


def test_slurm_refuses_qlora_with_a_sharded_strategy(tmp_path, capsys):
    from qwen35_tune.cli import main

    out = tmp_path / "job.sbatch"
    assert main(["launch", "slurm", str(REPO / "recipes" / "qwen3_5_35b_a3b" / "qlora.yaml"), "--strategy", "zero3",
                 "--output-dir", str(tmp_path / "run"), "--out", str(out)]) == 2  # fmt: skip
    assert not out.exists() and "--launch ddp or --launch zero2" in capsys.readouterr().err


def test_slurm_default_when_nothing_fits_is_exit_2(tmp_path, capsys):
    from qwen35_tune.cli import main

    assert main(["launch", "slurm", str(REPO / "recipes" / "qwen3_5_35b_a3b" / "full.yaml"), "--nodes", "1",
                 "--gpus-per-node", "1", "--gpu", "8GB", "--output-dir", str(tmp_path / "run")]) == 2  # fmt: skip
    assert "nothing fits" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_launch_without_deepspeed_names_the_extra(strategy, monkeypatch, capsys):
    """--launch zero* without DeepSpeed installed is exit 2 before relaunching (each rank would crash importing it)."""
    import importlib.util

    from qwen35_tune import launch
    from qwen35_tune.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(launch.importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else
                        real(name, *a))  # fmt: skip
    launched = []
    monkeypatch.setattr(launch.os, "execv", lambda path, cmd: launched.append(cmd))
    tiny = REPO / "recipes" / "tiny" / "sft_lora.yaml"
    code = main(["train", str(tiny), "--launch", strategy, "--num-processes", "2"])
    err = capsys.readouterr().err
    if strategy.startswith("zero"):
        assert code == 2 and not launched
        assert f"--launch {strategy} runs DeepSpeed, which is not installed" in err
        assert "pip install 'qwen35-tune[deepspeed]'" in err and "Traceback" not in err
    else:
        assert launched and ["-m", "qwen35_tune", "train", str(tiny)] == launched[0][-4:]
