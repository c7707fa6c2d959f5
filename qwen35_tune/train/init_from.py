"""``model.init_from`` at train time: the source resolved (recipe/init_from.py's rules, as a UserError), the adapter
put on the loaded base as the trainable one, and the chain of stages this run records in run.json."""

from __future__ import annotations

import logging
from pathlib import Path

from qwen35_tune.errors import UserError
from qwen35_tune.recipe.init_from import InitFromError, InitSource, init_problems, read_init_source
from qwen35_tune.rundir import StageRecord

log = logging.getLogger(__name__)


def resolve_init(recipe) -> InitSource | None:
    """The recipe's ``model.init_from`` (None when unset); UserError naming the key when it does not fit."""
    init_from = recipe.model.init_from
    if init_from is None:
        return None
    problems = init_problems(init_from, recipe.method.kind, recipe.model.name_or_path, recipe.method.lora)
    if problems:
        raise UserError("\n".join(f"{key}: {message}" for key, message in problems))
    try:
        source = read_init_source(init_from, recipe.method.kind)
    except InitFromError as exc:  # changed on disk since the check above
        raise UserError(f"{exc.key}: {exc}") from None
    what = "its adapter is trained further" if source.kind == "adapter" else "its weights are the base"
    log.info("model.init_from: %s (%s; %s)", init_from, source.folder, what)
    return source


def continue_adapter(model, source: InitSource, trainer_args):
    """The base ``model`` with ``source``'s LoRA adapter on it as the trainable (active) adapter, its weights exactly
    as saved. Under DeepSpeed ZeRO-3 a non-quantized base keeps the adapter in its own dtype, as TRL does for a new one
    (ZeRO-3 gathers parameters into buffers of one dtype: trl#6089)."""
    from peft import PeftModel

    zero3 = getattr(getattr(trainer_args, "deepspeed_plugin", None), "zero_stage", None) == 3
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    peft_model = PeftModel.from_pretrained(model, str(source.folder), is_trainable=True,
                                           autocast_adapter_dtype=not (zero3 and not quantized))
    config = source.adapter_config
    log.info("continuing the adapter of %s (r=%s, lora_alpha=%s) as the trainable adapter", source.folder,
             config.get("r"), config.get("lora_alpha"))
    return peft_model


def stage_chain(recipe, source: InitSource | None, run_dir: Path) -> tuple[StageRecord, ...]:
    """The stages that made this run's weights, oldest first, this run last."""
    here = StageRecord(stage=recipe.stage, method=recipe.method.kind, path=str(Path(run_dir).resolve()),
                       init=source.kind if source is not None else None)
    if source is None:
        return (here,)
    if source.run is not None:
        return (*source.run.chain(source.run_dir.resolve()), here)
    return (StageRecord(path=str(source.folder.resolve())), here)
