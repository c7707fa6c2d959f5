"""Before the data build and before any weight download: is the recipe's model one this project trains, and can
this machine hold it?

An unsupported architecture (a Qwen3-Next, Llama or other Gated DeltaNet checkpoint) used to be refused only by the
preflight, after the data was built and the weights were loaded; a 9B recipe on a laptop downloaded 19 GB first.
Both are decided here from the config alone: the shipped copies of the real Qwen3.5 configs
(``qwen35_tune/model_configs``, read offline through ``plan.load_model_config``) or the checkpoint's own config.json.
Sizes are ``plan_shapes.build_shapes(config).total`` (the planner's count, held equal to the meta model's); the
memory test is a lower bound (the weights alone, in the dtype they load in, sharded only where the launch strategy
shards them), so a run that fits is never refused — the full estimate only warns, pointing at ``qwen35-tune plan``.
"""

from __future__ import annotations

import json
import logging
import os

from qwen35_tune.errors import UserError
from qwen35_tune.registry import REGISTRY

log = logging.getLogger(__name__)

KEY = "model.name_or_path"
# Without CUDA, training more parameters than this is refused: at the ~0.1-1 TFLOP/s of a CPU, one optimizer step of
# a few-billion-parameter model takes from minutes to hours (about 6 FLOPs per parameter per token), so such a run is
# nearly always a recipe meant for a GPU machine. QWEN35_TUNE_ALLOW_CPU=1 lifts it; the memory check still applies.
CPU_MAX_PARAMS = 3e9
ALLOW_CPU_ENV = "QWEN35_TUNE_ALLOW_CPU"
QLORA_BYTES = 0.55  # nf4 weight + double-quantised block constants (plan.QUANT_BYTES), a lower bound per parameter


def check_supported(model_type: str | None, name: str) -> None:
    """Refuse a model_type the registry does not know, naming what it is and what is supported."""
    if model_type in REGISTRY:
        return
    known = ", ".join(sorted(REGISTRY))
    raise UserError(f"{KEY}: '{name}' is a {model_type or 'model without a model_type'} checkpoint; qwen35-tune "
                    f"trains Qwen3.5 models only (model_type {known}), e.g. Qwen/Qwen3.5-9B or Qwen/Qwen3.5-35B-A3B")


def _shipped_config(name: str) -> dict | None:
    from qwen35_tune.plan import SHIPPED, load_model_config

    return load_model_config(name) if name.lower() in SHIPPED else None


def _param_count(config: dict) -> int | None:
    from qwen35_tune.plan_shapes import build_shapes

    try:
        return int(build_shapes(config).total)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # a config layout the planner does not read: no size check


def weight_bytes(recipe, params: int, on_cuda: bool) -> float:
    """The weights alone, in the dtype they load in (``model.dtype``; auto = bf16 on CUDA, fp32 on CPU)."""
    if recipe.method.kind == "qlora":
        return params * QLORA_BYTES
    dtype = recipe.model.dtype
    if dtype == "auto":
        dtype = "bfloat16" if on_cuda else "float32"
    return params * (4 if dtype == "float32" else 2)


def _ram_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def launch_sharding() -> tuple[str, int, bool]:
    """(strategy, ranks the weights are sharded over, parameters offloaded to CPU) from accelerate's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp2", world, False
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage, offload = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0), False
        config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
        if config_file:
            try:
                zero = json.loads(open(config_file, encoding="utf-8").read()).get("zero_optimization", {})
                stage = int(zero.get("stage", stage))
                offload = (zero.get("offload_param") or {}).get("device") in ("cpu", "nvme")
            except (OSError, ValueError, TypeError):
                pass
        if stage == 3:
            return ("zero3_offload" if offload else "zero3"), world, offload
        return f"zero{stage}", 1, False
    return "ddp", 1, False


def check_fits(recipe, config: dict, name: str) -> None:
    """Refuse a model this machine cannot hold (see the module docstring); warn when the full estimate says no."""
    import torch

    params = _param_count(config)
    if params is None:
        return
    on_cuda = torch.cuda.is_available()
    weights = weight_bytes(recipe, params, on_cuda)
    plan_hint = f"qwen35-tune plan RECIPE --gpus 1xH100-80GB shows what {name} needs"
    if not on_cuda:
        if params > CPU_MAX_PARAMS and os.environ.get(ALLOW_CPU_ENV, "") not in ("1", "true", "yes"):
            raise UserError(f"{KEY}: {name} has {params / 1e9:.1f}B parameters and no CUDA GPU is visible; training "
                            f"it on CPU would take hours per step. Run this recipe on a GPU machine ({plan_hint}), "
                            f"or try the pipeline here with {KEY}=tiny://dense (set {ALLOW_CPU_ENV}=1 to train on "
                            "CPU anyway)")
        ram = _ram_bytes()
        if weights > ram:
            raise UserError(f"{KEY}: {name} needs at least {weights / 1e9:.1f} GB for its weights alone "
                            f"({params / 1e9:.1f}B parameters, model.dtype {recipe.model.dtype}) but this machine has "
                            f"{ram / 1e9:.1f} GB of RAM and no CUDA GPU; run it on a GPU machine ({plan_hint})")
        return
    strategy, shards, offloaded = launch_sharding()
    device = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(device)
    per_gpu = weights / max(shards, 1)
    if not offloaded and per_gpu > props.total_memory:
        gpus = f"{max(shards, 1)}x{props.total_memory / 1e9:.0f}GB"
        raise UserError(f"{KEY}: {name} needs at least {per_gpu / 1e9:.1f} GB per GPU for its weights alone under "
                        f"{strategy} on {shards} GPU(s), more than the {props.total_memory / 1e9:.1f} GB of this "
                        f"{props.name}; qwen35-tune plan RECIPE --gpus {gpus} shows what fits (more GPUs with "
                        "--launch zero3 / fsdp2, or method.kind: qlora)")
    _warn_if_estimate_exceeds(recipe, config, name, strategy, max(shards, 1), props.total_memory)


def _warn_if_estimate_exceeds(recipe, config: dict, name: str, strategy: str, world: int, memory: int) -> None:
    """The planner's full per-GPU estimate, as a warning only (it is an estimate, the weights check is a bound)."""
    try:
        from qwen35_tune.plan import Gpus, make_plan

        gpus = Gpus(world, "GPU", memory / 1e9)
        estimate = make_plan(recipe, config, gpus).estimates.get(strategy)
        if estimate is not None and estimate.total > gpus.usable_bytes:
            log.warning("%s: the planner estimates %.1f GB per GPU under %s, more than this GPU's %.1f GB; if it runs "
                        "out of memory, see qwen35-tune plan RECIPE --gpus %dx%.0fGB", name, estimate.total / 1e9,
                        strategy, memory / 1e9, world, memory / 1e9)
    except Exception as exc:  # an estimate must never stop a run
        log.debug("no memory estimate for %s: %s", name, exc)


def check_model_before_data(recipe, model_path: str) -> None:
    """Supported architecture and a machine that can hold it, from the config only (before data and weights)."""
    from qwen35_tune.models.load import load_config

    name = recipe.model.name_or_path
    shipped = _shipped_config(name)
    if shipped is not None:  # real Qwen3.5 hub ids: known offline, checked before anything is downloaded
        check_supported(shipped.get("model_type"), name)
        check_fits(recipe, shipped, name)
    config = load_config(model_path, recipe.model.revision)
    check_supported(getattr(config, "model_type", None), name)
    if shipped is None:
        check_fits(recipe, config.to_dict(), name)
