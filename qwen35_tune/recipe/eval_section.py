"""The recipe's ``eval:`` section: generation-based evaluation during and after training (our own concept).

Kept apart from schema.py so the eval runner's options are described in one place; imports no torch.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator

from qwen35_tune.recipe import bounds
from qwen35_tune.yaml_lines import StrictModel

# How answers are generated: the prompt opens <think>, or enable_thinking=False (eval/generate.py renders both).
GenerationMode = Literal["thinking", "non-thinking"]
GENERATION_MODES: tuple[str, ...] = get_args(GenerationMode)


class EvalSection(StrictModel):
    """Generate answers for held-out rows and check them (math answers, code tests, chrF, QA) while training."""

    suites: list[str] = Field(
        [], description="Suites to run: math, code, translation, qa (the recipe's held-out rows of that domain), "
        "human-eval, champ, or lm-eval:TASK. Empty = no generation eval."
    )
    every_n_steps: int | None = Field(
        None, gt=0, le=bounds.MAX_STEPS, description="Also evaluate every this many optimizer steps."
    )
    at_start: bool = Field(False, description="Evaluate the untrained model before the first step (a baseline).")
    at_end: bool = Field(True, description="Evaluate the trained model at the end; its scores go in the model card.")
    limit: int | None = Field(
        32, gt=0, le=bounds.MAX_ROWS, description="Rows per suite (the first ones); None = all held-out rows."
    )
    max_new_tokens: int = Field(512, gt=0, le=bounds.MAX_TOKENS, description="Token budget per generated answer.")
    modes: list[GenerationMode] = Field(
        ["thinking"], min_length=1, description="Generation modes: 'thinking' (the prompt opens <think>) and/or "
        "'non-thinking' (enable_thinking=False)."
    )
    batch_size: int = Field(8, gt=0, le=bounds.MAX_BATCH, description="Prompts generated together.")

    @field_validator("suites")
    @classmethod
    def _known_suites(cls, value: list[str]) -> list[str]:
        """A misspelt suite should fail at validate time, not after the first training steps."""
        from qwen35_tune.errors import UserError
        from qwen35_tune.eval.suites import parse_suite

        for name in value:
            try:
                parse_suite(name)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        if len(set(value)) != len(value):
            raise ValueError("a suite is listed twice")
        return value
