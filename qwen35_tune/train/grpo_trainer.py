"""TRL's GRPOTrainer with the qwen35-tune hooks (``train.trainer.QwenTrainerMixin``), plus the two things GRPO needs
on top: the step guard's token count, and a sample of completions with their rewards in the run directory.

How the mixin's hooks meet GRPOTrainer (TRL 1.16): ``training_step`` receives the prompt rows of a generation batch,
not tokens, so ``step_inputs`` hands the step guard the prompt and completion masks the loss saw (recorded in
``_prepare_inputs``, GRPOTrainer's documented place where a generation batch becomes a training batch); the optimizer
with per-part learning rates, atomic checkpoints (GRPOTrainer's own ``_save_checkpoint`` writes its model card, then
ours stages and renames) and the preemption handler apply unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from trl import GRPOTrainer

from qwen35_tune.strict_json import record_dumps
from qwen35_tune.train.trainer import QwenTrainerMixin

log = logging.getLogger(__name__)

SAMPLE_TEXT_CHARS = 4000  # prompts and completions longer than this are cut in completions.jsonl (noted there)


class QwenGRPOTrainer(QwenTrainerMixin, GRPOTrainer):
    """GRPOTrainer + the qwen35-tune hooks. ``completions_file``: where each logged step appends one group (a prompt's
    ``num_generations`` completions) with every reward, the advantage and the row's origin (rank 0 writes it)."""

    def __init__(self, *args, completions_file: Path | None = None, **kwargs):
        self._step_batch = None
        super().__init__(*args, **kwargs)
        self.completions_file = Path(completions_file) if completions_file else None

    def _prepare_inputs(self, generation_batch):
        inputs = super()._prepare_inputs(generation_batch)
        self._step_batch = inputs
        return inputs

    def step_inputs(self, inputs):
        """Prompt + completion tokens of the micro-batch the loss was computed on (see the module docstring)."""
        import torch

        batch = self._step_batch
        if not isinstance(batch, dict) or "completion_mask" not in batch:
            return {}
        return {"attention_mask": torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)}

    def log(self, logs: dict, start_time: float | None = None) -> None:
        # a training step's log (the end-of-run averages and eval logs have no "loss"): one group per logged step
        if "loss" in logs and self.model.training and self.completions_file is not None \
                and self.is_world_process_zero():
            self._write_sample()
        super().log(logs, start_time)

    def _write_sample(self) -> None:
        """Append the first group of the latest generation round to completions.jsonl."""
        logs = self._logs
        count = min(len(logs["prompt"]), self.num_generations)
        if not count:
            return
        rewards = {name: list(values) for name, values in logs["rewards"].items()}
        origins = list(logs["extra"].get("origin", []))
        prompts, completions, advantages = list(logs["prompt"]), list(logs["completion"]), list(logs["advantages"])
        with self.completions_file.open("a", encoding="utf-8") as fh:
            for i in range(count):
                record = {"step": self.state.global_step, "prompt": _cut(prompts[i]),
                          "completion": _cut(completions[i]),
                          "rewards": {name: values[i] for name, values in rewards.items()},
                          "advantage": advantages[i] if i < len(advantages) else None,
                          "origin": origins[i] if i < len(origins) else None}  # fmt: skip
                fh.write(record_dumps(record) + "\n")


def _cut(text) -> str:
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= SAMPLE_TEXT_CHARS else text[:SAMPLE_TEXT_CHARS] + f" [... {len(text):,} characters]"
