"""The Δ data collator: rows of a task dataset -> the model's inputs and answer labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from .metrics import IGNORE_INDEX


class DeltaCollator:
    """Rows of a task dataset -> model inputs: tokenized questions (padded) and labels (B, K) from `answer_ids`,
    padded with -100 to K = `answer_length` (the model's `delta_answer_length`), so every batch has one width."""

    def __init__(self, tokenizer, answer_length: int):
        self.tokenizer, self.answer_length = tokenizer, answer_length

    def __call__(self, rows: Sequence[Mapping]) -> dict[str, Tensor]:
        batch = self.tokenizer([row["question"] for row in rows], padding=True, return_tensors="pt")
        labels = torch.full((len(rows), self.answer_length), IGNORE_INDEX, dtype=torch.long)  # (B, K)
        for i, row in enumerate(rows):
            answer = row["answer_ids"]
            if len(answer) > self.answer_length:
                raise ValueError(
                    f"answer of {len(answer)} elements does not fit delta_answer_length = {self.answer_length}"
                )
            labels[i, : len(answer)] = torch.tensor(answer, dtype=torch.long)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "labels": labels}
