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
        # the whole split (a mixture's `<task>_ood_*` split is that task's), then each task's breakdown
        groups = {split.split("_ood_")[0] if report["task"] == "all" and "_ood_" in split else report["task"]: ""}
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
    return text_table(header, rows)


def task_results(results: Mapping[str, Mapping[str, float]]) -> dict[str, dict]:
    """A run on the `all` mixture, per task: exact match on `test` and on `heldout_phrasing` (None where the split
    lacks the task), on its held-out lengths or depths (`ood`: (`<task>_ood_*` split, value) pairs, shortest first),
    and the program-selection accuracy on `test` (`program`).

    results: split -> metrics with `/task=<task>` breakdowns (the mixed splits) or a task's own `<task>_ood_*` split.
    """
    tasks = sorted({key.split("=", 1)[1] for key in results.get("test", {}) if key.startswith("num_examples/task=")})
    table = {}
    for task in tasks:
        ood = sorted((split for split in results if split.startswith(f"{task}_ood_")), key=_trailing_number)
        table[task] = {
            **{split: results.get(split, {}).get(f"exact_match/task={task}") for split in ("test", "heldout_phrasing")},
            "ood": [(split, results[split]["exact_match"]) for split in ood],
            "program": results["test"].get(f"program_accuracy/task={task}"),
        }
    return table


def task_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """`task_results` as text: one row per task; the held-out lengths as `ood 1`, `ood 2`, ... (shortest first)."""
    per_task = task_results(results)
    most_ood = max((len(row["ood"]) for row in per_task.values()), default=0)
    header = ["task", "test", "heldout_phrasing"] + [f"ood {i + 1}" for i in range(most_ood)] + ["program (test)"]

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{value:.2%}"

    rows = []
    for task, row in per_task.items():
        ood = [f"{percent(value)} ({split.split('_ood_')[1]})" for split, value in row["ood"]]
        ood += ["-"] * (most_ood - len(ood))
        rows.append([task, percent(row["test"]), percent(row["heldout_phrasing"]), *ood, percent(row["program"])])
    return text_table(header, rows)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


def _trailing_number(split: str) -> int:
    return int(split.rsplit("_", 1)[1])
