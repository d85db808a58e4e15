"""Pictures of a Δ run: where the instruction counter is, what the registers hold, when it halts."""

from __future__ import annotations

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
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
