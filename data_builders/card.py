"""The Hub dataset card of a generated task: metadata (configs pointing at the Parquet files) and a description."""

from __future__ import annotations

import json

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from .common import AlgorithmicConfig, generator_hash
from .registry import TASKS

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
    key = generator_hash(TASKS[task], config)
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

`data_builders.load_task({task!r}, **settings)` with generator hash `{key}` and settings:

```json
{settings}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")
