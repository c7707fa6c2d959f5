"""Training stages (``stage: sft | dpo | grpo``): which settings section and which data-card formats each one takes.

One recipe language for every stage; what differs is checked here, at validate, so a recipe that mixes two stages
(a ``dpo:`` section on an SFT recipe, preference cards under ``stage: sft``, packing for DPO) fails with the key that
is wrong instead of after the data build. A new stage adds a line to each table.
"""

from __future__ import annotations

# The TRL config class whose arguments ``train.extra`` passes through, per stage; its keys are the stages.
STAGE_CONFIGS = {"sft": ("trl.trainer.sft_config", "SFTConfig"), "dpo": ("trl.trainer.dpo_config", "DPOConfig"),
                 "grpo": ("trl.trainer.grpo_config", "GRPOConfig")}  # fmt: skip
STAGES = tuple(STAGE_CONFIGS)
# Data-card formats a stage trains on; SFT takes every format no other stage claims.
STAGE_FORMATS = {"dpo": ("preference",), "grpo": ("verifiable",)}
# The recipe section holding a stage's own settings (TRL's names); only that stage may set it. Each stage with
# formats of its own has a section of its own, named as the stage.
STAGE_SECTIONS = {stage: stage for stage in STAGE_FORMATS}


def other_stage_argument(key: str) -> str | None:
    """The config class name of another stage that takes ``key`` when SFTConfig does not (``train.extra`` keys are
    checked against the recipe's own stage then, in ``stage_problems``); None otherwise."""
    from qwen35_tune.recipe.trainer_options import config_arguments, sft_arguments

    if key in (sft_arguments() or {}):
        return None
    for stage, (module, name) in STAGE_CONFIGS.items():
        if stage != "sft" and key in (config_arguments(module, name) or {}):
            return name
    return None


def formats_for(stage: str) -> tuple[str, ...] | None:
    """The card formats ``stage`` trains on; None for SFT (every format no other stage claims)."""
    return STAGE_FORMATS.get(stage)


def format_problem(stage: str, card_format: str) -> str | None:
    """Why a card of ``card_format`` cannot feed ``stage`` (the stage that takes it, if any), or None."""
    wanted = formats_for(stage)
    if wanted is not None and card_format not in wanted:
        return f"stage: {stage} trains on cards of format {' or '.join(wanted)}, and this card has format: " \
               f"{card_format}"
    owner = next((other for other, formats in STAGE_FORMATS.items() if card_format in formats), None)
    if wanted is None and owner is not None:
        return f"format: {card_format} cards train with stage: {owner} (this recipe's stage is {stage})"
    return None


def stage_problems(recipe, cards: dict) -> list[tuple[str, str]]:
    """(recipe key, message) for every setting that does not fit the recipe's stage; ``cards`` are the data cards
    the loader read (path -> DataCard; one that did not load was reported where it is named)."""
    stage = recipe.stage
    problems = []
    for owner, section in STAGE_SECTIONS.items():
        if owner != stage and getattr(recipe, section, None) is not None:
            problems.append((section, f"settings of stage: {owner}, but this recipe's stage is {stage}: remove the "
                                      f"section, or set stage: {owner}"))
    for which in ("cards", "eval_cards"):
        for index, ref in enumerate(getattr(recipe.data, which)):
            card = cards.get(ref.path)
            problem = format_problem(stage, card.format) if card is not None else None
            if problem:
                problems.append((f"data.{which}.{index}.path", f"data card '{card.name}' ({ref.path}): {problem}"))
    if stage == "sft":
        for key in recipe.train.extra:
            other = other_stage_argument(key)
            if other:
                problems.append((f"train.extra.{key}", f"not an SFTConfig argument: a {other} one, and this "
                                                       "recipe's stage is sft"))
    if stage == "dpo":
        problems += _dpo_problems(recipe)
    elif stage != "sft":  # train.extra goes to the stage's own TRL config
        from qwen35_tune.recipe.trainer_options import config_argument_problem

        module, name = STAGE_CONFIGS[stage]
        for key, value in recipe.train.extra.items():
            if problem := config_argument_problem(module, name, key, value):
                problems.append((f"train.extra.{key}", f"{problem} (stage: {stage} passes train.extra to {name})"))
    from qwen35_tune.recipe.grpo_section import grpo_problems

    problems += grpo_problems(recipe)  # rewards: belongs to stage: grpo; the GRPO stage's own checks
    return problems


def _dpo_problems(recipe) -> list[tuple[str, str]]:
    from qwen35_tune.recipe.dpo_section import DPOSection
    from qwen35_tune.recipe.trainer_options import config_argument_problem

    problems = []
    if recipe.train.packing:
        problems.append(("train.packing", "stage: dpo trains padded (chosen, rejected) pairs: TRL's DPOTrainer has "
                                          "no padding-free path (its padding_free falls back to padding); set "
                                          "packing: false"))
    if recipe.chat.train_on == "all":
        problems.append(("chat.train_on", "stage: dpo scores the chosen and rejected answers only (never the "
                                          "prompt): use assistant_only or final_turn_only"))
    dpo = recipe.dpo or DPOSection()
    if dpo.sync_ref_model and recipe.method.kind != "full":
        problems.append(("dpo.sync_ref_model", f"TR-DPO updates a reference model, and a {recipe.method.kind} run "
                                               "has none (its reference is the model without the adapter): use it "
                                               "with method.kind: full"))
    module, name = STAGE_CONFIGS["dpo"]
    for key, value in recipe.train.extra.items():
        if key in DPOSection.model_fields:
            problems.append((f"train.extra.{key}", f"a DPO setting: set it as dpo.{key}"))
            continue
        problem = config_argument_problem(module, name, key, value)
        if problem:
            problems.append((f"train.extra.{key}", f"{problem} (stage: dpo passes train.extra to DPOConfig)"))
    return problems
