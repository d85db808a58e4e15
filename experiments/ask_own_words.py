"""Ask an export the own-words set (`data_builders.own_words`: wordings no builder uses, at the `all` mixture's
training lengths / depths and at 2x and 4x them) and count, per task and size, the answers that are right, refused
(`solve` names a cause) and silently wrong (wrong and not refused).

    python -m experiments.ask_own_words runs/all/hub                  # every task the export's library serves
    python -m experiments.ask_own_words runs/sort/hub --tasks sort    # only these tasks
    python -m experiments.ask_own_words FOLDER --per_size 20 --out results.json

Loads the export as a user would (`AutoModel.from_pretrained(FOLDER, trust_remote_code=True)`, its own tokenizer)
and answers with `solve(..., return_details=True, refuse=False)`, one call per task and size (Δ is sized per batch).
By default a task is asked when every program its questions need is in the export's library (`delta_programs`).
The JSON (default: `own_words.json` beside FOLDER, i.e. in its parent) holds the counts, the command, the seed and
the machine, and each wrong or refused question with its answer, probability and refusal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import transformers
from transformers import AutoModel, AutoTokenizer

from data_builders import MIXTURE_TASKS, own_words
from data_builders.own_words import heldout_sizes
from llama_delta.report import machine_description

OUTCOMES = ("right", "refused", "wrong")


def size_of(row: dict) -> str:
    """What a row is broken down by: its length, its depth, or (arithmetic) its operation."""
    if row["length"] >= 0:
        return f"length {row['length']}"
    if row["depth"] >= 0:
        return f"depth {row['depth']}"
    return row["operation"]


def is_heldout(row: dict) -> bool:
    """Whether the row's length / depth is one of the mixture's held-out ones (2x / 4x the longest trained)."""
    return max(row["length"], row["depth"]) in heldout_sizes(row["task"])


def served_tasks(dataset, programs: Sequence[str]) -> tuple[str, ...]:
    """The tasks of `dataset` every one of whose questions names a program in `programs`."""
    needs = defaultdict(set)
    for task, program in zip(dataset["task"], dataset["program"], strict=True):
        needs[task].add(program)
    return tuple(task for task in needs if needs[task] <= set(programs))


def ask(model, tokenizer, dataset, batch_size: int = 32) -> list[dict]:
    """Every question of `dataset` answered by `model.solve` (refusals kept, not raised): per question its task,
    size, expected and given answer, probability, refusal and outcome (right / refused / wrong)."""
    groups = defaultdict(list)  # (task, size) -> row indices: one solve call each, so Δ is sized to that size
    rows = dataset.to_list()
    for index, row in enumerate(rows):
        groups[row["task"], size_of(row)].append(index)
    asked: list[dict | None] = [None] * len(rows)
    for indices in groups.values():
        questions = [rows[i]["question"] for i in indices]
        details = model.solve(questions, tokenizer, batch_size=batch_size, return_details=True, refuse=False)
        for index, detail in zip(indices, details, strict=True):
            row = rows[index]
            if detail["refusal"] is not None:
                outcome = "refused"
            else:
                outcome = "right" if detail["answer"] == row["answer"] else "wrong"
            asked[index] = {
                "task": row["task"],
                "size": size_of(row),
                "held_out": is_heldout(row),
                "question": row["question"],
                "expected": row["answer"],
                **detail,
                "outcome": outcome,
            }
    return asked


def tally(asked: Sequence[dict]) -> dict:
    """task -> {"all": counts, "sizes": {size: counts}} with counts {"right", "refused", "wrong", "total"} (and
    "held_out" per size)."""
    out: dict = {}
    for item in asked:
        task = out.setdefault(item["task"], {"all": dict.fromkeys((*OUTCOMES, "total"), 0), "sizes": {}})
        size = task["sizes"].setdefault(
            item["size"], {**dict.fromkeys((*OUTCOMES, "total"), 0), "held_out": item["held_out"]}
        )
        for counts in (task["all"], size):
            counts[item["outcome"]] += 1
            counts["total"] += 1
    return out


def table(counts: dict) -> str:
    """The tally as text: one line per task and size (held-out sizes marked *), then the task's total."""
    lines = [f"{'task':<18}{'size':<12}{'right':>7}{'refused':>9}{'wrong':>7}{'total':>7}"]
    for task, entry in counts.items():
        for size, c in entry["sizes"].items():
            label = size + (" *" if c["held_out"] else "")
            lines.append(f"{task:<18}{label:<12}{c['right']:>7}{c['refused']:>9}{c['wrong']:>7}{c['total']:>7}")
        c = entry["all"]
        lines.append(f"{task:<18}{'all':<12}{c['right']:>7}{c['refused']:>9}{c['wrong']:>7}{c['total']:>7}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="an export folder (train_sft.py's hub/) or a save_pretrained folder")
    parser.add_argument("--tasks", nargs="+", choices=tuple(MIXTURE_TASKS), help="default: the tasks it serves")
    parser.add_argument("--per_size", type=int, default=10, help="questions per task and length / depth / operation")
    parser.add_argument("--seed", type=int, default=0, help="the own-words set's seed")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--out", type=Path, help="the JSON report (default: FOLDER/../own_words.json)")
    args = parser.parse_args(argv)
    model = AutoModel.from_pretrained(args.folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.folder, trust_remote_code=True)
    dataset = own_words(per_size=args.per_size, seed=args.seed, tasks=args.tasks)
    tasks = tuple(args.tasks) if args.tasks else served_tasks(dataset, list(model.config.delta_programs))
    if not tasks:
        raise SystemExit(f"{args.folder}: its library {sorted(model.config.delta_programs)} serves no own-words task")
    dataset = dataset.filter(lambda row: row["task"] in tasks)
    asked = ask(model, tokenizer, dataset, args.batch_size)
    counts = tally(asked)
    print(table(counts))
    report = {
        "command": "python -m experiments.ask_own_words " + " ".join(sys.argv[1:] if argv is None else argv),
        "folder": str(args.folder),
        "seed": args.seed,
        "per_size": args.per_size,
        "machine": machine_description(),
        "versions": {"transformers": transformers.__version__},
        "counts": counts,
        "not_right": [item for item in asked if item["outcome"] != "right"],
    }
    out = args.out or Path(args.folder).resolve().parent / "own_words.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
