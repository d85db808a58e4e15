"""Generated tasks as Parquet files and a dataset card, on disk and, optionally, on the Hub: one folder (or dataset
repo) holds any number of tasks, one config each (`python -m data_builders.export` is the command line)."""

from __future__ import annotations

from pathlib import Path

import datasets
from huggingface_hub import DatasetCard

from .card import dataset_card
from .registry import get_builder


def export_dataset(
    builder_name: str,
    out_dir: str | Path,
    push_to: str | None = None,
    cache_dir: str | Path | None = None,
    private: bool | None = None,
    token: str | None = None,
    **config,
) -> datasets.DatasetDict:
    """Write `builder_name` (a task name) as Parquet, `out_dir/<task>/<split>-00000-of-00001.parquet` (the layout
    `push_to_hub` uses), and add it to `out_dir/README.md`, the dataset card, as the config `<task>`; the other tasks
    already exported there are kept, so `datasets.load_dataset(out_dir, task)` reads each of them back. With `push_to`
    (a dataset repo id), also push it to the Hub (`HF_ENDPOINT`) as that config, `private` if the repo is new,
    with `token` (default: the logged-in one)."""
    builder = get_builder(builder_name, cache_dir, **config)
    builder.download_and_prepare()
    dataset = builder.as_dataset()
    out_dir = Path(out_dir)
    task_dir = out_dir / builder_name
    task_dir.mkdir(parents=True, exist_ok=True)
    for stale in task_dir.glob("*.parquet"):  # a split of an earlier export that this one lacks must not linger
        stale.unlink()
    for split, part in dataset.items():
        part.to_parquet(str(task_dir / f"{split}-00000-of-00001.parquet"))
    download_size = sum(path.stat().st_size for path in task_dir.glob("*.parquet"))
    readme = out_dir / "README.md"
    existing = DatasetCard.load(readme) if readme.is_file() else None
    dataset_card(builder_name, dataset, builder.config, existing, download_size).save(str(readme))
    if push_to is not None:
        # Data first: push_to_hub creates the repo and adds this config to the repo's card metadata, keeping the
        # configs of the tasks pushed before; then the card gets this task's section the same way as on disk.
        dataset.push_to_hub(push_to, config_name=builder_name, private=private, token=token)
        on_hub = DatasetCard.load(push_to, repo_type="dataset", token=token)
        card = dataset_card(builder_name, dataset, builder.config, on_hub, download_size)
        card.push_to_hub(push_to, repo_type="dataset", token=token)
    return dataset
