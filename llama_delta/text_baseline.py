"""The plain fine-tuning baseline: the backbone writes the answer as text (trl's SFTTrainer on prompt/completion
pairs); its greedy answers are parsed back into answer elements and scored with Δ's metrics."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from .metrics import BREAKDOWN_COLUMNS, breakdowns_from, score_sequences, summarize

PROMPT_SUFFIX = "\nAnswer:"


def prompt_completion(rows: Mapping[str, list]) -> dict[str, list[str]]:
    """`datasets.map(batched=True)`: questions -> prompt/completion pairs for trl's SFTTrainer."""
    return {
        "prompt": [question + PROMPT_SUFFIX for question in rows["question"]],
        "completion": [" " + answer for answer in rows["answer"]],
    }


def parse_answer_text(text: str, answer_format: str, length: int) -> list[int]:
    """Generated answer text -> answer elements in the dataset's `answer_ids` encoding (the inverse of
    `format_answer`), so that the baseline is scored on the same elements as Δ. Unparsable text gives no
    elements (wrong, and every element counted wrong)."""
    text = text.strip()
    if answer_format == "string":
        return [ord(ch) for ch in text]
    if answer_format == "digits":  # the sum's L+1 digit characters, most significant first, zero-padded
        if not text.isdigit() or len(text) > length:
            return []
        return [ord(ch) for ch in text.zfill(length)]
    return [int(x) for x in re.findall(r"-?\d+", text)[:length]]


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 64) -> list[str]:
    """Greedy decoding, batched with left padding; the text up to the end-of-sequence token."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    answers = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
            batch = {key: value.to(model.device) for key, value in batch.items()}
            out = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            answers += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return answers


def score_text_answers(answers: Sequence[str], split, answer_format: str | Sequence[str]) -> dict[str, float]:
    """Exact match and element accuracy of generated answers, with the same breakdowns as Δ's evaluation.
    `answer_format`: one for the split, or one per row (a mixture of tasks)."""
    references = [list(ids) for ids in split["answer_ids"]]
    formats = [answer_format] * len(references) if isinstance(answer_format, str) else list(answer_format)
    predictions = [
        parse_answer_text(text, row_format, len(ref))
        for text, ref, row_format in zip(answers, references, formats, strict=True)
    ]
    return summarize(*score_sequences(predictions, references), breakdowns_from(split, BREAKDOWN_COLUMNS))
