"""A generated task as Parquet files and a dataset card, on disk and, optionally, on the Hub."""

from __future__ import annotations

from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from .card import dataset_card
from .registry import get_builder


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
