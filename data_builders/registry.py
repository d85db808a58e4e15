"""The task registry: task name -> its builder, and the entry points that build or load a task.

    from data_builders import load_task
    ds = load_task("sort", cache_dir="cache", examples_per_length=1000)  # a DatasetDict
    ds["train"][0]["question"]  # 'Sort the string "drslxjlq"'

Tasks (config names): arithmetic, fibonacci, fibonacci_minimal, fibonacci_linear, sort, sort_spaced, count, strlen,
parity, reverse, addition, `all` (their mixture, `mixture.MixtureBuilder`) and `compose` (questions that chain two
or three programs, `composition.CompositionBuilder`). Keyword overrides are config fields (see each family's config
class); bad values fail at once.
The builders are importable `datasets.GeneratorBasedBuilder` classes, so
`SortBuilder(config_name="sort", cache_dir=...)` works too.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from .arithmetic import ArithmeticBuilder
from .common import AlgorithmicBuilder
from .composition import CompositionBuilder
from .fibonacci import FibonacciBuilder
from .mixture import MixtureBuilder
from .sequences import NeuralComprehensionBuilder, SortBuilder, StringQuestionBuilder

# task name -> the builder that makes it (the task name is also the builder's config name).
TASKS: dict[str, type[AlgorithmicBuilder]] = {
    "arithmetic": ArithmeticBuilder,
    "fibonacci": FibonacciBuilder,
    "fibonacci_minimal": FibonacciBuilder,
    "fibonacci_linear": FibonacciBuilder,
    "sort": SortBuilder,
    "sort_spaced": SortBuilder,
    "count": StringQuestionBuilder,
    "strlen": StringQuestionBuilder,
    "parity": NeuralComprehensionBuilder,
    "reverse": NeuralComprehensionBuilder,
    "addition": NeuralComprehensionBuilder,
    "all": MixtureBuilder,  # every task above that the one model serves, mixed
    "compose": CompositionBuilder,  # two- and three-call questions, a main() of library calls (issue #17)
}


def get_builder(task: str, cache_dir: str | Path | None = None, **overrides) -> AlgorithmicBuilder:
    """The builder of `task` with config overrides applied (and validated)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {sorted(TASKS)}")
    return TASKS[task](config_name=task, cache_dir=None if cache_dir is None else str(cache_dir), **overrides)


def load_task(
    task: str, split: str | None = None, cache_dir: str | Path | None = None, **overrides
) -> datasets.DatasetDict:
    """Generate (or load from the datasets cache) `task`; with `split`, a DatasetDict of that split only.

    Splits: train / validation / test (the paper's 70/30 train/test, validation carved from the 70), the test
    problems in held-out wordings (`heldout_phrasing`), and held-out `ood_length_<L>` / `ood_depth_<d>` test splits.
    """
    builder = get_builder(task, cache_dir, **overrides)
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    if split is None:
        return dataset
    if split not in dataset:
        raise ValueError(f"task {task!r} has no split {split!r}; splits: {list(dataset)}")
    return datasets.DatasetDict({split: dataset[split]})
