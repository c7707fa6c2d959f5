"""When the trainer computes the eval loss. Rows held out for evaluation are otherwise never looked at: by default a
run with eval rows evaluates every tenth of its steps and at its last step; a run without any does not evaluate.

``train.eval_strategy`` / ``eval_steps`` / ``per_device_eval_batch_size`` given in the recipe win. The tenth is
transformers' own ratio form of ``eval_steps`` (a float below 1 is a fraction of the total steps, rounded up), and its
step strategy evaluates the last step too, so the schedule follows ``max_steps`` or the epochs without counting
batches here. The eval batch defaults to the training batch: evaluation keeps no activations for a backward pass, so
it fits where training does, and a default of 2 rows would make evaluating by default cost many small forward passes.
"""

from __future__ import annotations

from qwen35_tune.errors import UserError

DEFAULT_EVAL_FRACTION = 0.1  # of the run's optimizer steps, between two evaluations


def eval_arguments(train, eval_rows: int) -> dict:
    """``eval_strategy``, ``eval_steps`` and ``per_device_eval_batch_size`` for the trainer's config, from the recipe's
    ``train`` section and the number of eval rows the data build produced."""
    strategy = train.eval_strategy
    if strategy is None:
        strategy = "steps" if eval_rows else "no"
    elif strategy != "no" and not eval_rows:
        raise UserError(f"train.eval_strategy: '{strategy}' needs eval rows, and the data build held none out (a "
                        "card's eval_fraction too small for its rows, or eval cards whose rows were all rejected: "
                        "see data_stats.json); raise eval_fraction, add data.eval_cards, or set train.eval_strategy: "
                        "no")
    batch = train.per_device_eval_batch_size or train.per_device_train_batch_size
    if strategy == "no":
        return {"eval_strategy": "no", "eval_steps": None, "per_device_eval_batch_size": batch}
    return {"eval_strategy": strategy, "eval_steps": train.eval_steps or DEFAULT_EVAL_FRACTION,
            "per_device_eval_batch_size": batch}
