"""The §4.1 minimal network (experiments/minimal_network.py) learns to route one-hot inputs through Δ."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from minimal_network import RunConfig, train  # noqa: E402


def test_fibonacci_depth_1_learns_from_answers_only():
    # n = 16, depth 1 (16 Δ steps), the --quick scale: the routing layers start random, so the start is near chance.
    config = RunConfig(n=16, depth=1, steps=60, lr=1e-1, eval_every=60, after_init="identity", depth_input="given")
    result = train(config)
    assert result.accuracy >= result.start_accuracy + 0.25, (result.start_accuracy, result.accuracy)
