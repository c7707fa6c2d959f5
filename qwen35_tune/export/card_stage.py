"""What a model card says about a ``stage: grpo`` run beyond the stage chain and settings (export/card.py): each
reward with its weight, what it checks and its mean at the first and the last logged step (from summary.json), and
how completions were generated."""

from __future__ import annotations

_CHECKS = {"correct": "math-verify / sandboxed tests pass fraction / choice label / chrF, by row",
           "format": "one closed <think> block, then an answer"}  # fmt: skip


def reward_section(recipe, summary: dict) -> str:
    """A '## Rewards (GRPO)' section ('' for a run of another stage, or one whose recipe did not load)."""
    if recipe is None or getattr(recipe, "stage", "sft") != "grpo":
        return ""
    from qwen35_tune.recipe.grpo_section import grpo_settings

    grpo, logged = grpo_settings(recipe), summary.get("rewards") or {}
    rows = []
    for spec in recipe.rewards:
        checks = (f"0 up to {spec.max_tokens} tokens, then down to -1" if spec.name == "length"
                  else _CHECKS.get(spec.name or "", "custom function"))
        seen = logged.get(spec.label, {})
        rows.append(f"| {spec.label} | {spec.weight:g} | {checks} | {_shown(seen.get('first'))} | "
                    f"{_shown(seen.get('final'))} |")
    thinking = {True: "on", False: "off", None: "the template's default"}[recipe.chat.enable_thinking]
    generation = f"vLLM ({grpo.vllm_mode})" if grpo.use_vllm else "transformers generate"
    return ("\n## Rewards (GRPO)\n\nTrained with TRL's GRPOTrainer on prompts whose answers are checked (format: "
            "verifiable data cards); each completion's reward is the weighted sum below.\n\n"
            "| reward | weight | checks | mean, first step | mean, last step |\n|---|---|---|---|---|\n"
            + "\n".join(rows) + f"\n\nGeneration: {generation}; thinking: {thinking}.\n")


def _shown(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else ""
