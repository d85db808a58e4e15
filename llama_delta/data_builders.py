"""The algorithmic tasks as `datasets` builders: one entry point to load them, one to export them.

    from llama_delta.data_builders import load_task
    ds = load_task("sort", cache_dir="cache", examples_per_length=1000)  # a DatasetDict
    ds["train"][0]["question"]  # 'Sort the string "drslxjlq"'

Tasks (config names): arithmetic, fibonacci, fibonacci_minimal, sort, sort_spaced, parity, reverse,
addition. Keyword overrides are config fields (see each family's config class); bad values fail at once.
The builders are importable `datasets.GeneratorBasedBuilder` classes, so
`SortBuilder(config_name="sort", cache_dir=...)` works too.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from .data_arithmetic import ArithmeticBuilder, ArithmeticConfig
from .data_common import FEATURES, AlgorithmicBuilder, AlgorithmicConfig, generator_hash, read_answer
from .data_fibonacci import FibonacciBuilder, FibonacciConfig
from .data_sequences import NeuralComprehensionBuilder, SequenceConfig, SortBuilder

# task name -> the builder that makes it (the task name is also the builder's config name).
TASKS: dict[str, type[AlgorithmicBuilder]] = {
    "arithmetic": ArithmeticBuilder,
    "fibonacci": FibonacciBuilder,
    "fibonacci_minimal": FibonacciBuilder,
    "sort": SortBuilder,
    "sort_spaced": SortBuilder,
    "parity": NeuralComprehensionBuilder,
    "reverse": NeuralComprehensionBuilder,
    "addition": NeuralComprehensionBuilder,
}

COLUMNS = {
    "question": "the question text",
    "answer": "the answer text",
    "answer_ids": "the answer as the integers Δ must produce (digits least-significant first for addition)",
    "program": "the library program that solves the example",
    "memory": "Δ's initial memory cells from m[0] (the rest start at 0)",
    "registers": "Δ's initial registers from r0 (the rest take the ISA start values)",
    "answer_in": '"register" or "memory": where Δ leaves the answer',
    "answer_offset": "the first register / memory cell of the answer",
    "operation": "breakdown key: the operation",
    "length": "breakdown key: input length (-1: not applicable)",
    "depth": "breakdown key: recursion depth (-1: not applicable)",
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

    Splits: train / validation / test (the paper's 70/30 train/test, validation carved from the 70) and
    held-out `ood_length_<L>` / `ood_depth_<d>` test splits.
    """
    builder = get_builder(task, cache_dir, **overrides)
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    if split is None:
        return dataset
    if split not in dataset:
        raise ValueError(f"task {task!r} has no split {split!r}; splits: {list(dataset)}")
    return datasets.DatasetDict({split: dataset[split]})


def size_category(rows: int) -> str:
    """The Hub's size_categories bucket for `rows` examples."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    return next((label for bound, label in bounds if rows < bound), "1M<n<10M")


def dataset_card(task: str, dataset: datasets.DatasetDict, config: AlgorithmicConfig) -> DatasetCard:
    """A Hub dataset card: metadata (configs pointing at the Parquet files) and a description."""
    rows = sum(dataset.num_rows.values())
    data = DatasetCardData(
        language="en",
        license="apache-2.0",
        pretty_name=f"llama-delta {task}",
        size_categories=size_category(rows),
        task_categories=["question-answering"],
        tags=["synthetic", "algorithmic-reasoning", "llama-delta"],
        configs=[
            {"config_name": task, "data_files": [{"split": split, "path": f"{task}/{split}-*"} for split in dataset]}
        ],
    )
    splits = "\n".join(f"| {split} | {dataset[split].num_rows} |" for split in dataset)
    columns = "\n".join(f"| `{name}` | {text} |" for name, text in COLUMNS.items())
    settings = json.dumps(config.settings(), indent=2, default=list)
    body = f"""
# llama-delta: `{task}`

{" ".join(TASKS[task].__doc__.split())}

Synthetic data for augmenting Llama with a differentiable register machine Δ and a library of
neurally compiled programs (Saldyt & Kambhampati, *Augmenting Language Models With Composable
Differentiable Libraries*). Every row carries Δ's initial state and the library program that solves
it; the answer equals what the reference interpreter computes when it runs that program.

## Splits

Train / validation / test follow the paper's 70/30 train/test cut (validation is taken from the 70);
a question (up to wording and operand order of commutative operations) is in one split only.
`ood_*` splits hold longer inputs or deeper recursions, never seen in training.

| split | rows |
|---|---|
{splits}

## Columns

| column | meaning |
|---|---|
{columns}

## Generation

`llama_delta.data_builders.load_task({task!r}, **settings)` with generator hash `{generator_hash()}` and settings:

```json
{settings}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def export_dataset(
    builder_name: str,
    out_dir: str | Path,
    push_to: str | None = None,
    cache_dir: str | Path | None = None,
    **config,
) -> datasets.DatasetDict:
    """Write `builder_name` (a task name) as Parquet, `out_dir/<task>/<split>-00000-of-00001.parquet`
    (the layout `push_to_hub` uses), plus `out_dir/README.md`, a dataset card; `datasets.load_dataset(out_dir,
    task)` reads it back. With `push_to` (a dataset repo id), also push it to the Hub (`HF_ENDPOINT`)."""
    builder = get_builder(builder_name, cache_dir, **config)
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    card = dataset_card(builder_name, dataset, builder.config)
    out_dir = Path(out_dir)
    (out_dir / builder_name).mkdir(parents=True, exist_ok=True)
    for split, part in dataset.items():
        part.to_parquet(str(out_dir / builder_name / f"{split}-00000-of-00001.parquet"))
    card.save(str(out_dir / "README.md"))
    if push_to is not None:
        # Data first: push_to_hub creates the repo and keeps `configs` / `dataset_info` right for every task pushed
        # to it; then our card goes up with those two fields taken from the Hub's README (the description is ours).
        dataset.push_to_hub(push_to, config_name=builder_name)
        on_hub = DatasetCard.load(push_to, repo_type="dataset").data.to_dict()
        merged = {**card.data.to_dict(), **{k: on_hub[k] for k in ("configs", "dataset_info") if k in on_hub}}
        DatasetCard(f"---\n{DatasetCardData(**merged).to_yaml()}\n---\n{card.text}").push_to_hub(
            push_to, repo_type="dataset"
        )
    return dataset


__all__ = [
    "FEATURES",
    "TASKS",
    "ArithmeticBuilder",
    "ArithmeticConfig",
    "FibonacciBuilder",
    "FibonacciConfig",
    "NeuralComprehensionBuilder",
    "SequenceConfig",
    "SortBuilder",
    "dataset_card",
    "export_dataset",
    "get_builder",
    "load_task",
    "read_answer",
]
