"""A local `evaluate` metric: exact match and per-element accuracy of answers, with breakdowns.

The Hub's `exact_match` cannot be fetched offline; load this one by path (from any folder: `evaluate` copies
`metrics.py` with it):

    metric = evaluate.load("llama_delta/exact_match.py")
    metric.compute(predictions=[[97, 98], [1]], references=[[97, 98], [0]], breakdowns={"length": [2, 1]})

Answers are integer lists (answer ids) or strings (answer text, compared character by character).
`breakdowns` (optional) maps a key name to one value per example; see `llama_delta.metrics`.
"""

import datasets
import evaluate

# Relative, so that `evaluate.load` copies metrics.py beside this file and the metric loads from any folder,
# without this project on the path.
from .metrics import score_sequences, summarize

_DESCRIPTION = """Exact match on whole answers and micro-averaged per-element accuracy (answer ids or
characters), overall and per breakdown value (keys like "exact_match/length=8")."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of answers, each a list of integers or a string.
    references: list of reference answers of the same kind.
    breakdowns: optional dict, key name -> list with one value per example.
Returns:
    exact_match, element_accuracy, num_examples, and the same per breakdown value.
"""

_CITATION = """@article{saldyt2024augmenting,
  title={Augmenting Language Models With Composable Differentiable Libraries},
  author={Saldyt, Lucas and Kambhampati, Subbarao}
}"""


class ExactMatch(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.List(datasets.Value("int64")),
                        "references": datasets.List(datasets.Value("int64")),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, breakdowns=None) -> dict:
        return summarize(*score_sequences(predictions, references), breakdowns)
