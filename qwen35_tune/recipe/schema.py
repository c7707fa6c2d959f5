"""Recipe schema: every key a recipe may set, typed and described (the descriptions drive --help and the docs).

Library-owned concepts keep the library's names: `train` = TRL SFTConfig / TrainingArguments, `method.lora` =
peft LoraConfig, `method.quantization` = bitsandbytes BitsAndBytesConfig. Our own names only for our concepts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from qwen35_tune.cards.load import load_card
from qwen35_tune.cards.schema import DataCard
from qwen35_tune.errors import UserError
from qwen35_tune.recipe import bounds
from qwen35_tune.recipe.dpo_section import DPOSection
from qwen35_tune.recipe.eval_section import EvalSection
from qwen35_tune.recipe.grpo_section import GrpoSection, RewardSpec
from qwen35_tune.recipe.stages import STAGE_SECTIONS, STAGES, stage_problems
from qwen35_tune.recipe.trainer_options import argument_problem, choice_problem
from qwen35_tune.recipe.vision_checks import PartLearningRates, recipe_vision_problem
from qwen35_tune.registry import TINY_KINDS, TINY_SCHEME
from qwen35_tune.yaml_lines import CHECK_ERROR, StrictModel, dump_yaml, shown

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3")
HUB_KERNEL = re.compile(r"[^/:@\s]+/[^/:@\s]+(?:@[^/:@\s]+)?(?::[^/:@\s]+)?")  # transformers' is_kernel pattern


def problem_at(key: str, message: str) -> PydanticCustomError:
    """A cross-field error reported at `key` (dotted, below the validated model) rather than at the whole section."""
    return PydanticCustomError(CHECK_ERROR, "{message}", {"message": message, "at": key})


class VisionSection(StrictModel):
    """Pixel budgets for images and videos (vision checkpoints only); the processor resizes media to fit them."""

    min_pixels: int = Field(
        32 * 32, gt=0, le=bounds.MAX_PIXELS, description="Smallest image area in pixels; smaller images are upscaled."
    )
    max_pixels: int = Field(
        1024 * 1024, gt=0, le=bounds.MAX_PIXELS,
        description="Largest image (and video frame) area in pixels; larger ones are downscaled.",
    )
    max_frames: int = Field(
        16, gt=0, le=bounds.MAX_FRAMES, description="At most this many frames are sampled from each video."
    )
    fps: float = Field(
        2.0, gt=0, le=bounds.MAX_FPS, description="Frames sampled per second of video (capped by max_frames)."
    )

    @model_validator(mode="after")
    def _budget_order(self) -> VisionSection:
        """A minimum above the maximum leaves the processor no valid size."""
        if self.min_pixels > self.max_pixels:
            raise problem_at("min_pixels", f"must not exceed max_pixels ({self.max_pixels})")
        return self


class ModelSection(StrictModel):
    """The base model to fine-tune."""

    name_or_path: str = Field(
        min_length=1,
        description="Hub id (e.g. 'Qwen/Qwen3.5-9B'), a local folder, or a tiny test model: "
        + ", ".join(TINY_SCHEME + k for k in TINY_KINDS),
    )
    revision: str | None = Field(
        None, min_length=1, description="Hub branch, tag or commit to pin; None = the default branch."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Dtype to load weights in; 'auto' = the checkpoint's own dtype."
    )
    attn_implementation: str | None = Field(
        None, description="Attention kernel for the full-attention layers: " + ", ".join(ATTN_IMPLEMENTATIONS)
        + " or a Hub kernel 'org/repo[:function]' (e.g. kernels-community/flash-attn2); None = transformers' default "
        "(sdpa). Flash-attention and Hub kernels need CUDA and give packed rows the varlen path (cu_seq_lens) "
        "instead of sdpa's dense block-diagonal mask.",
    )
    allow_slow_kernels: bool = Field(
        False, description="On CUDA, train even without the flash-linear-attention / causal-conv1d kernels "
        "(the torch Gated DeltaNet fallback is many times slower)."
    )
    vision: VisionSection = Field(
        default_factory=VisionSection, description="Image/video pixel budgets for vision checkpoints."
    )
    init_from: str | None = Field(
        None, min_length=1, description="Start from an earlier stage: a run directory (a LoRA/QLoRA run's adapter "
        "is trained further; a full or merged run's weights become the base), an adapter folder, or a merged / full "
        "model folder (its weights become the base). The chain is recorded in run.json and the model card. Relative "
        "to the working directory; stored absolute. None = start from model.name_or_path.",
    )

    @field_validator("attn_implementation")
    @classmethod
    def _known_attention(cls, value: str | None) -> str | None:
        """A typo here would otherwise surface as a transformers error after the data is built and the model loaded."""
        if value is None or value in ATTN_IMPLEMENTATIONS or HUB_KERNEL.fullmatch(value):
            return value
        raise ValueError(f"unknown attention implementation; choose {', '.join(ATTN_IMPLEMENTATIONS)} or a Hub "
                         "kernel 'org/repo[:function]' such as kernels-community/flash-attn2")

    @field_validator("init_from")
    @classmethod
    def _absolute_init_from(cls, value: str | None) -> str | None:
        """Kept absolute in the run's recipe.yaml, so the chain it records does not depend on where merge runs."""
        return None if value is None else os.path.abspath(Path(value).expanduser())

    @field_validator("name_or_path")
    @classmethod
    def _known_tiny_kind(cls, value: str) -> str:
        """Catch `tiny://mo` here rather than after the trainer has started."""
        if value.startswith(TINY_SCHEME) and value[len(TINY_SCHEME) :] not in TINY_KINDS:
            raise ValueError("unknown tiny model; choose one of " + ", ".join(TINY_SCHEME + k for k in TINY_KINDS))
        return value

    @property
    def tiny_kind(self) -> str | None:
        """'dense', 'moe', ... for a tiny:// model, else None."""
        return self.name_or_path[len(TINY_SCHEME) :] if self.name_or_path.startswith(TINY_SCHEME) else None


