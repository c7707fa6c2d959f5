"""The recipe's ``dpo:`` section: TRL ``DPOConfig``'s own preference-tuning arguments, under TRL's names.

Only what DPO adds to a trainer lives here (``beta``, ``loss_type``, ``label_smoothing``, the reference model
options...); the trainer settings every stage shares (batch, learning rate, ``max_length``, saving) stay in ``train:``.
The installed TRL is read, not imported (``validate`` stays torch-free): the loss types and f-divergences it accepts
are the strings its ``DPOTrainer._compute_loss`` branches on (it only rejects an unknown one inside the first training
step), and a test holds every field here to a ``DPOConfig`` argument with the same default. TRL 1.16's ``DPOConfig``
has no ``max_prompt_length`` / ``max_completion_length``: ``train.max_length`` bounds prompt + answer.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field, field_validator, model_validator

from qwen35_tune.recipe import bounds
from qwen35_tune.recipe.trainer_options import compared_strings, sft_arguments
from qwen35_tune.yaml_lines import CHECK_ERROR, StrictModel

DPO_CONFIG = ("trl.trainer.dpo_config", "DPOConfig")
_DPO_TRAINER = "trl.trainer.dpo_trainer"
# DPOConfig arguments that have a home elsewhere, or that qwen35-tune sets itself (why, in the user's words).
ELSEWHERE = {
    "learning_rate": "set it as train.learning_rate",
    "max_length": "set it as train.max_length (it bounds prompt + answer; longer pairs follow data.too_long)",
    "max_prompt_length": "TRL's DPOConfig has no such argument: train.max_length bounds prompt + answer (longer "
    "pairs follow data.too_long)",
    "max_completion_length": "TRL's DPOConfig has no such argument: train.max_length bounds prompt + answer (longer "
    "pairs follow data.too_long)",
    "router_aux_loss_coef": "set it as train.router_aux_loss_coef (the same key as for SFT)",
    "padding_free": "pairs train padded: TRL's DPOTrainer has no padding-free path (train.packing is refused for "
    "stage: dpo)",
    "truncation_mode": "pairs are cut by the data build, answer end first (data.too_long: truncate | drop)",
    "model_init_kwargs": "the model section loads the model (model.dtype, model.attn_implementation, ...)",
    "trust_remote_code": "Qwen3.5 needs no remote code; the model section loads the model",
    "dataset_num_proc": "rows are rendered and tokenised by qwen35-tune's data build, not by TRL",
    "pad_token": "the tokenizer's own pad token is used",
    "gradient_checkpointing": "set it as train.gradient_checkpointing",
}


def _problem(key: str, message: str):
    from pydantic_core import PydanticCustomError

    return PydanticCustomError(CHECK_ERROR, "{message}", {"message": message, "at": key})


@functools.cache
def loss_types() -> tuple[str, ...] | None:
    """The loss types the installed TRL's DPOTrainer computes (None: its source could not be read)."""
    return compared_strings(_DPO_TRAINER, "_compute_loss", "loss_type")


@functools.cache
def f_divergence_types() -> tuple[str, ...] | None:
    """The f-divergences the installed TRL's DPOTrainer computes (None: its source could not be read)."""
    return compared_strings(_DPO_TRAINER, "_compute_loss", "f_divergence_type")


def _unknown_choice(value: str, choices: tuple[str, ...] | None, what: str) -> str | None:
    from qwen35_tune.recipe.trainer_options import _guess

    if choices is None or value in choices:
        return None
    guess = _guess(value, choices)
    hint = f"did you mean '{guess}'? " if guess else ""
    return f"unknown {what} '{value}' ({hint}the installed trl computes: {', '.join(choices)})"


# TRL 1.16 DPOTrainer.__init__: the f-DPO reparameterisation only holds for the losses built on the chosen-rejected
# reward difference (mirrored here so the refusal comes at validate, not after the data build and model load).
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")


