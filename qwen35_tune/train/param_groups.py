"""Separate learning rates for the vision tower, the projector (merger) and the language model, as optimizer groups.

transformers' Trainer builds two parameter groups (weight decay / none) at one learning rate. It accepts
``optimizer_cls_and_kwargs`` whose kwargs may carry ``params`` (the groups to use), so we keep its optimizer choice
(``train.optim``, bitsandbytes' 8-bit handling, the scheduler) and only hand it finer groups. The groups are built
in ``create_optimizer`` (``PartLearningRates``, mixed into the trainer subclass), from the model the Trainer passes
(peft-wrapped, or wrapped for FSDP), so the names and parameter objects are the ones that will be optimised.
"""

from __future__ import annotations

import logging

from qwen35_tune.errors import UserError
from qwen35_tune.recipe.vision_checks import PART_NAMES
from qwen35_tune.train.freeze import DEFAULT_FULL_FREEZE, group_of

log = logging.getLogger(__name__)

VISION_PARTS = ("vision", "projector")


def part_of(name: str) -> str:
    """'vision', 'projector' or 'language_model' for a parameter name (peft wrappers included)."""
    group = group_of(name)
    return group if group in VISION_PARTS else "language_model"


def effective_freeze(recipe) -> list[str] | None:
    """``method.freeze`` for a full fine-tune, where a part given its own learning rate is not frozen by default."""
    freeze, rates = recipe.method.freeze, recipe.train.learning_rates.given()
    if freeze is not None or not rates:
        return freeze
    return [g for g in DEFAULT_FULL_FREEZE if g not in rates]


def build_param_groups(named_params, learning_rates: dict[str, float], decay_names, weight_decay: float) -> list:
    """Optimizer groups per (part with its own rate or default) x (decay or not); empty groups left out.

    Groups of a part with its own rate carry ``lr``; the rest take the optimizer's default (train.learning_rate).
    A part given a rate but with no trainable parameter is an error: the rate would silently do nothing.
    """
    groups: dict[tuple[str, bool], list] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        part = part_of(name)
        key = (part if part in learning_rates else "default", name in decay_names)
        groups.setdefault(key, []).append(param)
    missing = [p for p in learning_rates if not any(k[0] == p for k in groups)]
    if missing:
        part = missing[0]
        hint = ("add its preset to method.lora.target_modules" if part != "language_model"
                else "add a language preset such as 'all' to method.lora.target_modules")
        raise UserError(f"train.learning_rates.{part}: nothing in the {PART_NAMES[part]} is trained, so this "
                        f"rate would do nothing; {hint} (full fine-tunes: leave it out of method.freeze)")
    out = []
    for (part, decay), params in sorted(groups.items()):
        group = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if part != "default":
            group["lr"] = learning_rates[part]
        out.append(group)
    return out


class PartLearningRates:
    """Trainer mixin: ``create_optimizer`` (the Trainer's documented override point) with per-part learning rates."""

    part_learning_rates: dict[str, float] | None = None

    def use_part_learning_rates(self, learning_rates: dict[str, float]) -> None:
        """Build the optimizer with these per-part rates (``train.learning_rates``; empty: the Trainer's own groups).

        Fails now, not at the first step: the groups are checked on the model as the trainer holds it.
        """
        if learning_rates:
            build_param_groups(self.model.named_parameters(), learning_rates, set(), 0.0)
        self.part_learning_rates = dict(learning_rates) or None

    def create_optimizer(self, model=None):
        rates = self.part_learning_rates
        opt_model = self.model if model is None else model
        if rates and self.optimizer is None:
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            if "params" in kwargs or "model" in kwargs or "optimizer_dict" in kwargs:
                raise UserError(f"train.learning_rates: optimizer '{self.args.optim}' builds its own parameter "
                                "groups and cannot take per-part learning rates; remove one of the two")
            decay = set(self.get_decay_parameter_names(opt_model))
            params = build_param_groups(opt_model.named_parameters(), rates, decay, self.args.weight_decay)
            self.optimizer_cls_and_kwargs = (cls, {**kwargs, "params": params})  # the Trainer's own constructor arg
            log.info("learning rates: %s; everything else %g", ", ".join(f"{k} {v:g}" for k, v in rates.items()),
                     self.args.learning_rate)
        return super().create_optimizer(model)
