"""The records `experiments/run_sft.py` wrote, as one markdown table (and the validation curve of each run).

python -m experiments.summarize /tmp/exp > /tmp/exp/table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(records: list[dict]) -> str:
    rows = [
        "| run | ST / diagnostic | steps | wall s | s/step | val EM per eval | test EM | test elem | held-out EM/elem "
        "| train loss first->last quarter | grad norm max (finite) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        test = record["test"].get("test", {})
        held_out = [value for name, value in record["test"].items() if name != "test"]
        ood = f"{percent(held_out[0]['exact_match'])} / {percent(held_out[0]['element_accuracy'])}" if held_out else "-"
        curve = " ".join(percent(point["exact_match"]) for point in record["validation"])
        first, last = record["train_loss_first_quarter"], record["train_loss_last_quarter"]
        norm = "all NaN" if record["grad_norm_max"] is None else f"{record['grad_norm_max']:.3g}"
        norm += "" if record["grad_norm_all_finite"] else " (non-finite seen)"
        variant = ", ".join(["ST on" if record["straight_through"] else "ST off", *record.get("diagnostics", [])])
        rows.append(
            f"| {record['name']} | {variant} | {record['optimizer_steps']} "
            f"| {record['wall_time_s']:.0f} | {record['seconds_per_step']:.2f} | {curve} "
            f"| {percent(test.get('exact_match'))} | {percent(test.get('element_accuracy'))} | {ood} "
            f"| {first:.3f} -> {last:.3f} | {norm} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    folder = Path((argv or sys.argv[1:] or ["/tmp/exp"])[0])
    records = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    print(table([record for record in records if not record["name"].startswith("smoke")]))


if __name__ == "__main__":
    main()