class DPOSection(StrictModel):
    """Preference tuning (stage: dpo); the names are TRL DPOConfig arguments."""

    beta: float = Field(
        0.1, gt=0, le=1000, description="How far the policy may move from the reference: higher keeps it closer "
        "(the temperature of the DPO sigmoid; IPO's regularisation tau)."
    )
    loss_type: list[str] = Field(
        ["sigmoid"], min_length=1, description="DPO loss, or several combined with loss_weights: sigmoid (DPO), "
        "hinge, ipo, robust, exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down, "
        "discopop, sft, sigmoid_norm (the installed trl's list is checked).",
    )
    loss_weights: list[float] | None = Field(
        None, description="Weight of each loss_type when several are combined; None = 1.0 each."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Robust DPO: the chance a preference label is flipped; EXO: its epsilon "
        "(exo_pair needs it above 0)."
    )
    precompute_ref_log_probs: bool = Field(
        False, description="Score every pair with the reference once before training, so no reference forward (or, "
        "for a full fine-tune, no reference copy) is needed while training."
    )
    precompute_ref_batch_size: int | None = Field(
        None, gt=0, le=bounds.MAX_BATCH, description="Pairs per forward when precomputing; None = the train / eval "
        "batch size."
    )
    ld_alpha: float | None = Field(
        None, ge=0, le=1, description="LD-DPO: weight of the answer tokens past the shorter answer's length; None = "
        "plain DPO."
    )
    f_divergence_type: str = Field(
        "reverse_kl", description="Regulariser between policy and reference (f-DPO): reverse_kl (DPO), forward_kl, "
        "js_divergence, alpha_divergence."
    )
    f_alpha_divergence_coef: float = Field(
        0.5, ge=-1000, le=1000, description="alpha of the alpha-divergence (f_divergence_type: alpha_divergence)."
    )
    use_weighting: bool = Field(False, description="WPO: weight each pair by the policy's probability of it.")
    discopop_tau: float = Field(0.05, gt=0, le=1000, description="DiscoPOP temperature (loss_type: discopop).")
    sync_ref_model: bool = Field(
        False, description="TR-DPO: mix the policy into the reference every ref_model_sync_steps (full fine-tunes "
        "only, without precompute_ref_log_probs)."
    )
    ref_model_mixup_alpha: float = Field(
        0.6, ge=0, le=1, description="TR-DPO: share of the policy in each reference update."
    )
    ref_model_sync_steps: int = Field(
        512, gt=0, le=bounds.MAX_STEPS, description="TR-DPO: steps between reference updates."
    )
    disable_dropout: bool = Field(True, description="Turn dropout off in the policy and the reference.")

    @model_validator(mode="before")
    @classmethod
    def _keys_with_another_home(cls, data: Any) -> Any:
        """A DPOConfig or trainer argument that has its place elsewhere in a recipe: named with it, not as unknown."""
        if not isinstance(data, dict):
            return data
        for key in data:
            if key in ELSEWHERE:
                raise _problem(str(key), ELSEWHERE[key])
            trainer_keys = sft_arguments() or {}
            if key not in cls.model_fields and key in trainer_keys:
                raise _problem(str(key), f"a trainer setting every stage shares: set it as train.{key} (or in "
                               "train.extra)")
        return data

    @field_validator("loss_type", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """`loss_type: ipo` is one loss; a list combines several (TRL reads both)."""
        return [value] if isinstance(value, str) else value

    @field_validator("loss_type")
    @classmethod
    def _known_losses(cls, value: list[str]) -> list[str]:
        for name in value:
            problem = _unknown_choice(name, loss_types(), "loss type")
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("f_divergence_type")
    @classmethod
    def _known_divergence(cls, value: str) -> str:
        problem = _unknown_choice(value, f_divergence_types(), "f-divergence")
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _combinations(self) -> DPOSection:
        """What TRL's DPOTrainer refuses only once the data is built and the model loaded."""
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise _problem("loss_weights", f"gives {len(self.loss_weights)} weights for {len(self.loss_type)} loss "
                           f"types ({', '.join(self.loss_type)}): one weight per loss_type")
        if "exo_pair" in self.loss_type and self.label_smoothing == 0:
            raise _problem("label_smoothing", "loss_type exo_pair needs label_smoothing above 0 (the EXO paper "
                           "uses 1.0e-3)")
        if self.f_divergence_type != "reverse_kl":
            others = [t for t in self.loss_type if t not in F_DIVERGENCE_LOSSES]
            if others:
                raise _problem("f_divergence_type", f"{self.f_divergence_type} works only with the losses built on "
                               f"the chosen-rejected reward difference ({', '.join(F_DIVERGENCE_LOSSES)}), not "
                               f"{', '.join(others)}; keep reverse_kl with them")
        if self.use_weighting and {"aot", "aot_unpaired"} & set(self.loss_type):
            raise _problem("use_weighting", "WPO weighting is not defined for the aot losses (they sort the pairs)")
        if self.sync_ref_model and self.precompute_ref_log_probs:
            raise _problem("sync_ref_model", "a reference that moves during training cannot be precomputed: turn "
                           "off precompute_ref_log_probs or sync_ref_model")
        return self

    def config_kwargs(self) -> dict[str, Any]:
        """The DPOConfig arguments this section sets (every field is one)."""
        return self.model_dump()
