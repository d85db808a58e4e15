"""Export (and optionally push) the builders' data: one folder or dataset repo, one config per task.

    python -m data_builders.export --task sort --task arithmetic --out data/llama-delta-tasks
    python -m data_builders.export --task sort arithmetic --out data/llama-delta-tasks \\
        --overrides '{"sort": {"examples_per_length": 500}}' --push_to_hub you/llama-delta-tasks

Then `datasets.load_dataset("data/llama-delta-tasks", "sort")` (or the repo id) loads a task, and
`python train_sft.py --task sort --dataset_name data/llama-delta-tasks` trains on it. A task exported into a folder
that already holds others is added beside them (its own earlier export is replaced).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from .parquet import export_dataset
from .registry import TASKS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m data_builders.export", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task", action="extend", nargs="+", required=True, choices=sorted(TASKS), help="task(s) to export"
    )
    parser.add_argument("--out", required=True, help="the dataset folder (created; other tasks in it are kept)")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="also push every task to this dataset repo")
    parser.add_argument("--private", action="store_true", help="create the dataset repo private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one)")
    parser.add_argument("--cache_dir", help="datasets cache for the generated data")
    parser.add_argument(
        "--overrides",
        default="{}",
        help='JSON: task -> config fields, e.g. {"sort": {"examples_per_length": 500}, "arithmetic": {"size": 3000}}',
    )
    args = parser.parse_args(argv)
    try:
        overrides = json.loads(args.overrides)
    except json.JSONDecodeError as error:
        parser.error(f"--overrides is not JSON: {error}")
    if not isinstance(overrides, dict) or not all(isinstance(fields, dict) for fields in overrides.values()):
        parser.error(f"--overrides must be a JSON object of task -> object of config fields; got {args.overrides}")
    unknown = sorted(set(overrides) - set(args.task))
    if unknown:
        parser.error(f"--overrides names tasks {unknown} that are not exported (--task {' '.join(args.task)})")
    args.overrides = overrides
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    for task in dict.fromkeys(args.task):  # each task once, in the order given
        fields = {key: tuple(v) if isinstance(v, list) else v for key, v in args.overrides.get(task, {}).items()}
        dataset = export_dataset(
            task,
            args.out,
            push_to=args.push_to_hub,
            cache_dir=args.cache_dir,
            private=args.private or None,
            token=args.token,
            **fields,
        )
        rows = ", ".join(f"{split} {part.num_rows}" for split, part in dataset.items())
        print(f"{task}: {rows} -> {args.out}/{task}/" + (f" and {args.push_to_hub}" if args.push_to_hub else ""))


if __name__ == "__main__":
    main()
