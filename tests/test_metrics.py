"""Answer metrics: per-example scoring of padded logits / ids and ragged answers, breakdowns, the
Trainer `compute_metrics` (through a real `Trainer.evaluate`), and the local `evaluate` module."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import datasets
import evaluate
import numpy as np
import pytest
import torch

from llama_delta.metrics import (
    argmax_logits,
    breakdowns_from,
    make_compute_metrics,
    per_example_scores,
    score_sequences,
    summarize,
)

N = 16
METRIC_PATH = Path(__file__).resolve().parents[1] / "llama_delta" / "exact_match.py"


def random_answers(seed: int, count: int = 40) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """(predictions, references, lengths): ragged integer answers, about half of them wrong somewhere."""
    rng = random.Random(seed)
    predictions, references = [], []
    for _ in range(count):
        reference = [rng.randrange(N) for _ in range(rng.randint(1, 5))]
        prediction = [v if rng.random() < 0.85 else (v + 1) % N for v in reference]
        predictions.append(prediction)
        references.append(reference)
    return predictions, references, [len(r) for r in references]


def expected_metrics(predictions, references, groups=None) -> dict[str, float]:
    """The metrics by plain loops, for comparison."""

    def block(rows, suffix=""):
        rows = list(rows)
        exact = sum(predictions[i] == references[i] for i in rows) / len(rows)
        elements = sum(len(references[i]) for i in rows)
        correct = sum(p == r for i in rows for p, r in zip(predictions[i], references[i], strict=False))
        return {f"exact_match{suffix}": exact, f"element_accuracy{suffix}": correct / elements}

    out = block(range(len(references)))
    for key, values in (groups or {}).items():
        for value in set(values):
            out.update(block((i for i, v in enumerate(values) if v == value), f"/{key}={value}"))
    return out


def padded(rows: list[list[int]], width: int, fill: int = -100) -> np.ndarray:
    return np.array([row + [fill] * (width - len(row)) for row in rows])


def check(metrics: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key


def test_padded_logits_and_ids_match_plain_loops():
    predictions, references, lengths = random_answers(0)
    labels = padded(references, 6)  # B x K with -100 padding
    ids = padded(predictions, 7, fill=3)  # wider than the labels, junk in the padding
    logits = np.eye(N)[padded(predictions, 6, fill=0)] * 5.0 - 1.0  # B x K x n
    groups = {"length": lengths}
    expected = expected_metrics(predictions, references, groups)
    check(summarize(*per_example_scores(logits, labels), groups), expected)
    check(summarize(*per_example_scores(ids, labels), groups), expected)
    assert 0 < expected["exact_match"] < 1 and set(lengths) == {1, 2, 3, 4, 5}


def test_one_element_answers_and_filler_rows():
    labels = np.array([[3], [5], [-100]])  # the last row: padding only (e.g. a filler example), left out
    exact, correct, counted = per_example_scores(np.array([[3], [4], [0]]), labels)
    metrics = summarize(exact, correct, counted)
    assert metrics == {"exact_match": 0.5, "element_accuracy": 0.5, "num_examples": 2}
    assert summarize(*per_example_scores(np.array([3, 4]), np.array([3, 4])))["exact_match"] == 1.0


def test_shape_and_breakdown_errors():
    with pytest.raises(ValueError, match=r"predictions of shape \(2, 1\) do not fit labels of shape \(2, 3\)"):
        per_example_scores(np.zeros((2, 1)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="breakdown 'length' has 1 values for 2 examples"):
        summarize(*per_example_scores(np.zeros((2, 1)), np.zeros((2, 1))), {"length": [1]})
    with pytest.raises(ValueError, match="3 predictions for 2 references"):
        score_sequences([[1], [2], [3]], [[1], [2]])


def test_ragged_sequences_and_strings():
    predictions, references, lengths = random_answers(1)
    predictions[0] = predictions[0] + [7]  # too long: not exact, its elements still count
    predictions[1] = predictions[1][:-1]  # too short: the missing element is wrong
    check(summarize(*score_sequences(predictions, references)), expected_metrics(predictions, references))
    metrics = summarize(*score_sequences(["abbd", "abc"], ["abbd", "abd"]), {"length": [4, 3]})
    assert metrics["exact_match"] == 0.5 and metrics["element_accuracy"] == pytest.approx(6 / 7)
    assert metrics["exact_match/length=4"] == 1.0 and metrics["num_examples/length=3"] == 1


def test_breakdowns_from_dataset_columns():
    dataset = datasets.Dataset.from_dict(
        {"operation": ["sort"] * 4, "length": [8, 8, 10, 12], "depth": [-1] * 4, "question": ["q"] * 4}
    )
    assert breakdowns_from(dataset) == {"length": [8, 8, 10, 12]}  # one-valued columns say nothing


def test_local_evaluate_module():
    metric = evaluate.load(str(METRIC_PATH))
    predictions, references, lengths = random_answers(2)
    groups = {"length": lengths}
    check(
        metric.compute(predictions=predictions, references=references, breakdowns=groups),
        expected_metrics(predictions, references, groups),
    )
    assert metric.compute(predictions=["abbd", "x"], references=["abbd", "y"])["exact_match"] == 0.5


# Runs in a fresh process elsewhere: argv = the metric's path.
FRESH_LOAD = """
import importlib.util, json, sys
assert importlib.util.find_spec("llama_delta") is None, "llama_delta is importable in the fresh process"
import evaluate
metric = evaluate.load(sys.argv[1])
print(json.dumps(metric.compute(predictions=[[1, 2], [3]], references=[[1, 2], [4]], breakdowns={"length": [2, 1]})))
"""


def test_local_evaluate_module_loads_outside_the_project(tmp_path):
    """`evaluate.load(path)` from another folder, without this project importable: it copies metrics.py along."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(METRIC_PATH)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    check(scores, expected_metrics([[1, 2], [3]], [[1, 2], [4]], {"length": [2, 1]}))
    assert scores["exact_match"] == 0.5 and scores["num_examples/length=1"] == 1


