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


def measured_results(report: dict, dataset_name: str) -> list[dict]:
    """This run's numbers for the model card: exact match and element accuracy per test split, with how measured."""
    return [
        {
            "dataset": dataset_name,
            "task": report["task"],
            "split": split,
            "metric": metric,
            "value": metrics[metric],
            "num_examples": int(metrics["num_examples"]),
            "command": report["command"],
            "seed": report["seed"],
            "machine": report["machine"],
        }
        for split, metrics in report["results"].items()
        for metric in ("exact_match", "element_accuracy")
    ]


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
