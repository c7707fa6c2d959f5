"""QLoRA under sharded parameters (ZeRO-3, FSDP) is refused before anything launches or loads: `train --launch`,
`launch slurm --strategy`, and a plain `accelerate launch` with such a config (read from the environment accelerate
sets for its ranks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen35_tune.errors import UserError
from qwen35_tune.launch import STRATEGIES, config_path
from qwen35_tune.recipe import load_recipe
from qwen35_tune.train.strategy_checks import (
    SHARDED,
    check_launch_strategy,
    check_runtime_strategy,
    sharding_in_effect,
    unsupported_reason,
)

REPO = Path(__file__).resolve().parents[2]
TINY_QLORA = REPO / "recipes" / "tiny" / "moe_lora.yaml"
QLORA_OVERRIDES = ["method.kind=qlora"]


def _accelerate_env(strategy: str) -> dict[str, str]:
    """The environment ``accelerate launch --config_file launch/accelerate/STRATEGY.yaml`` gives every rank."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(config_path(strategy)), "-m", "qwen35_tune", "train", "recipe.yaml"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:  # as accelerate's launch_command does before deepspeed_launcher
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sharding_read_from_the_environment_accelerate_sets(strategy):
    found = sharding_in_effect(_accelerate_env(strategy), {})
    assert (found is not None) == (strategy in SHARDED), found


@pytest.mark.parametrize("env,extra,expected", [
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, {}, "ZeRO-3"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, {}, None),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, {}, None),  # accelerate's default stage is 2
    ({"ACCELERATE_USE_FSDP": "True"}, {}, "FSDP"),
    ({}, {"deepspeed": str(REPO / "launch" / "deepspeed" / "zero3.json")}, "ZeRO-3"),
    ({}, {"deepspeed": {"zero_optimization": {"stage": 3}}}, "ZeRO-3"),
    ({}, {"deepspeed": {"zero_optimization": {"stage": 2}}}, None),
    ({}, {"fsdp": "full_shard auto_wrap"}, "FSDP"),
    ({}, {}, None),
])  # fmt: skip
def test_sharding_in_effect(env, extra, expected):
    found = sharding_in_effect(env, extra)
    assert (found is None) if expected is None else (expected in found)


def test_runtime_check_refuses_qlora_only():
    qlora = load_recipe(TINY_QLORA, QLORA_OVERRIDES)
    env = _accelerate_env("zero3")
    with pytest.raises(UserError, match=r"qlora cannot train under DeepSpeed ZeRO-3.*--launch ddp or --launch zero2"):
        check_runtime_strategy(qlora, env)
    check_runtime_strategy(load_recipe(TINY_QLORA), env)  # bf16 LoRA under ZeRO-3 is fine
    check_runtime_strategy(qlora, _accelerate_env("zero2"))  # QLoRA under ZeRO-2 is fine


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_launch_check(strategy):
    qlora = load_recipe(TINY_QLORA, QLORA_OVERRIDES)
    assert (unsupported_reason("qlora", strategy) is not None) == (strategy in SHARDED)
    if strategy in SHARDED:
        with pytest.raises(UserError, match=f"--launch {strategy}: method.kind: qlora"):
            check_launch_strategy(qlora, strategy)
    else:
        check_launch_strategy(qlora, strategy)
    check_launch_strategy(load_recipe(TINY_QLORA), strategy)


def test_train_launch_zero3_with_qlora_exits_2_before_launching(monkeypatch, capsys):
    import os

    from qwen35_tune.cli import main

    launched = []
    monkeypatch.setattr(os, "execv", lambda *a: launched.append(a))
    assert main(["train", str(TINY_QLORA), *QLORA_OVERRIDES, "--launch", "zero3", "--num-processes", "2"]) == 2
    assert not launched and "--launch zero3: method.kind: qlora" in capsys.readouterr().err
    # ddp (not zero2: CI installs without the deepspeed extra, and zero2 would then stop on that instead)
    assert main(["train", str(TINY_QLORA), *QLORA_OVERRIDES, "--launch", "ddp", "--num-processes", "2"]) == 1
    assert launched  # ddp goes ahead (the patched execv returns, which the CLI reports as not launched)


def test_train_under_fsdp_launch_with_qlora_exits_2_before_model_load(monkeypatch, capsys, tmp_path):
    """What a rank of `accelerate launch --config_file launch/accelerate/fsdp2.yaml -m qwen35_tune train` runs."""
    from qwen35_tune.cli import main
    from qwen35_tune.models import load
    from qwen35_tune.train import sft

    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(load, "load_model", no_load)
    monkeypatch.setattr(load, "load_tokenizer", no_load)
    monkeypatch.setattr(sft, "build_datasets", no_load)
    for key, value in _accelerate_env("fsdp2").items():
        monkeypatch.setenv(key, value)
    rc = main(["train", str(TINY_QLORA), *QLORA_OVERRIDES, "--output-dir", str(tmp_path / "run")])
    assert rc == 2 and "qlora cannot train under FSDP" in capsys.readouterr().err