class AnswerModel(torch.nn.Module):
    """Emits one-hot logits of the answer it is given (`guess`), B x K x n: a stand-in for Δ's read-out."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, guess: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        logits = torch.nn.functional.one_hot(guess, N).float() * self.scale  # B x K -> B x K x n
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return {"loss": loss, "logits": logits}


def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Pads a batch to its longest answer: guesses with 0, labels with -100."""
    width = max(len(row["labels"]) for row in rows)
    return {
        "guess": torch.tensor([row["guess"] + [0] * (width - len(row["guess"])) for row in rows]),
        "labels": torch.tensor([row["labels"] + [-100] * (width - len(row["labels"])) for row in rows]),
    }


@pytest.mark.parametrize("reduce_logits", [False, True])
def test_compute_metrics_in_trainer_evaluate(tmp_path, reduce_logits):
    """Batches of different answer widths: the Trainer pads B x K x n logits (or B x K ids) with -100
    when it concatenates them; the scores must still equal the plain loops'."""
    from transformers import Trainer, TrainingArguments

    predictions, references, lengths = random_answers(3, count=13)
    eval_dataset = datasets.Dataset.from_dict({"guess": predictions, "labels": references, "length": lengths})
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to=[], use_cpu=True, remove_unused_columns=False
    )
    trainer = Trainer(
        model=AnswerModel(),
        args=args,
        eval_dataset=eval_dataset,
        data_collator=collate,
        compute_metrics=make_compute_metrics(breakdowns_from(eval_dataset)),
        preprocess_logits_for_metrics=argmax_logits if reduce_logits else None,
    )
    metrics = trainer.evaluate()
    expected = expected_metrics(predictions, references, {"length": lengths})
    check(metrics, {f"eval_{key}": value for key, value in expected.items()})
    assert metrics["eval_num_examples"] == 13
