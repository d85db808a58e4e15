"""The §4.1 minimal network (experiments/minimal_network.py) learns to route one-hot inputs through Δ."""

from experiments.minimal_network import RunConfig, train


def test_fibonacci_depth_1_learns_from_answers_only():
    # n = 16, depth 1 (16 Δ steps), the --quick scale: the routing layers start random, so the start is near chance.
    config = RunConfig(n=16, depth=1, steps=60, lr=1e-1, eval_every=60, after_init="identity", depth_input="given")
    result = train(config)
    assert result.accuracy >= result.start_accuracy + 0.25, (result.start_accuracy, result.accuracy)


def test_fib_linear_learns_at_depth_4_where_fib_recursive_does_not_move():
    # n = 32, depth 4: fib_recursive reads x0 and x1 into the answer 3 and 5 times; Δ's mean field counts each read
    # as an independent draw, and from random routing its gradient fades. fib_linear reads each input once.
    common = dict(n=32, depth=4, steps=80, lr=1e-1, eval_every=80, after_init="identity", depth_input="given")
    linear = train(RunConfig(program="fib_linear", **common))
    recursive = train(RunConfig(program="fib_recursive", **common))
    assert linear.accuracy >= 0.9, linear.curve
    assert recursive.accuracy <= 0.2, recursive.curve