class LoraSection(StrictModel):
    """LoRA adapter settings; the names are peft's LoraConfig arguments."""

    r: int = Field(16, gt=0, le=bounds.MAX_LORA_RANK, description="Adapter rank.")
    lora_alpha: int | float = Field(
        32, gt=0, le=bounds.MAX_LORA_ALPHA, description="Scaling numerator: updates are scaled by lora_alpha / r."
    )
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input (0 <= x < 1).")
    target_modules: list[str] | str = Field(
        "all-linear", description="Module names (or a regex string, or 'all-linear') that get adapters."
    )
    target_parameters: list[str] | None = Field(
        None, description="Parameter names to adapt directly, e.g. fused MoE expert weights."
    )
    modules_to_save: list[str] | None = Field(None, description="Modules trained in full and saved with the adapter.")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling lora_alpha / sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases are trained.")

    @field_validator("target_modules")
    @classmethod
    def _usable_targets(cls, value: list[str] | str) -> list[str] | str:
        """No target trains nothing, and a target string that is no preset is a regex peft compiles at load time."""
        from qwen35_tune.registry import ALL_PRESETS, PRESET_ALIASES

        names = [value] if isinstance(value, str) else value
        if not names or not all(name.strip() for name in names):
            raise ValueError("name at least one module or preset (e.g. 'all-linear'); empty names match nothing")
        if isinstance(value, str) and PRESET_ALIASES.get(value, value) not in ALL_PRESETS:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is neither a preset nor a valid regular expression ({exc})") from None
        return value


class QuantSection(StrictModel):
    """4-bit loading for QLoRA; the names are bitsandbytes' BitsAndBytesConfig arguments."""

    load_in_4bit: bool = Field(True, description="Load the frozen base weights in 4 bit (required for qlora).")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    bnb_4bit_use_double_quant: bool = Field(True, description="Also quantize the quantization constants.")
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="Dtype the 4-bit weights are computed in."
    )


class MethodSection(StrictModel):
    """How the model is trained: LoRA adapters, LoRA on a 4-bit base (QLoRA), or every weight."""

    kind: Literal["lora", "qlora", "full"] = Field("lora", description="'lora', 'qlora' or 'full' fine-tune.")
    lora: LoraSection = Field(default_factory=LoraSection, description="Adapter settings (lora and qlora).")
    quantization: QuantSection | None = Field(
        None, description="QLoRA 4-bit settings; only with kind: qlora, which fills in the defaults when omitted."
    )
    freeze: list[Literal["vision", "projector", "language_model", "embeddings", "router"]] | None = Field(
        None, description="Full fine-tune only: parts kept frozen; None = the vision tower and projector."
    )
    acknowledge_untouched: bool = Field(
        False, description="Train even though an MoE model's routed experts or linear-attention projections get "
        "no adapter (otherwise the preflight check stops the run).",
    )

    @model_validator(mode="before")
    @classmethod
    def _qlora_defaults(cls, data: Any) -> Any:
        """kind: qlora without a quantization section means the default 4-bit settings."""
        if isinstance(data, dict) and data.get("kind") == "qlora" and data.get("quantization") is None:
            return {**data, "quantization": {}}
        return data

    @model_validator(mode="after")
    def _quantization_fits_kind(self) -> MethodSection:
        """Quantization settings that the chosen method would ignore are a mistake, not a no-op."""
        if self.kind == "qlora" and self.quantization and not self.quantization.load_in_4bit:
            raise problem_at("quantization.load_in_4bit", "kind: qlora needs load_in_4bit: true")
        if self.kind == "full" and self.quantization is not None:
            raise problem_at("quantization", "QLoRA quantization cannot be combined with a full fine-tune")
        if self.kind == "lora" and self.quantization is not None:
            raise problem_at("quantization", "quantization is only used with kind: qlora (set kind, or remove this)")
        return self

    @model_validator(mode="after")
    def _adapter_options_fit_targets(self) -> MethodSection:
        """peft adapts fused MoE expert parameters only without dropout and DoRA; freezing is for full fine-tunes."""
        from qwen35_tune.registry import surely_targets_experts

        if surely_targets_experts(self.lora.target_modules, self.lora.target_parameters) and self.kind != "full":
            why = "routed experts (fused parameters) get adapters only"
            if self.lora.lora_dropout:
                raise problem_at("lora.lora_dropout", f"{why} with lora_dropout: 0")
            if self.lora.use_dora:
                raise problem_at("lora.use_dora", f"{why} without DoRA; drop 'routed_experts' or use_dora")
        if self.freeze is not None and self.kind != "full":
            raise problem_at("freeze", "only for kind: full (LoRA trains the adapters alone; choose presets instead)")
        return self


