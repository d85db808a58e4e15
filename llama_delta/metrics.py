"""Answer metrics: exact match on whole answers and per-element accuracy, overall and broken down by
length / depth / operation.

Two entry points share `per_example_scores` / `summarize`:
- `make_compute_metrics(breakdowns)` -> a Trainer `compute_metrics` for padded answer ids or answer
  logits (B x K x n, labels B x K padded with -100);
- `score_sequences(predictions, references)` for ragged lists (integer lists or strings), used by the
  local `evaluate` module `llama_delta/exact_match.py`.

Keys: "exact_match", "element_accuracy", "num_examples", and per breakdown value
"exact_match/length=8", "element_accuracy/length=8", "num_examples/length=8". Element accuracy is
micro-averaged: correct answer elements over all answer elements. Given each example's expected library
program, "program_accuracy" (and per breakdown value) is how often the head's selection picked it: measured,
never trained on (the loss sees answers only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

IGNORE_INDEX = -100
BREAKDOWN_COLUMNS = ("task", "operation", "length", "depth")  # "task": per task in the `all` mixture


def per_example_scores(
    predictions: np.ndarray, labels: np.ndarray, ignore_index: int = IGNORE_INDEX
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exact, correct, counted) per example for padded arrays.

    predictions: B x K ids, or B x K x n logits (arg-maxed over the last axis); labels: B x K with
    `ignore_index` where an answer is shorter than K. Predictions may be wider than labels (extra
    positions are ignored) but not narrower.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim == labels.ndim + 1:
        predictions = predictions.argmax(-1)  # B x K x n -> B x K
    if labels.ndim == 1:  # one answer element per example: B -> B x 1
        predictions, labels = predictions.reshape(-1, 1), labels.reshape(-1, 1)
    if predictions.ndim != 2 or predictions.shape[0] != labels.shape[0] or predictions.shape[1] < labels.shape[1]:
        raise ValueError(
            f"predictions of shape {predictions.shape} do not fit labels of shape {labels.shape}: "
            "expected B x K ids or B x K x n logits for B x K labels"
        )
    predictions = predictions[:, : labels.shape[1]]
    valid = labels != ignore_index  # B x K
    correct = ((predictions == labels) & valid).sum(1)
    counted = valid.sum(1)
    return correct == counted, correct, counted


def score_sequences(predictions: Sequence, references: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(exact, correct, counted) per example for ragged answers: integer lists or strings (then
    characters are the elements). A prediction of the wrong length is not an exact match; its
    elements are compared position by position up to the reference's length."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    pairs = list(zip(predictions, references, strict=True))
    exact = np.array([list(p) == list(r) for p, r in pairs], dtype=bool)
    # zip stops at the shorter: missing predicted elements count as wrong, extra ones are not compared.
    correct = np.array([sum(a == b for a, b in zip(p, r, strict=False)) for p, r in pairs], dtype=np.int64)
    counted = np.array([len(r) for r in references], dtype=np.int64)
    return exact, correct, counted


def summarize(
    exact: np.ndarray,
    correct: np.ndarray,
    counted: np.ndarray,
    breakdowns: Mapping[str, Sequence] | None = None,
    program_correct: np.ndarray | None = None,
) -> dict[str, float]:
    """Overall and per-breakdown-value metrics. Examples without answer elements (all padding, e.g.
    filler rows) are left out. `breakdowns` maps a key name to one value per example; `program_correct`
    (one bool per example) whether the head selected the example's program."""
    keep = counted > 0

    def scores(mask: np.ndarray, suffix: str = "") -> dict[str, float]:
        mask = mask & keep
        elements = int(counted[mask].sum())
        out = {
            f"exact_match{suffix}": float(exact[mask].mean()) if mask.any() else 0.0,
            f"element_accuracy{suffix}": float(correct[mask].sum() / elements) if elements else 0.0,
            f"num_examples{suffix}": int(mask.sum()),
        }
        if program_correct is not None:
            out[f"program_accuracy{suffix}"] = float(program_correct[mask].mean()) if mask.any() else 0.0
        return out

    out = scores(np.ones_like(keep))
    for key, values in (breakdowns or {}).items():
        values = np.asarray(values)
        if len(values) != len(exact):
            raise ValueError(f"breakdown {key!r} has {len(values)} values for {len(exact)} examples")
        for value in sorted(set(values.tolist())):
            out.update(scores(values == value, f"/{key}={value}"))
    return out


def breakdowns_from(dataset, columns: Sequence[str] = BREAKDOWN_COLUMNS) -> dict[str, list]:
    """Breakdown keys from a dataset's columns, skipping a column with one value throughout (nothing
    to break down, e.g. depth = -1, "not applicable", outside the Fibonacci task)."""
    return {
        column: list(dataset[column])
        for column in columns
        if column in dataset.column_names and len(dataset.unique(column)) > 1
    }


def make_compute_metrics(
    breakdowns: Mapping[str, Sequence] | None = None,
    ignore_index: int = IGNORE_INDEX,
    programs: Sequence[int] | None = None,
) -> Callable[[object], dict[str, float]]:
    """A `Trainer` `compute_metrics`. Its EvalPrediction holds `predictions` (B x K ids or B x K x n
    logits, or a tuple whose first item is one) and `label_ids` (B x K, `ignore_index` padding), in
    the evaluation dataset's order; `breakdowns` holds one value per evaluation example, e.g.
    `breakdowns_from(eval_dataset)`. `programs`: each example's expected program index, scored against the
    predictions' second item, the selected program (B,) (`argmax_logits`)."""

    def compute_metrics(eval_prediction) -> dict[str, float]:
        predictions = eval_prediction.predictions
        selected = None
        if isinstance(predictions, (tuple, list)):
            predictions, selected = predictions[0], (predictions[1] if len(predictions) > 1 else None)
        program_correct = None
        if programs is not None:
            if selected is None:
                raise ValueError("program accuracy needs the selected programs (argmax_logits of a Δ model's outputs)")
            program_correct = np.asarray(selected).reshape(-1) == np.asarray(programs)
        scores = per_example_scores(predictions, eval_prediction.label_ids, ignore_index)
        return summarize(*scores, breakdowns, program_correct)

    return compute_metrics


def argmax_logits(logits, labels):
    """`preprocess_logits_for_metrics`: keep B x K arg-max ids instead of B x K x n logits, so the
    Trainer does not accumulate every logit of the evaluation set. A Δ model's outputs (answer_logits,
    selection, ...) give (ids, the selected program (B,)), for `make_compute_metrics(programs=...)`."""
    if isinstance(logits, (tuple, list)):
        if len(logits) > 1:
            return logits[0].argmax(-1), logits[1].argmax(-1)
        logits = logits[0]
    return logits.argmax(-1)
