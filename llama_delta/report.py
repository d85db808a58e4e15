"""A run's report: where it ran, its training time and steps, its results as model-card entries and as a table."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

import torch


def machine_description() -> str:
    """Where a run happened, for the results and the model card."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, {device}; "
        f"torch {torch.__version__}, world size {os.environ.get('WORLD_SIZE', '1')}"
    )


def train_summary(train_output) -> dict:
    """Time and steps of `Trainer.train`'s output (seconds per optimizer step: what a budget is planned with)."""
    metrics = train_output.metrics
    steps = max(train_output.global_step, 1)
    return {
        "train_runtime_s": metrics.get("train_runtime"),
        "optimizer_steps": train_output.global_step,
        "seconds_per_step": metrics.get("train_runtime", 0.0) / steps,
        "train_loss": metrics.get("train_loss"),
    }


CARD_METRICS = ("exact_match", "element_accuracy", "program_accuracy")


def measured_results(report: dict, dataset_name: str) -> list[dict]:
    """This run's numbers for the model card: exact match, element accuracy and program-selection accuracy per test
    split, with how measured; a split mixing tasks (the `all` mixture) also gets one row per task and metric."""
    rows = []
    for split, metrics in report["results"].items():
        groups = {report["task"]: ""}  # the whole split, then each task's breakdown
        if report["task"] == "all":
            groups |= {
                key.split("=", 1)[1]: f"/task={key.split('=', 1)[1]}"
                for key in metrics
                if key.startswith("num_examples/task=")
            }
        for task, suffix in groups.items():
            for metric in CARD_METRICS:
                if metric + suffix not in metrics or not metrics["num_examples" + suffix]:
                    continue
                rows.append(
                    {
                        "dataset": dataset_name,
                        "task": task,
                        "split": split,
                        "metric": metric,
                        "value": metrics[metric + suffix],
                        "num_examples": int(metrics["num_examples" + suffix]),
                        "command": report["command"],
                        "seed": report["seed"],
                        "machine": report["machine"],
                    }
                )
    return rows


def results_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A text table, one row per split and one exact-match / element-accuracy column pair per method.

    results: method -> split -> metrics (`exact_match`, `element_accuracy`, `num_examples`).
    """
    methods = list(results)
    splits = list(dict.fromkeys(split for method in methods for split in results[method]))
    header = ["split", "n"] + [f"{method} {what}" for method in methods for what in ("exact", "element")]
    rows = []
    for split in splits:
        count = next(int(results[m][split]["num_examples"]) for m in methods if split in results[m])
        row = [split, str(count)]
        for method in methods:
            metrics = results[method].get(split)
            row += ["-", "-"] if metrics is None else [f"{metrics[k]:.2%}" for k in ("exact_match", "element_accuracy")]
        rows.append(row)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def task_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """For a run on the `all` mixture: one row per task, exact match on `test`, on `heldout_phrasing`, on its held-out
    lengths or depths (`<task>_ood_*` splits, shortest first), and the program-selection accuracy on `test`.

    results: split -> metrics with `/task=<task>` breakdowns (the mixed splits) or a task's own `<task>_ood_*` split.
    """
    tasks = sorted({key.split("=", 1)[1] for key in results.get("test", {}) if key.startswith("num_examples/task=")})
    ood = {task: sorted((s for s in results if s.startswith(f"{task}_ood_")), key=_trailing_number) for task in tasks}
    most_ood = max((len(splits) for splits in ood.values()), default=0)
    header = ["task", "test", "heldout_phrasing"] + [f"ood {i + 1}" for i in range(most_ood)] + ["program (test)"]
    rows = []
    for task in tasks:
        row = [task]
        for split in ("test", "heldout_phrasing"):
            value = results.get(split, {}).get(f"exact_match/task={task}")
            row.append("-" if value is None else f"{value:.2%}")
        for split in ood[task] + [None] * (most_ood - len(ood[task])):
            row.append("-" if split is None else f"{results[split]['exact_match']:.2%} ({split.split('_ood_')[1]})")
        program = results["test"].get(f"program_accuracy/task={task}")
        row.append("-" if program is None else f"{program:.2%}")
        rows.append(row)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in [header, *rows]
    ]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _trailing_number(split: str) -> int:
    return int(split.rsplit("_", 1)[1])