class CardRef(StrictModel):
    """One data card in the mix, and how much of it to use."""

    path: str = Field(description="Data card YAML, relative to the recipe file that names it; stored absolute.")
    weight: float = Field(
        1.0, gt=0, le=bounds.MAX_CARD_WEIGHT, description="Relative share of this card in the training mix: of the "
        "rows when every card is read up front, of the tokens when any card streams (card streaming: true)."
    )
    max_samples: int | None = Field(
        None, gt=0, le=bounds.MAX_ROWS, description="Use at most this many training rows of the card."
    )
    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Fraction of the card's rows held out for evaluation (0 <= x < 1)."
    )
    eval_split: str | None = Field(
        None, description="Hub cards: another split of the same dataset (e.g. 'test') used as its eval rows."
    )

    @model_validator(mode="after")
    def _one_holdout(self) -> CardRef:
        """A card's eval rows come from a random holdout or from a split, not both (which would double count)."""
        if self.eval_split is not None and self.eval_fraction > 0:
            raise problem_at("eval_split", "give either eval_split or eval_fraction, not both")
        return self


class DecontaminateSection(StrictModel):
    """Remove training rows that overlap evaluation rows (so eval scores measure generalisation)."""

    ngram: int = Field(8, gt=0, le=bounds.MAX_NGRAM, description="Word n-gram length compared.")
    max_overlap: float = Field(
        0.5, gt=0, le=1, description="Drop a training row when this share of its n-grams occurs in eval rows."
    )
    against: list[str] | None = Field(
        None, description="Eval cards (names, or paths as written in data.eval_cards) to check; None = all of them."
    )


