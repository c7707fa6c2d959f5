"""The library trainers with what qwen35-tune adds to every run, as a subclass (no method replaced on an instance).

``QwenTrainerMixin`` goes in front of a library trainer's class (``QwenSFTTrainer`` = it + TRL's ``SFTTrainer``; the
DPO and GRPO trainers get the same mixin). It is made of one mixin per concern, each in the module that owns it:

- ``GuardedSteps`` (train/step_guard.py): ``training_step`` and ``_get_grad_norm`` report to the ``StepGuard``, which
  stops the run on a non-finite loss or gradient norm and counts real tokens;
- ``PartLearningRates`` (train/param_groups.py): ``create_optimizer`` with per-part learning rates;
- ``AtomicCheckpoints`` (train/resume.py): ``_save_checkpoint`` writes into ``.staging/`` and renames into place;
- ``train`` installs the preemption handler (SIGTERM / SIGUSR1: save and stop) for the duration of the run.

``create_optimizer``, ``training_step`` and ``train`` are the Trainer's documented override points; the private
``_save_checkpoint``, ``_get_output_dir`` and ``_get_grad_norm`` are checked against ``qwen35_tune.patches``'
tested versions and signatures before the trainer is built (``TRAINER_PRIVATE_HOOKS``).
"""

from __future__ import annotations

from pathlib import Path

from trl import DPOTrainer, SFTTrainer

from qwen35_tune.errors import UserError
from qwen35_tune.train.param_groups import PartLearningRates
from qwen35_tune.train.resume import AtomicCheckpoints, PreemptionCallback
from qwen35_tune.train.step_guard import GuardedSteps, StepGuard


class QwenTrainerMixin(GuardedSteps, PartLearningRates, AtomicCheckpoints):
    """See the module docstring. Keyword arguments on top of the library trainer's: ``run_dir`` (metrics and the step
    guard's stop record go there), ``learning_rates`` (``train.learning_rates``: per-part rates, may be empty)."""

    preemption: PreemptionCallback | None = None

    def __init__(self, *args, run_dir: Path, learning_rates: dict[str, float] | None = None, **kwargs):
        from transformers import PrinterCallback

        from qwen35_tune import patches

        try:
            patches.check_trainer_hooks(type(self))
        except patches.UpstreamChanged as exc:
            low, high = patches.TRAINER_HOOK_VERSIONS
            raise UserError(f"{exc}; install transformers>={low},<{high}") from None
        super().__init__(*args, **kwargs)
        # transformers adds a PrinterCallback when tqdm is off; the rich bar and metrics.jsonl already show the logs.
        self.remove_callback(PrinterCallback)
        StepGuard(run_dir).install(self)  # stop on a NaN/inf loss or grad norm; num_tokens = real tokens
        self.use_part_learning_rates(learning_rates or {})
        self.rotate_checkpoints_atomically()

    def train(self, *args, **kwargs):
        """``Trainer.train`` with SIGTERM / SIGUSR1 saving a checkpoint and stopping (``self.preemption.requested``
        says which signal, None when the run was not preempted)."""
        self.preemption = PreemptionCallback().install()
        self.add_callback(self.preemption)  # last: after every callback the stage attached before training
        try:
            return super().train(*args, **kwargs)
        finally:
            self.preemption.uninstall()


class QwenSFTTrainer(QwenTrainerMixin, SFTTrainer):
    """TRL's SFTTrainer with the qwen35-tune hooks (supervised fine-tuning, ``train.sft``)."""


class QwenDPOTrainer(QwenTrainerMixin, DPOTrainer):
    """TRL's DPOTrainer with the qwen35-tune hooks (preference tuning, ``train.dpo``). Its rows arrive tokenised by
    qwen35-tune's renderer (``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``, data/preference_build.py), so TRL's own
    chat-template tokenisation is skipped (``_prepare_dataset``, a private hook kept to ``qwen35_tune.patches``' rules:
    ``DPO_PRIVATE_HOOKS``)."""

    def __init__(self, *args, **kwargs):
        from qwen35_tune import patches

        try:
            patches.check_dpo_hooks(DPOTrainer)
        except patches.UpstreamChanged as exc:
            low, high = patches.DPO_HOOK_VERSIONS
            raise UserError(f"{exc}; install trl>={low},<{high}") from None
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):  # private hook: DPO_PRIVATE_HOOKS
        missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(dataset.column_names)
        if missing:  # only qwen35-tune's own rows skip TRL's tokenisation
            raise ValueError(f"QwenDPOTrainer takes rows rendered by qwen35-tune; the {dataset_name} dataset lacks "
                             f"{', '.join(sorted(missing))}")
        return dataset
