"""Pictures: a Δ run (where the instruction counter is, what the registers hold, when it halts) and a training run's
learning curves (loss, validation exact match overall and per length / operation)."""

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


def _save(figure, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close a figure; returns its path."""
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
