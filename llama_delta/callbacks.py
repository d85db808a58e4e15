"""Trainer callbacks."""

from __future__ import annotations

from transformers import TrainerCallback


class StopAtExactMatch(TrainerCallback):
    """Stop training once the validation exact match reaches `threshold` (1.0: every validation answer right)."""

    def __init__(self, threshold: float = 1.0, metric: str = "eval_exact_match"):
        self.threshold, self.metric = threshold, metric

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and metrics.get(self.metric, 0.0) >= self.threshold:
            control.should_training_stop = True
