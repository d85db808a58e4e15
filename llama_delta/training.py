"""Training helpers for `train_sft.py`: the Δ data collator, callbacks, the library-frozen check,
presets, the text baseline's decoding and scoring, and the run report (results table, model-card results).

Kept out of the script so that the script reads as a recipe and these pieces can be tested on their own.
"""

from __future__ import annotations

import json
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import yaml
from torch import Tensor
from transformers import TrainerCallback
from transformers.utils import logging

from modeling_llama_delta.machine import DeltaMachine

from .metrics import BREAKDOWN_COLUMNS, IGNORE_INDEX, breakdowns_from, score_sequences, summarize

logger = logging.get_logger(__name__)


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


class StopAtExactMatch(TrainerCallback):
    """Stop training once the validation exact match reaches `threshold` (1.0: every validation answer right)."""

    def __init__(self, threshold: float = 1.0, metric: str = "eval_exact_match"):
        self.threshold, self.metric = threshold, metric

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and metrics.get(self.metric, 0.0) >= self.threshold:
            control.should_training_stop = True


def delta_machines(model: torch.nn.Module) -> list[DeltaMachine]:
    """Every Δ in `model` (a PEFT wrapper holds the original and the trained copy of the head)."""
    return [module for module in model.modules() if isinstance(module, DeltaMachine)]


def library_snapshot(model: torch.nn.Module) -> list[Tensor]:
    """Copies of every Δ's library ROM, to check after training that the library was not changed."""
    return [machine.rom_distribution().detach().clone() for machine in delta_machines(model)]


def assert_library_unchanged(model: torch.nn.Module, snapshot: Sequence[Tensor]) -> None:
    """Fail if any Δ's ROM differs from `snapshot` (the library must stay frozen through fine-tuning)."""
    roms = library_snapshot(model)
    if len(roms) != len(snapshot):
        raise AssertionError(f"the model holds {len(roms)} Δ machines, the snapshot {len(snapshot)}")
    for index, (before, after) in enumerate(zip(snapshot, roms, strict=True)):
        if not torch.equal(before, after.to(before.device)):
            changed = (before != after.to(before.device)).any(-1).nonzero().tolist()
            raise AssertionError(f"library ROM of Δ #{index} changed during training at (program, line) {changed[:10]}")


# --- presets (YAML defaults that the command line overrides) and run reports


def preset_path(preset: str, presets_dir: Path) -> Path:
    """configuration/<preset>.yaml, or `preset` itself when it is a YAML path."""
    path = Path(preset) if preset.endswith((".yaml", ".yml")) else presets_dir / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in presets_dir.glob("*.yaml"))
        raise SystemExit(f"unknown preset {preset!r}: no {path}; presets: {', '.join(known)} (or a .yaml path)")
    return path


def to_argv(settings: dict) -> list[str]:
    """YAML settings -> command-line flags (lists as several values, dicts as JSON, None left out)."""
    argv = []
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return argv


def defaults_argv(preset: str, task: str, method: str, presets_dir: Path) -> list[str]:
    """Flags the preset and the environment imply, to be placed before the user's (argparse: the last one wins).

    A preset holds Trainer and script settings; its `tasks:` section adds per-task budgets. `bf16` is dropped
    without a GPU; under torchrun without a GPU, DDP runs on the CPU with gloo.
    """
    settings = yaml.safe_load(preset_path(preset, presets_dir).read_text()) or {}
    per_task = settings.pop("tasks", {}) or {}
    settings.update(per_task.get(task, {}) or {})
    if not torch.cuda.is_available() and settings.pop("bf16", None):
        logger.warning(f"preset {preset!r} asks for bf16; there is no GPU, so training runs in float32")
    settings.setdefault("output_dir", f"runs/{Path(preset).stem}-{task}-{method}")
    if not torch.cuda.is_available():
        settings.setdefault("dataloader_pin_memory", False)  # nothing to pin for
        if "WORLD_SIZE" in os.environ:
            settings.update(use_cpu=True, ddp_backend="gloo")
    return to_argv(settings)


def machine_description() -> str:
    """Where a run happened, for the results and the model card."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, {device}; "
        f"torch {torch.__version__}, world size {os.environ.get('WORLD_SIZE', '1')}"
    )


def resume_argument(value: str | None) -> str | bool | None:
    """`--resume_from_checkpoint last` (or true) resumes from the newest checkpoint in the output folder."""
    return True if value in ("last", "true", "True") else value


def train_summary(train_output) -> dict:
    """Time and steps of `Trainer.train`'s output (seconds per optimizer step: what a budget is planned with)."""
    metrics = train_output.metrics
    steps = max(train_output.global_step, 1)
    return {
        "train_runtime_s": metrics.get("train_runtime"),
        "optimizer_steps": train_output.global_step,
        "seconds_per_step": metrics.get("train_runtime", 0.0) / steps,
        "train_loss": metrics.get("train_loss"),
    }


def measured_results(report: dict, dataset_name: str) -> list[dict]:
    """This run's numbers for the model card: exact match and element accuracy per test split, with how measured."""
    return [
        {
            "dataset": dataset_name,
            "task": report["task"],
            "split": split,
            "metric": metric,
            "value": metrics[metric],
            "num_examples": int(metrics["num_examples"]),
            "command": report["command"],
            "seed": report["seed"],
            "machine": report["machine"],
        }
        for split, metrics in report["results"].items()
        for metric in ("exact_match", "element_accuracy")
    ]


# --- the plain fine-tuning baseline (text answers)

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
    if answer_format == "digits":  # the sum's L+1 digits, least-significant first
        if not text.isdigit():
            return []
        value = int(text)
        return [(value // 10**i) % 10 for i in range(length)]
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


def score_text_answers(answers: Sequence[str], split, answer_format: str) -> dict[str, float]:
    """Exact match and element accuracy of generated answers, with the same breakdowns as Δ's evaluation."""
    references = [list(ids) for ids in split["answer_ids"]]
    predictions = [
        parse_answer_text(text, answer_format, len(ref)) for text, ref in zip(answers, references, strict=True)
    ]
    return summarize(*score_sequences(predictions, references), breakdowns_from(split, BREAKDOWN_COLUMNS))


# --- reporting


def results_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """A text table, one row per split and one exact-match / element-accuracy column pair per method.

    results: method -> split -> metrics (`exact_match`, `element_accuracy`, `num_examples`).
    """
    methods = list(results)
    splits = list(dict.fromkeys(split for method in methods for split in results[method]))
    header = ["split", "n"] + [f"{method} {what}" for method in methods for what in ("exact", "element")]
    rows = []
    for split in splits:
        count = next(int(results[m][split]["num_examples"]) for m in methods if split in results[m])
        row = [split, str(count)]
        for method in methods:
            metrics = results[method].get(split)
            row += ["-", "-"] if metrics is None else [f"{metrics[k]:.2%}" for k in ("exact_match", "element_accuracy")]
        rows.append(row)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]
    return "\n".join([lines[0], "  ".join("-" * width for width in widths), *lines[1:]])


__all__ = [
    "DeltaCollator",
    "PROMPT_SUFFIX",
    "StopAtExactMatch",
    "assert_library_unchanged",
    "defaults_argv",
    "delta_machines",
    "generate_answers",
    "library_snapshot",
    "machine_description",
    "measured_results",
    "parse_answer_text",
    "preset_path",
    "prompt_completion",
    "results_table",
    "resume_argument",
    "score_text_answers",
    "to_argv",
    "train_summary",
]