class NearDedupeSection(StrictModel):
    """MinHash near-duplicate removal for format: text documents (datasketch signatures, LSH bands)."""

    threshold: float = Field(
        0.8, gt=0, lt=1, description="Estimated Jaccard similarity of word shingles above which a document counts "
        "as a near-duplicate of an earlier one (the LSH bands' midpoint)."
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations per document (signature length).")
    shingle_words: int = Field(5, gt=0, le=bounds.MAX_NGRAM, description="Words per shingle.")


class DataSection(StrictModel):
    """Which data cards to train and evaluate on."""

    cards: list[CardRef] = Field(min_length=1, description="Training data cards (at least one).")
    eval_cards: list[CardRef] = Field([], description="Cards used only for evaluation.")
    dedupe: bool = Field(True, description="Drop exact duplicate training rows (case/whitespace-normalised), counted.")
    decontaminate: DecontaminateSection | None = Field(
        None, description="Drop training rows that overlap the eval cards' rows; None = off."
    )
    too_long: Literal["truncate", "drop"] = Field(
        "truncate", description="Rows longer than train.max_length: cut at max_length, or drop them (counted)."
    )
    near_dedupe: NearDedupeSection | None = Field(
        None, description="Drop format: text documents that nearly repeat an earlier one (MinHash); None = off."
    )
    dedupe_capacity: int = Field(
        2_000_000, gt=0, le=10**10, description="Streaming cards: documents per pass the dedupe filters are sized "
        "for (fixed memory: about 3 bytes per document for exact dedupe, 3 per LSH band with near_dedupe; past it, "
        "more documents are wrongly called duplicates)."
    )


class ChatSection(StrictModel):
    """How conversations are rendered into tokens, and which tokens are trained."""

    template: str | None = Field(
        None, description="Chat template .jinja file, relative to the recipe file; None = the model's own template."
    )
    enable_thinking: bool | None = Field(
        None, validation_alias=AliasChoices("enable_thinking", "thinking"),
        description="Thinking policy (also spelled chat.thinking: on/off): true = thinking mode, the final turn's "
        "reasoning is trained; false = non-thinking answers, reasoning dropped; None = the template's default. "
        "A row's own enable_thinking wins.",
    )
    train_on: Literal["assistant_only", "final_turn_only", "all"] = Field(
        "assistant_only", description="Which tokens carry loss: every assistant turn, the last one, or all tokens."
    )
    mask_empty_think: bool = Field(
        True, description="Keep an empty <think></think> block out of the loss (it teaches nothing)."
    )

    @field_validator("enable_thinking", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        """`thinking: on` / `off` is the documented spelling; YAML 1.2 reads both as strings."""
        return {"on": True, "off": False}.get(value.lower(), value) if isinstance(value, str) else value

    @field_validator("template")
    @classmethod
    def _existing_jinja(cls, value: str | None) -> str | None:
        """Templates live in .jinja files, never inline; a missing one should fail before training."""
        if value is None:
            return None
        if not value.endswith(".jinja"):
            raise ValueError("must be a .jinja file")
        path = os.path.abspath(Path(value).expanduser())
        if not os.path.isfile(path):
            raise ValueError("template file not found")
        return path


class TrainSection(StrictModel):
    """Trainer settings; the names are TRL SFTConfig / transformers TrainingArguments arguments."""

    num_train_epochs: float = Field(
        1.0, gt=0, le=bounds.MAX_EPOCHS, description="Passes over the training data (ignored if max_steps > 0)."
    )
    max_steps: int = Field(
        -1, ge=-1, le=bounds.MAX_STEPS, description="Stop after this many optimizer steps; -1 = use num_train_epochs."
    )
    per_device_train_batch_size: int = Field(
        2, gt=0, le=bounds.MAX_BATCH, description="Training sequences per device per step."
    )
    per_device_eval_batch_size: int | None = Field(
        None, gt=0, le=bounds.MAX_BATCH, description="Evaluation sequences per device per step; None = "
        "per_device_train_batch_size (evaluation keeps no activations for a backward pass: it fits where training "
        "does).",
    )
    gradient_accumulation_steps: int = Field(
        1, gt=0, le=bounds.MAX_BATCH, description="Micro-batches summed before each optimizer step."
    )
    global_batch_size: int | None = Field(
        None, gt=0, le=bounds.MAX_BATCH * bounds.MAX_BATCH,
        description="Rows per optimizer step over all processes (with packing: true, packed rows of packing_length "
        "tokens). gradient_accumulation_steps is then derived at start: global_batch_size / "
        "(per_device_train_batch_size x processes). None = per_device_train_batch_size x "
        "gradient_accumulation_steps on each process, so the global batch grows with the process count.",
    )
    learning_rate: float = Field(2e-4, gt=0, le=bounds.MAX_LEARNING_RATE, description="Peak learning rate.")
    lr_scheduler_type: str = Field("cosine", description="Scheduler name, e.g. 'cosine', 'linear', 'constant'.")
    warmup_steps: int | float = Field(
        0, ge=0, le=bounds.MAX_STEPS, description="Warmup steps; a float below 1 is a fraction of the total steps."
    )
    weight_decay: float = Field(0.0, ge=0, le=bounds.MAX_WEIGHT_DECAY, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm.")
    optim: str = Field("adamw_torch", description="Optimizer name, e.g. 'adamw_torch', 'paged_adamw_8bit'.")
    logging_steps: int = Field(
        1, gt=0, le=bounds.MAX_STEPS, description="Log loss and learning rate every this many steps."
    )
    save_steps: int = Field(
        500, gt=0, le=bounds.MAX_STEPS, description="Checkpoint every this many steps (with save_strategy: steps)."
    )
    save_strategy: Literal["no", "steps", "epoch"] = Field(
        "no", description="When to write intermediate checkpoints; the final weights are always saved."
    )
    save_total_limit: int | None = Field(
        None, gt=0, le=bounds.MAX_STEPS, description="Keep at most this many checkpoints."
    )
    eval_strategy: Literal["no", "steps", "epoch"] | None = Field(
        None, description="When to compute the eval loss (needs eval rows); None = 'steps' when the run has eval rows "
        "(a card's eval_fraction or eval_split, or data.eval_cards), else 'no'. 'steps' also evaluates at the end.",
    )
    eval_steps: int | None = Field(
        None, gt=0, le=bounds.MAX_STEPS, description="Evaluate every this many steps; None = a tenth of the run's "
        "steps (rounded up).",
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    max_length: int = Field(
        2048, gt=0, le=bounds.MAX_TOKENS, description="Longest sequence in tokens; longer rows are truncated."
    )
    packing: bool = Field(False, description="Pack several rows into each sequence (attention kept per row).")
    packing_length: int | None = Field(
        None, gt=0, le=bounds.MAX_TOKENS, description="Tokens per packed row with packing: true; None = max_length. "
        "Must be at least max_length, so a row is never split.",
    )
    train_sampling_strategy: Literal["random", "sequential", "group_by_length"] = Field(
        "random", description="Row order: 'group_by_length' batches rows of similar length to cut padding (the "
        "alternative to packing, which needs 'random' or 'sequential').",
    )
    dataloader_num_workers: int = Field(0, ge=0, le=bounds.MAX_WORKERS, description="Worker processes loading "
                                        "batches.")
    bf16: bool | None = Field(None, description="bfloat16 mixed precision; None = decide from model.dtype and device.")
    router_aux_loss_coef: float | None = Field(
        None, ge=0, le=bounds.MAX_AUX_LOSS_COEF, description="MoE router load-balancing loss weight (logged as "
        "aux_loss); None = the model config's value, 0 = off. MoE models only.",
    )
    learning_rates: PartLearningRates = Field(
        default_factory=PartLearningRates, description="Own peak learning rates for parts of the model, e.g. "
        "{vision: 2.0e-5, projector: 1.0e-4} (the rest uses learning_rate). A full fine-tune trains a part given "
        "a rate even if method.freeze would freeze it by default; LoRA needs that part's preset in "
        "method.lora.target_modules.",
    )
    extra: dict[str, Any] = Field(
        {},
        description="Escape hatch: further SFTConfig arguments, passed through as given and checked when the "
        "trainer's config object is built. Keys that have a typed place in the recipe are refused here.",
    )

    @field_validator("max_steps")
    @classmethod
    def _no_zero_steps(cls, value: int) -> int:
        """transformers reads max_steps: 0 as "no limit" and trains whole epochs, which nobody who wrote 0 meant."""
        if value == 0:
            raise ValueError("0 would train whole epochs (transformers reads it as no limit): give a positive "
                             "number of steps, or -1 to train num_train_epochs")
        return value

    @field_validator("lr_scheduler_type", "optim")
    @classmethod
    def _known_to_the_trainer(cls, value: str, info: ValidationInfo) -> str:
        """A misspelt scheduler or optimizer fails here, not when the trainer starts after the data build."""
        problem = choice_problem(info.field_name, value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _packing_settings(self) -> TrainSection:
        """Packing and length-grouped padding are alternatives; a packed row must hold the longest row whole."""
        if self.packing_length is not None and self.packing_length < self.max_length:
            raise problem_at("packing_length", f"must be at least train.max_length ({self.max_length})")
        if self.packing_length is not None and not self.packing:
            raise problem_at("packing_length", "only used with train.packing: true")
        if self.packing and self.train_sampling_strategy == "group_by_length":
            raise problem_at("train_sampling_strategy", "group_by_length is for padded batches; packing: true "
                             "already fills every row (choose one)")
        return self

    @model_validator(mode="after")
    def _global_batch_settings(self) -> TrainSection:
        """A global batch derives the accumulation (both given contradict); it must hold whole micro-batches."""
        if self.global_batch_size is None:
            return self
        if "gradient_accumulation_steps" in self.model_fields_set:
            raise problem_at("gradient_accumulation_steps", "is derived from train.global_batch_size "
                             f"({self.global_batch_size}) and the process count; give one of the two (set "
                             "global_batch_size: null to fix the accumulation per process instead)")
        if self.global_batch_size % self.per_device_train_batch_size:
            raise problem_at("global_batch_size", f"{self.global_batch_size} is not a multiple of "
                             f"per_device_train_batch_size ({self.per_device_train_batch_size})")
        return self

    def accumulation_for(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each of ``world_size`` processes (derived from global_batch_size)."""
        if self.global_batch_size is None:
            return self.gradient_accumulation_steps
        micro = self.per_device_train_batch_size * world_size
        if self.global_batch_size % micro:
            lower, upper = self.global_batch_size // micro * micro, -(-self.global_batch_size // micro) * micro
            choices = " or ".join(str(n) for n in (lower, upper) if n)
            raise UserError(f"train.global_batch_size: {self.global_batch_size} rows do not split over {world_size} "
                            f"processes x per_device_train_batch_size {self.per_device_train_batch_size} (= {micro} "
                            f"rows per micro-step); use a multiple of {micro} (e.g. {choices}), or change "
                            "per_device_train_batch_size or the process count")
        return self.global_batch_size // micro

    def global_batch_for(self, world_size: int) -> int:
        """Rows per optimizer step over ``world_size`` processes, as the trainer will run it."""
        return self.per_device_train_batch_size * self.accumulation_for(world_size) * world_size

    @field_validator("extra")
    @classmethod
    def _no_shadowed_keys(cls, extra: dict[str, Any]) -> dict[str, Any]:
        """One place per setting: a typed key must not be set a second, unchecked way through extra; the rest must be
        SFTConfig arguments with values of their type (finite numbers, known choices)."""
        from qwen35_tune.recipe.stages import other_stage_argument

        for key, value in extra.items():
            problem = extra_key_refused(key) or argument_problem(key, value)
            if problem and not (problem.startswith("not an SFTConfig") and other_stage_argument(key)):
                raise problem_at(key, problem)  # (another stage's argument is checked against the recipe's stage)
        return extra


_EXTRA_HOMES = {"output_dir": "output_dir", "seed": "seed", "run_name": "tracking.run_name",
                "report_to": "tracking.report_to", "data_seed": "seed",
                "activation_checkpointing": "train.gradient_checkpointing"}  # fmt: skip
# SFTConfig arguments that train/sft.py sets from the recipe or the machine (passing them again would clash).
_RUNNER_SET = {"disable_tqdm": "a progress bar of its own", "use_cpu": "from the devices it finds",
               "dataset_kwargs": "rows arrive tokenised and masked", "remove_unused_columns": "its collator needs "
               "every column"}  # fmt: skip


def extra_key_refused(key: str) -> str | None:
    """Why `key` may not be set in train.extra (a typed key elsewhere, or set by the runner), or None if it may."""
    home = f"train.{key}" if key in TrainSection.model_fields and key != "extra" else _EXTRA_HOMES.get(key)
    if home:
        return f"set this as {home}, not in train.extra"
    if key in _RUNNER_SET:
        return f"qwen35-tune sets this itself ({_RUNNER_SET[key]}); remove it from train.extra"
    return None


class TrackingSection(StrictModel):
    """Where metrics go besides the run folder's metrics.jsonl."""

    report_to: list[Literal["none", "wandb", "tensorboard"]] = Field(
        ["none"], description="Experiment trackers: ['none'], or any of 'wandb', 'tensorboard'."
    )
    project: str | None = Field(None, description="Tracker project name (e.g. the wandb project).")
    run_name: str | None = Field(None, description="Run name shown in the tracker; None = the recipe's name.")

    @field_validator("report_to")
    @classmethod
    def _none_alone(cls, value: list[str]) -> list[str]:
        """'none' next to a tracker is contradictory."""
        if "none" in value and len(value) > 1:
            raise ValueError("'none' cannot be combined with a tracker")
        return value


class ExportSection(StrictModel):
    """What to do with the trained weights after training."""

    merge: bool = Field(False, description="Merge the adapter into the base weights into a standalone model folder.")
    merged_dir: str | None = Field(None, description="Folder for the merged model; None = <run_dir>/merged.")
    push_to_hub: bool = Field(False, description="Upload the merged model (or adapter) to the Hub.")
    hub_repo_id: str | None = Field(None, description="Hub repo to upload to, 'user/name' (needed for push_to_hub).")
    private: bool = Field(True, description="Create the Hub repo as private.")
    adapter_only: bool = Field(
        False, description="Export (and publish) the adapter in peft format with its own model card, not a merge."
    )
    license: str | None = Field(
        None, description="License id for the model card (e.g. 'apache-2.0'); None = the base model card's license."
    )
    verify: bool = Field(True, description="Verify the merged folder (tensors, reload, logits, generation).")
    qlora_merge_base: Literal["dequantized", "original"] = Field(
        "dequantized", description="QLoRA runs: merge into the dequantised 4-bit base the adapter was trained on "
        "(reproduces the trained model; measured default) or into the original 16-bit base.",
    )

    @field_validator("hub_repo_id")
    @classmethod
    def _valid_repo_id(cls, value: str | None) -> str | None:
        """An impossible repo id would fail the upload only after the whole run."""
        if value is None:
            return None
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(value)
        except HFValidationError:
            raise ValueError("must be a Hub repo id 'user/name' (letters, digits, '-', '_', '.')") from None
        return value

    @model_validator(mode="after")
    def _repo_for_push(self) -> ExportSection:
        """Uploading needs a destination, and something exported to upload."""
        if self.push_to_hub and not self.hub_repo_id:
            raise problem_at("hub_repo_id", "push_to_hub: true needs hub_repo_id ('user/name')")
        if self.push_to_hub and not self.merge:
            raise problem_at("push_to_hub", "uploads the exported folder: also set export.merge: true "
                             "(with adapter_only: true to publish just the adapter)")
        if self.push_to_hub and not self.verify and not self.adapter_only:
            raise problem_at("verify", "push_to_hub uploads only a verified merge (publish refuses an unverified "
                             "folder): keep verify: true")
        return self


SECTIONS = ("model", "method", "data", "chat", "train", "tracking", "export", "eval", "dpo", "grpo")
# Names users bring from other tools, for "did you mean" (difflib alone cannot see that rank means r).
ALIASES = {
    "rank": "r", "lora_r": "r", "lora_rank": "r", "alpha": "lora_alpha", "dropout": "lora_dropout",
    "lr": "learning_rate", "epochs": "num_train_epochs", "num_epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size", "micro_batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps", "gradient_accumulation": "gradient_accumulation_steps",
    "warmup_ratio": "warmup_steps", "max_seq_length": "max_length", "sequence_len": "max_length",
    "seq_len": "max_length", "model_name": "name_or_path", "base_model": "name_or_path", "model_id": "name_or_path",
    "datasets": "cards", "dataset": "cards", "chat_template": "template",
}  # fmt: skip


class Recipe(StrictModel):
    """A whole fine-tuning run: model, method, data, chat rendering, trainer settings, tracking and export."""

    extends: str | list[str] | None = Field(
        None, description="Recipe file(s) this one builds on, relative to this file; read by the loader, not kept."
    )
    name: str = Field(max_length=bounds.MAX_NAME_LENGTH,
                      description="Run name (letters, digits, . _ -); names the run directory and tracker run.")
    description: str = Field("", description="What this recipe is for.")
    seed: int = Field(
        42, ge=0, le=bounds.MAX_SEED, description="Random seed for initialisation, shuffling and eval holdout."
    )
    output_dir: str | None = Field(
        None, min_length=1,
        description="Run directory; None = chosen by the CLI (under runs/, named after the recipe).",
    )
    stage: Literal[STAGES] = Field(
        "sft", description="Training stage: 'sft' (supervised fine-tuning), 'dpo' (preference tuning on format: "
        "preference cards, settings in dpo:) or 'grpo' (reinforcement learning with verifiable rewards).",
    )
    model: ModelSection = Field(description="The base model.")
    method: MethodSection = Field(default_factory=MethodSection, description="LoRA, QLoRA or full fine-tune.")
    data: DataSection = Field(description="Training (and evaluation) data cards.")
    chat: ChatSection = Field(default_factory=ChatSection, description="Chat template and loss masking.")
    train: TrainSection = Field(default_factory=TrainSection, description="Trainer settings (SFTConfig names).")
    tracking: TrackingSection = Field(default_factory=TrackingSection, description="Experiment trackers.")
    export: ExportSection = Field(default_factory=ExportSection, description="Merging and publishing.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Generation eval during/after training.")
    dpo: DPOSection | None = Field(
        None, description="Preference-tuning settings (stage: dpo; TRL DPOConfig names); None = TRL's defaults."
    )
    grpo: GrpoSection | None = Field(
        None, description="Reinforcement-learning settings (stage: grpo; TRL GRPOConfig names); None = the defaults "
        "shown under grpo."
    )
    rewards: list[RewardSpec] = Field(
        [], description="stage: grpo reward functions with weights, e.g. [{name: correct}, {name: format, weight: "
        "0.2}, {name: length, max_tokens: 2048}]; a plain name is short for {name: NAME}.",
    )

    _source_files: tuple[Path, ...] = PrivateAttr(())
    _cards: dict[str, DataCard] = PrivateAttr(default_factory=dict)
    _origins: dict = PrivateAttr(default_factory=dict)  # key path -> yaml_lines.Origin (file:line or override)

    @field_validator("name")
    @classmethod
    def _usable_as_folder_name(cls, value: str) -> str:
        """The name becomes a folder and a tracker run name, so no slashes or spaces."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            raise ValueError("must be letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """`train:` with every key commented out means the defaults, not "expected a mapping"."""
        if isinstance(data, dict):
            return {k: ({} if k in SECTIONS and v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _eval_needs_data(self) -> Recipe:
        """Evaluating with nothing to evaluate on would fail only after the model has loaded."""
        if self.train.eval_strategy not in (None, "no") and not self.has_eval_data:
            raise problem_at(
                "train.eval_strategy", "evaluation needs eval data: set data.eval_cards or a card's eval_fraction"
            )
        return self

    @model_validator(mode="after")
    def _keep_provenance(self, info: ValidationInfo) -> Recipe:
        """Remember the files read and cards loaded by load_recipe (passed as validation context)."""
        context = info.context or {}
        self._source_files = tuple(Path(p) for p in context.get("source_files", ()))
        self._cards = dict(context.get("cards", {}))
        self._origins = dict(context.get("origins", {}))
        return self

    @model_validator(mode="after")
    def _eval_split_on_hub_cards(self) -> Recipe:
        """Only a Hub dataset has named splits; a local card holds rows out with eval_fraction instead."""
        for i, ref in enumerate(self.data.cards):
            if ref.eval_split is None or ref.path not in self._cards:
                continue
            if self._cards[ref.path].source_paths:
                raise problem_at(f"data.cards.{i}.eval_split", f"card '{self._cards[ref.path].name}' reads local "
                                 "files, which have no splits: use eval_fraction, or list the eval file as its own "
                                 "card under data.eval_cards")
        return self

    @model_validator(mode="after")
    def _streaming_cards(self) -> Recipe:
        """A streaming card has no length (so a step count ends training) and is never held whole (no holdout)."""
        for which, refs in (("cards", self.data.cards), ("eval_cards", self.data.eval_cards)):
            for i, ref in enumerate(refs):
                card = self._cards.get(ref.path)
                if card is None or not card.streaming:
                    continue
                at = f"data.{which}.{i}"
                if which == "eval_cards":
                    raise problem_at(at, f"card '{card.name}' streams; eval cards are read whole (set its "
                                     "streaming: false, or use a smaller eval card)")
                if ref.eval_fraction > 0 or ref.max_samples is not None:
                    key = "eval_fraction" if ref.eval_fraction > 0 else "max_samples"
                    raise problem_at(f"{at}.{key}", f"card '{card.name}' streams: it is never held whole, so it has "
                                     "no holdout or row cap; give eval rows as data.eval_cards and bound training "
                                     "with train.max_steps")
                if self.train.max_steps < 0:
                    raise problem_at("train.max_steps", f"card '{card.name}' streams, so the data has no length: "
                                     "give the number of optimizer steps to train")
        return self

    @model_validator(mode="after")
    def _vision_options(self) -> Recipe:
        """Per-part learning rates must reach something trainable; audio needs a model with an audio encoder."""
        problem = recipe_vision_problem(self)
        if problem:
            raise problem_at(*problem)
        return self

    @model_validator(mode="after")
    def _fits_the_stage(self) -> Recipe:
        """A stage's own section, card formats and settings belong to that stage (recipe/stages.py)."""
        problems = stage_problems(self, self._cards)
        if problems:
            raise problem_at(*problems[0])
        return self

    def __eq__(self, other: object) -> bool:
        """Recipes are equal when every setting is; which files they were read from does not count."""
        if not isinstance(other, Recipe):
            return NotImplemented
        return self.model_dump(exclude={"extends"}) == other.model_dump(exclude={"extends"})

    __hash__ = None  # type: ignore[assignment]  # lists inside; equality above is by value

    @property
    def source_files(self) -> tuple[Path, ...]:
        """Absolute paths of the recipe file and every file it extends (depth first); empty if built in code."""
        return self._source_files

    @property
    def origins(self) -> dict:
        """Where load_recipe found each key: key path (as written) -> Origin (file, line; overrides at <override>)."""
        return self._origins

    @property
    def has_eval_data(self) -> bool:
        """True if eval cards are given or any training card holds rows out for evaluation."""
        return bool(self.data.eval_cards) or any(ref.eval_fraction > 0 or ref.eval_split for ref in self.data.cards)

    def card_pairs(self, which: Literal["train", "eval"] = "train") -> list[tuple[CardRef, DataCard]]:
        """(CardRef, DataCard) per training (or eval) card; cards load_recipe validated are reused, not re-read."""
        refs = self.data.cards if which == "train" else self.data.eval_cards
        return [(ref, self._cards.get(ref.path) or load_card(ref.path)) for ref in refs]

    def to_yaml(self) -> str:
        """The fully resolved recipe (extends applied, overrides in, paths absolute), to keep in the run dir."""
        chain = " <- ".join(shown(p) for p in self._source_files)
        head = "# Resolved by qwen35-tune: extends and overrides applied, paths absolute.\n"
        head += f"# From: {chain}\n" if chain else ""
        exclude: dict = {"extends": True}
        if self.train.global_batch_size is not None:  # derived from it at start; stating both is refused on reload
            exclude["train"] = {"gradient_accumulation_steps"}
        # an unset stage section stays out: written as null it would read back as that section with TRL's defaults
        exclude.update((section, True) for section in STAGE_SECTIONS.values() if getattr(self, section, None) is None)
        return head + dump_yaml(self.model_dump(mode="json", exclude=exclude))
