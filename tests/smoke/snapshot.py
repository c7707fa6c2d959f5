"""A TrainerCallback that copies every parameter at train start and end, so tests can say what training changed."""

from __future__ import annotations

from transformers import TrainerCallback


class Snapshot(TrainerCallback):
    """``before`` / ``after``: name -> copy of each parameter; ``trainable``: names with requires_grad at start;
    ``model``: the trained model, for tests that inspect it afterwards."""

    def __init__(self):
        self.before, self.after, self.trainable, self.model = {}, {}, set(), None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.model = model
