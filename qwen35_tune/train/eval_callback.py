"""Generation eval during training (the recipe's ``eval:`` section): before the first step, every N steps and at the
end, the eval runner scores the model being trained; metrics go to every callback's ``on_log`` (metrics.jsonl and
the trackers), files to ``<run_dir>/eval/step_NNNNNN/`` and, for the final model, ``<run_dir>/eval/`` (the model card
reads those into its model-index).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from qwen35_tune.strict_json import record_dumps

log = logging.getLogger(__name__)


def flat_metrics(suite: str, results: dict) -> dict:
    """{'gen_eval/math/thinking/accuracy': 0.4, ...}: numeric metrics per mode, as trackers want them."""
    return {f"gen_eval/{suite}/{mode}/{key}": value for mode, metrics in results.items()
            for key, value in metrics.items() if isinstance(value, (int, float)) and not isinstance(value, bool)
            and key not in ("budget", "seconds")}


class GenerationEvalCallback(TrainerCallback):
    """Runs the recipe's eval suites on the live model at the configured steps. In a data-parallel run every rank
    generates for its share of the rows (``eval.ranks``) and rank 0 scores the whole, writes and logs."""

    def __init__(self, recipe, run_dir: Path, plan: list, trainer):
        self.settings, self.recipe, self.run_dir = recipe.eval, recipe, Path(run_dir)
        self.plan, self.trainer = plan, trainer  # plan: (Suite, rows, origin, overlap) per suite
        self.done: set[int] = set()
        self.final_done = False

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.settings.at_start and state.global_step == 0:
            self._evaluate(model, processing_class, state, final=False)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        last = state.max_steps and state.global_step >= state.max_steps
        if last and self.settings.at_end:  # while the trackers are still open (they close in on_train_end)
            self._evaluate(model, processing_class, state, final=True)
        elif self.settings.every_n_steps and state.global_step % self.settings.every_n_steps == 0:
            self._evaluate(model, processing_class, state, final=False)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.settings.at_end and not self.final_done:
            self._evaluate(model, processing_class, state, final=True)

    def _evaluate(self, model, tokenizer, state, final: bool) -> None:
        from qwen35_tune.eval.ranks import RankGroup
        from qwen35_tune.eval.runner import build_report, run_suite, write_suite

        step = state.global_step
        if (step in self.done and not final) or (final and self.final_done):  # the same answer on every rank
            return
        self.done.add(step)
        self.final_done = self.final_done or final
        s, ranks = self.settings, RankGroup.current()
        logs = {}
        for suite, rows, origin, overlap in self.plan:
            results, samples = run_suite(model, tokenizer, suite, rows, modes=tuple(s.modes),
                                         max_new_tokens=s.max_new_tokens, batch_size=s.batch_size, ranks=ranks)
            if not state.is_world_process_zero:  # it took its share; rank 0 writes and logs the whole
                continue
            report = build_report(suite, results, rows=rows, origin=origin, overlap=overlap,
                                  model=f"{self.recipe.name}@step{step}", step=step)
            write_suite(self.run_dir / "eval" / f"step_{step:06d}", suite, report, samples)
            if final:
                write_suite(self.run_dir / "eval", suite, report, samples)
            logs.update(flat_metrics(suite.name, results))
            with (self.run_dir / "eval" / "history.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(record_dumps({"step": step, "final": final, "suite": suite.name, "modes": results}) + "\n")
        if not state.is_world_process_zero:
            return
        # Straight to the callbacks' on_log (metrics.jsonl, trackers): trainer.log would also flush and mix in
        # SFTTrainer's per-step training metrics (entropy, token accuracy), taking them from the step's own log line.
        trainer = self.trainer
        trainer.control = trainer.callback_handler.on_log(trainer.args, state, trainer.control, logs)


def _model_whole_on_each_rank(trainer) -> bool:
    """DDP and DeepSpeed ZeRO-1/2 replicate the parameters; FSDP and ZeRO-3 shard them."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return False
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = trainer.accelerator.state.deepspeed_plugin
        return plugin is not None and plugin.zero_stage < 3
    return True


def attach_generation_eval(trainer, recipe, run_dir: Path, tokenizer) -> GenerationEvalCallback | None:
    """Add the callback when ``eval.suites`` is set; rows are chosen now, so a recipe without them fails early."""
    if not recipe.eval.suites:
        return None
    if trainer.args.world_size > 1 and not _model_whole_on_each_rank(trainer):
        log.warning("eval.suites: generation eval during training needs the whole model on every rank (DDP or "
                    "DeepSpeed ZeRO-1/2), not sharded parameters (FSDP, ZeRO-3); evaluate the finished run with "
                    "'qwen35-tune eval RUN_DIR --suite ...'")
        return None
    from qwen35_tune.eval.runner import check_overlap, select_rows
    from qwen35_tune.eval.suites import parse_suite

    plan = []
    for name in recipe.eval.suites:
        suite = parse_suite(name)
        if suite.kind == "lm-eval":
            log.warning("eval.suites: %s needs a merged model folder; run it after training with qwen35-tune eval",
                        name)
            continue
        rows, origin = select_rows(suite, recipe=recipe, tokenizer=tokenizer, limit=recipe.eval.limit)
        plan.append((suite, rows, origin, check_overlap(suite, rows, recipe)))
    callback = GenerationEvalCallback(recipe, run_dir, plan, trainer)
    trainer.add_callback(callback)
    return callback
