"""Pictures: a Δ run (where the instruction counter is, what the registers hold, when it halts), a training run's
learning curves (loss, validation exact match overall and per length / operation), and a run on the `all` mixture
per task (exact match in distribution, in held-out phrasings, at held-out lengths)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

from modeling_llama_delta.machine import DeltaTrace  # noqa: E402


def plot_trace(
    trace: DeltaTrace,
    path: str | Path,
    example: int = 0,
    program: int = 0,
    title: str = "",
    register_names: list[str] | None = None,
) -> Path:
    """Write a three-panel PNG of one example's run of one program and return its path.

    Top: P(counter = line) over steps (a heat map: a sharp path is an exact run, a smear a soft one).
    Middle: each register's arg-max value over steps. Bottom: the halting probability.
    """
    counter = trace.counter[:, example, program].float().cpu()  # (T, n)
    registers = trace.registers[:, example, program].float().cpu()  # (T, R, n)
    halted = trace.halted[:, example, program].float().cpu()  # (T,)
    steps, lines = counter.shape
    used_lines = int(counter.argmax(-1).max()) + 2  # crop the ROM to the lines the run reached
    count = registers.shape[1]
    names = register_names or [f"r{i}" for i in range(count - 2)] + ["sp", "ra"]  # ISA v1 aliases

    figure, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(10, 8), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1]}
    )
    image = top.imshow(
        counter[:, : min(used_lines, lines)].T, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1
    )
    top.set_ylabel("ROM line")
    top.set_title(title or "Δ run")
    figure.colorbar(image, ax=top, label="P(counter = line)")
    for index, name in enumerate(names):
        middle.step(range(steps), registers[:, index].argmax(-1), where="post", label=name)
    middle.set_ylabel("register value (arg-max)")
    middle.legend(loc="upper left", ncol=len(names), fontsize="small")
    bottom.plot(range(steps), halted, color="black")
    bottom.set_ylim(-0.05, 1.05)
    bottom.set_ylabel("P(halted)")
    bottom.set_xlabel("step")
    return _save(figure, path)


def plot_learning_curves(log_history: Sequence[Mapping], path: str | Path, title: str = "") -> Path:
    """Write a learning-curve PNG from a Trainer's `state.log_history` and return its path.

    Top: training loss and validation loss (`eval_loss`) by optimizer step. Bottom, when the evaluations logged exact
    match: validation exact match (`eval_exact_match`) by step, overall and per breakdown value
    (`eval_exact_match/length=8`, `eval_exact_match/operation=add`, ...). Other evaluations in the history (the test
    splits, logged with their own prefixes) are not drawn.
    """

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        return [step for step, _ in points], [value for _, value in points]

    keys = {key for entry in log_history for key in entry}
    breakdowns = sorted(key for key in keys if key.startswith("eval_exact_match/"))
    has_accuracy = "eval_exact_match" in keys
    if "loss" not in keys and "eval_loss" not in keys:
        raise ValueError("the log history holds no `loss` or `eval_loss`: nothing to draw (was logging_steps > steps?)")
    figure, axes = plt.subplots(2 if has_accuracy else 1, 1, figsize=(9, 7 if has_accuracy else 4), sharex=True)
    loss_axis = axes[0] if has_accuracy else axes
    for key, label, style in (("loss", "training", "-"), ("eval_loss", "validation", "o--")):
        if key in keys:
            loss_axis.plot(*series(key), style, label=label)
    loss_axis.set_ylabel("loss")
    loss_axis.set_title(title or "learning curves")
    loss_axis.legend()
    if has_accuracy:
        accuracy_axis = axes[1]
        accuracy_axis.plot(*series("eval_exact_match"), "o-", color="black", linewidth=2, label="all")
        for key in breakdowns:
            accuracy_axis.plot(*series(key), ".--", label=key.removeprefix("eval_exact_match/"))
        accuracy_axis.set_ylim(-0.02, 1.02)
        accuracy_axis.set_ylabel("validation exact match")
        accuracy_axis.legend(fontsize="small", ncol=1 + len(breakdowns) // 8)
    (axes[-1] if has_accuracy else axes).set_xlabel("optimizer step")
    return _save(figure, path)


def plot_task_results(per_task: Mapping[str, Mapping], path: str | Path, title: str = "") -> Path:
    """Write a grouped bar chart of `report.task_results` and return its path: per task, exact match on `test`,
    `heldout_phrasing` and each held-out length or depth (shortest first), and the program-selection accuracy."""
    columns = ["test", "heldout_phrasing"]
    most_ood = max((len(row["ood"]) for row in per_task.values()), default=0)
    labels = columns + [f"held-out length/depth {i + 1}" for i in range(most_ood)] + ["program selected (test)"]
    values = [
        [
            row["test"],
            row["heldout_phrasing"],
            *[v for _, v in row["ood"]],
            *[None] * (most_ood - len(row["ood"])),
            row["program"],
        ]
        for row in per_task.values()
    ]  # (tasks, columns), None: not measured
    figure, axis = plt.subplots(figsize=(max(8, 1.3 * len(per_task)), 4.5))
    width = 0.8 / len(labels)
    for column, label in enumerate(labels):
        xs = [task + (column - (len(labels) - 1) / 2) * width for task in range(len(per_task))]
        heights = [0.0 if row[column] is None else row[column] for row in values]
        axis.bar(xs, heights, width, label=label)
    axis.set_xticks(range(len(per_task)), list(per_task), rotation=20)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("exact match (bars at 0: not measured or 0)")
    axis.set_title(title or "exact match per task")
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns its path."""
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
