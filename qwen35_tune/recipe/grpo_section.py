"""The recipe's GRPO settings (``grpo:``, TRL ``GRPOConfig`` names) and reward list (``rewards:``), checked without
importing torch.

``grpo:`` takes the arguments that ``GRPOConfig`` adds to ``TrainingArguments`` under their own names. The common ones
are typed fields here (descriptions for ``qwen35-tune schema``, bounds, the choices of string options); any other
``GRPOConfig`` argument of its own may be given too and is checked against the installed TRL source (read with
``ast`` by ``recipe.trainer_options``: name, value type, finiteness), with a did-you-mean for names it does not have.
``TrainingArguments`` settings (batch, learning rate, steps) stay in ``train:``, as for SFT.

TRL types ``loss_type``, ``vllm_mode`` and friends as plain ``str`` and only rejects a bad value in the middle of
the first step, after the data build and the first generation; their choices are listed here and held to the
installed TRL's source by a canary test (tests/unit/test_grpo_recipe.py).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from qwen35_tune.recipe import bounds
from qwen35_tune.yaml_lines import CHECK_ERROR, StrictModel

GRPO_CONFIG = ("trl.trainer.grpo_config", "GRPOConfig")
LossType = Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
# String options of GRPOConfig not typed below, with the values the installed trainer accepts (canary-tested).
EXTRA_CHOICES = {
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
    "vllm_model_impl": ("vllm", "transformers"),
}
# GRPOConfig arguments a recipe may not set under grpo:, and where the setting lives instead (or why not at all).
REFUSED = {
    "model_init_kwargs": "qwen35-tune loads the model itself: set model.* (dtype, revision, attn_implementation)",
    "trust_remote_code": "qwen35-tune never runs a checkpoint's own code",
    "router_aux_loss_coef": "set it as train.router_aux_loss_coef (shared by every stage)",
    "reward_weights": "give each reward its weight in rewards: [{name: ..., weight: ...}]",
    "chat_template_kwargs": "prompts are rendered by qwen35-tune; thinking follows chat.thinking",
    "remove_unused_columns": "qwen35-tune sets it (the rewards read the rows' check column)",
    "log_completions_hub_repo": "a sample of completions with their rewards is written to completions.jsonl in the "
    "run directory; runs never publish data",
    "use_transformers_paged": "deprecated in TRL; use use_transformers_continuous_batching",
    "vllm_importance_sampling_cap": "deprecated in TRL; use vllm_importance_sampling_clip_max",
    "max_tool_calling_iterations": "the GRPO stage trains single-turn answers (no tools)",
}
BUILT_IN_REWARDS = ("correct", "format", "length")
_CUSTOM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def problem(key: str, message: str) -> PydanticCustomError:
    """A check failure reported at ``key`` (dotted, below the model being validated) with its file:line."""
    return PydanticCustomError(CHECK_ERROR, "{message}", {"message": message, "at": key})


@functools.cache
def own_arguments(module: str, name: str) -> dict:
    """The arguments a TRL config class adds to TrainingArguments (and TRL's shared base), ``{name: TrainerArg}``,
    read from the installed source; {} when it cannot be read (the trainer's own check at train time remains)."""
    import ast

    from qwen35_tune.recipe.trainer_options import _argument, _class_chain

    try:
        chain = _class_chain(module, name)
        if not chain:
            return {}
        inherited = {n.target.id for cls, _ in chain[1:] for n in cls.body
                     if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}  # fmt: skip
        cls, where = chain[0]
        return {node.target.id: _argument(node.annotation, node.value, where) for node in cls.body
                if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id not in inherited and not node.target.id.startswith("_")}  # fmt: skip
    except (OSError, SyntaxError, ValueError, ImportError):
        return {}


def grpo_own_arguments() -> dict | None:
    """GRPOConfig's own arguments (see ``own_arguments``); None when the installed source cannot be read."""
    own = own_arguments(*GRPO_CONFIG)
    return own if "num_generations" in own else None


def extra_grpo_problem(key: str, value: Any) -> str | None:
    """Why ``grpo.<key>: value`` (a key without a typed field here) cannot be used, or None when it can."""
    from qwen35_tune.recipe.trainer_options import _non_finite, _type_problem

    if key in REFUSED:
        return REFUSED[key]
    arguments = grpo_own_arguments()
    if arguments is None:
        return _non_finite(value)
    if key not in arguments:
        names = sorted(set(arguments) - set(REFUSED))
        guess = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        return f"unknown key ({hint}not a GRPOConfig argument; batch, steps and learning rate go in train:)"
    problem_text = _type_problem(arguments[key], value) or _non_finite(value)
    if problem_text is None and key in EXTRA_CHOICES and value not in EXTRA_CHOICES[key]:
        problem_text = f"expected one of {', '.join(EXTRA_CHOICES[key])} (got {value!r})"
    return problem_text


class GrpoSection(StrictModel):
    """GRPO (``stage: grpo``): TRL GRPOConfig arguments under their own names; other GRPOConfig arguments of its own
    may be given too (checked against the installed TRL)."""

    model_config = ConfigDict(**{**StrictModel.model_config, "extra": "allow"})

    num_generations: int = Field(
        8, ge=2, le=bounds.MAX_BATCH, description="Completions sampled per prompt (the group whose rewards are "
        "compared). The rows of one generation round (train.global_batch_size, or per_device_train_batch_size x "
        "gradient_accumulation_steps x processes) must be a multiple of it.",
    )
    max_completion_length: int = Field(
        512, gt=0, le=bounds.MAX_TOKENS, description="Longest completion in tokens; prompts longer than "
        "train.max_length minus this are left out (counted as too long).",
    )
    temperature: float = Field(1.0, gt=0, le=100, description="Sampling temperature of the completions.")
    beta: float = Field(
        0.0, ge=0, le=1000, description="KL penalty against the reference model (0 = none and no reference pass; "
        "with LoRA the reference is the base with the adapter disabled, no second copy).",
    )
    epsilon: float = Field(0.2, gt=0, le=10, description="Lower clipping bound of the probability ratio.")
    epsilon_high: float | None = Field(
        None, gt=0, le=10, description="Upper clipping bound; None = epsilon (DAPO recommends 0.28)."
    )
    num_iterations: int = Field(
        1, gt=0, le=bounds.MAX_STEPS, description="Optimizer passes over each generation round (mu in the paper)."
    )
    loss_type: LossType = Field(
        "dapo", description="Loss normalisation: dapo (tokens of the accumulated batch), grpo (per sequence), "
        "dr_grpo, bnpo, cispo, sapo, luspo, vespo (TRL's definitions).",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the reward spread of the group, of the batch, or not at all."
    )
    importance_sampling_level: Literal["token", "sequence"] = Field(
        "token", description="Probability ratios per token (GRPO) or per sequence (GSPO)."
    )
    multi_objective_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = Field(
        "sum_then_normalize", description="Weighted sum of the rewards then normalise, or normalise each first (GDPO)."
    )
    mask_truncated_completions: bool = Field(
        False, description="Leave completions cut off at max_completion_length out of the loss."
    )
    use_vllm: bool = Field(
        False, description="Generate with vLLM (CUDA and the vllm package needed); false = transformers generate."
    )
    vllm_mode: Literal["colocate", "server"] = Field(
        "colocate", description="vLLM inside the training processes (colocate) or a separate `trl vllm-serve` server."
    )
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="Share of each GPU vLLM may take in colocate mode."
    )

    @model_validator(mode="after")
    def _extra_keys(self) -> GrpoSection:
        """Any other key must be a GRPOConfig argument of its own with a value of its type."""
        for key, value in (self.model_extra or {}).items():
            found = extra_grpo_problem(key, value)
            if found:
                raise problem(key, found)
        return self

    def config_kwargs(self) -> dict[str, Any]:
        """Every setting of the section as GRPOConfig keyword arguments."""
        return self.model_dump()


class RewardSpec(StrictModel):
    """One reward function and its weight: a built-in ``name``, or your own ``custom: module:function``."""

    name: str | None = Field(
        None, description="Built-in reward: correct (checks the answer by row kind: math-verify, code tests pass "
        "fraction, multiple-choice label, chrF), format (one closed <think>...</think> then an answer; no think tags "
        "in non-thinking mode), length (0 up to max_tokens, then falling linearly to -1 at "
        "grpo.max_completion_length).",
    )
    custom: str | None = Field(
        None, description="Your own reward function as 'module:function' (importable, or a .py file in the recipe's "
        "folder); called like TRL reward functions with the rows' 'check' dicts; needs trust_code: true.",
    )
    trust_code: bool = Field(
        False, description="Confirms that a custom reward's Python code may run inside the training process."
    )
    weight: float = Field(1.0, ge=-1000, le=1000, description="Weight of this reward in the sum the advantages use.")
    max_tokens: int | None = Field(
        None, gt=0, le=bounds.MAX_TOKENS, description="length only: completions up to this many tokens get 0."
    )
    timeout_s: float = Field(
        10.0, gt=0, le=3600, description="correct, code rows: wall-clock seconds per sandboxed test run."
    )
    memory_mb: int = Field(
        1024, ge=64, le=1_048_576, description="correct, code rows: address-space limit of each sandboxed run (MiB)."
    )
    workers: int = Field(
        4, gt=0, le=bounds.MAX_WORKERS, description="correct, code rows: sandboxed runs at once (a bounded pool)."
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_name(cls, data: Any) -> Any:
        """``rewards: [correct, format]`` is short for ``[{name: correct}, {name: format}]``."""
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name")
    @classmethod
    def _known_name(cls, value: str | None) -> str | None:
        """A misspelt reward should fail at validate time with a guess, not silently train on nothing."""
        if value is None or value in BUILT_IN_REWARDS:
            return value
        guess = difflib.get_close_matches(value, BUILT_IN_REWARDS, n=1, cutoff=0.5)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        raise ValueError(f"unknown reward '{value}' ({hint}built-in rewards: {', '.join(BUILT_IN_REWARDS)}; your own "
                         "function: custom: 'module:function' with trust_code: true)")

    @field_validator("custom")
    @classmethod
    def _module_function(cls, value: str | None) -> str | None:
        """'package.module:function', and the module's top-level package findable (nothing is imported here)."""
        if value is None:
            return None
        if not _CUSTOM.fullmatch(value):
            raise ValueError("must be 'module:function' (e.g. 'my_rewards:brevity')")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> RewardSpec:
        """Exactly one of name / custom; custom code only with trust_code; settings only where they apply."""
        if (self.name is None) == (self.custom is None):
            raise problem("name", "give either name (a built-in reward) or custom ('module:function'), one of them")
        if self.custom is not None and not self.trust_code:
            raise problem("trust_code", f"custom reward '{self.custom}' runs its Python code in the training "
                          "process; set trust_code: true to allow it")
        if self.custom is None and self.trust_code:
            raise problem("trust_code", "only used with custom: (built-in rewards run no code of yours)")
        # Compared with the defaults, not with what was written: a run's recipe.yaml spells every default out.
        if self.name != "length" and self.max_tokens is not None:
            raise problem("max_tokens", "only used by the length reward")
        if self.name == "length" and self.max_tokens is None:
            raise problem("max_tokens", "the length reward needs its token budget: max_tokens: N (completions up to "
                          "N tokens get 0, longer ones less, down to -1 at grpo.max_completion_length)")
        fields = type(self).model_fields
        wrong = [k for k in ("timeout_s", "memory_mb", "workers") if getattr(self, k) != fields[k].default]
        if wrong and self.name != "correct":
            raise problem(wrong[0], "only used by the correct reward (sandboxed code tests)")
        return self

    @property
    def label(self) -> str:
        """The name its metrics are logged under (rewards/<label>/mean): the built-in name or 'module:function'."""
        return self.name or self.custom or ""


def custom_reward_problem(spec: RewardSpec, search: list[str]) -> str | None:
    """Why a custom reward's module cannot be found (its top-level package on sys.path or in ``search``), or None."""
    import os

    if spec.custom is None:
        return None
    top = spec.custom.split(":")[0].split(".")[0]
    if any(os.path.isfile(os.path.join(folder, top + ".py")) or os.path.isdir(os.path.join(folder, top))
           for folder in search):  # fmt: skip
        return None
    try:
        if importlib.util.find_spec(top) is not None:
            return None
    except (ImportError, ValueError):
        pass
    return f"module '{top}' not found (looked in {', '.join(search) or 'sys.path'} and on sys.path)"


def grpo_settings(recipe) -> GrpoSection:
    """The recipe's ``grpo:`` section, or its defaults when the recipe has none."""
    return recipe.grpo or GrpoSection()


def grpo_problems(recipe) -> list[tuple[str, str]]:
    """(key, message) for ``rewards:`` outside stage: grpo, and the GRPO stage's own checks (recipe/stages.py checks
    the section, the card formats and train.extra against GRPOConfig for every stage)."""
    if recipe.stage != "grpo":
        return [("rewards", f"only used with stage: grpo (this recipe's stage is {recipe.stage})")] \
            if recipe.rewards else []
    train, grpo = recipe.train, grpo_settings(recipe)
    found = []
    if train.packing:
        found.append(("train.packing", "stage: grpo generates its completions and scores them per sequence; "
                      "packing does not apply (set train.packing: false)"))
    if not recipe.rewards:
        found.append(("rewards", "stage: grpo needs at least one reward, e.g. rewards: [{name: correct}, "
                      "{name: format, weight: 0.2}]"))
    names = [spec.label for spec in recipe.rewards]
    found += [(f"rewards.{i}", f"'{name}' is listed twice") for i, name in enumerate(names) if name in names[:i]]
    for i, spec in enumerate(recipe.rewards):
        if spec.name == "length" and spec.max_tokens is not None and spec.max_tokens >= grpo.max_completion_length:
            found.append((f"rewards.{i}.max_tokens", f"must be below grpo.max_completion_length "
                          f"({grpo.max_completion_length}): no completion could exceed it"))
    if grpo.max_completion_length >= train.max_length:
        found.append(("grpo.max_completion_length", f"must be below train.max_length ({train.max_length}), which "
                      "bounds prompt + completion"))
    if train.global_batch_size is not None and train.global_batch_size % grpo.num_generations:
        found.append(("train.global_batch_size", f"{train.global_batch_size} completions per step do not hold whole "
                      f"groups of grpo.num_generations ({grpo.num_generations}); use a multiple of it"))
    for key in train.extra:
        if key in own_arguments(*GRPO_CONFIG):
            found.append((f"train.extra.{key}", f"a GRPO setting: set it as grpo.{key}"))
    search = [str(recipe.source_files[0].parent)] if recipe.source_files else []
    for i, spec in enumerate(recipe.rewards):
        missing = custom_reward_problem(spec, search)
        if missing:
            found.append((f"rewards.{i}.custom", missing))
    return found
