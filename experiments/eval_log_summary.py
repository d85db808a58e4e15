"""Per-epoch validation of a `train_sft.py --task all` run, read from its console log (what is left of a run that
was stopped before it wrote results.json): exact match and program-selection accuracy, overall and per task.

    python train_sft.py --task all ... > run.log 2>&1
    python -m experiments.eval_log_summary run.log
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path


def epochs(log: str) -> list[dict]:
    """The Trainer's evaluation dicts (`{'eval_loss': ...}`) in the log, in order."""
    return [ast.literal_eval(match.group(0)) for match in re.finditer(r"\{'eval_loss'.*?\}", log)]


def summary(evaluation: dict) -> str:
    tasks = sorted(key.split("=", 1)[1] for key in evaluation if key.startswith("eval_exact_match/task="))
    per_task = " ".join(
        f"{task} {float(evaluation[f'eval_exact_match/task={task}']):.2f}"
        f"/{float(evaluation.get(f'eval_program_accuracy/task={task}', 'nan')):.2f}"
        for task in tasks
    )
    overall = f"exact {float(evaluation['eval_exact_match']):.3f}"
    overall += f" program {float(evaluation.get('eval_program_accuracy', 'nan')):.3f}"
    return f"epoch {evaluation.get('epoch')}: {overall} | per task (exact/program): {per_task}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", type=Path)
    for evaluation in epochs(parser.parse_args().log.read_text()):
        print(summary(evaluation))


if __name__ == "__main__":
    main()
