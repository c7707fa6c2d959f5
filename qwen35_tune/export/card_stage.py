"""What a model card says about the training stage beyond SFT: for ``stage: grpo``, the GRPO settings and each
reward with its weight and its mean at the first and the last logged step (from summary.json)."""

from __future__ import annotations

# GRPO settings a reader needs to reproduce or judge the run, in this order.
GRPO_FACTS = ("num_generations", "max_completion_length", "temperature", "beta", "loss_type", "scale_rewards",
              "epsilon", "epsilon_high", "num_iterations", "mask_truncated_completions")


def stage_of(recipe) -> str:
    return getattr(recipe, "stage", "sft") if recipe is not None else "sft"


def stage_tags(recipe) -> set[str]:
    """Hub tags for the stage ('grpo'); none for SFT, whose cards stay as they were."""
    return {"grpo", "reinforcement-learning"} if stage_of(recipe) == "grpo" else set()


def stage_facts(recipe) -> list[tuple[str, object]]:
    """Rows of the card's Training table for the stage."""
    if stage_of(recipe) != "grpo":
        return []
    return [("stage", "grpo (reinforcement learning with verifiable rewards)"),
            ("rewards", ", ".join(f"{spec.label} x {spec.weight:g}" for spec in recipe.rewards))]


def stage_section(recipe, summary: dict) -> str:
    """A '## Reinforcement learning (GRPO)' section: the rewards table and the GRPO settings ('' for SFT)."""
    if stage_of(recipe) != "grpo":
        return ""
    grpo, logged = recipe.grpo, summary.get("rewards") or {}
    rows = []
    for spec in recipe.rewards:
        settings = {"length": f"penalty past {spec.max_tokens} tokens",
                    "correct": "math-verify / sandboxed tests pass fraction / choice label / chrF by row"}.get(
            spec.name or "", "custom function" if spec.custom else "one closed <think> block, then an answer")
        seen = logged.get(spec.label, {})
        rows.append(f"| {spec.label} | {spec.weight:g} | {settings} | {_shown(seen.get('first'))} | "
                    f"{_shown(seen.get('final'))} |")
    thinking = {True: "on", False: "off", None: "the template's default"}[recipe.chat.enable_thinking]
    generation = f"vLLM ({grpo.vllm_mode})" if grpo.use_vllm else "transformers generate"
    settings = ", ".join(f"{name} {getattr(grpo, name)}" for name in GRPO_FACTS)
    extra = ", ".join(f"{k} {v}" for k, v in sorted((grpo.model_extra or {}).items()))
    return ("\n## Reinforcement learning (GRPO)\n\nTrained with GRPO (TRL's GRPOTrainer) on prompts whose answers are "
            "checked (format: verifiable data cards); each completion's reward is the weighted sum below.\n\n"
            "| reward | weight | checks | mean, first step | mean, last step |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + f"\n\nGRPO settings: {settings}{', ' + extra if extra else ''}; generation: "
            f"{generation}; thinking: {thinking}.\n")


def _shown(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else ""
