"""Does the `mixed` parse learn the program selection from answers alone? Sampled programs vs enumerated ones.

A small mixture (tasks arithmetic, sort, strlen of the `all` dataset: 9 programs, 7 of them the binaries), the
minimal LLaMA from scratch with the `mixed` parse, `delta_answer_source = "program"`, S sampled parses per
question, and `delta_program_choice` `sample` (one program drawn per parse, score function) or `enumerate` (every
program per parse, each sample's marginal likelihood over the selection). Reports, every `--eval_every` steps, on
validation rows: selection accuracy (the arg-max program is the row's `program`; the label is never an input to
the loss), exact match of `solve`'s answers, and refusals.

    OMP_NUM_THREADS=1 python -m experiments.mixed_selection --choice sample \
        --out experiments/results/mixed_selection/sample.json
    OMP_NUM_THREADS=1 python -m experiments.mixed_selection --choice enumerate \
        --out experiments/results/mixed_selection/enumerate.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from data_builders import load_task
from llama_delta.build import build_delta_model
from llama_delta.collator import DeltaCollator
from llama_delta.task_settings import elements_per_token, example_sizes, spelled_token_values, split_step_bound
from llama_delta.tokenizer import load_llama3_tokenizer
from modeling_llama_delta.library import LIBRARY, memory_needed

TASKS = ("arithmetic", "sort", "strlen")
PROGRAMS = ("add", "sub", "mul", "div", "mod", "min", "max", "sort", "strlen")


def evaluate(model, tokenizer, rows) -> dict:
    details = model.solve(list(rows["question"]), tokenizer, batch_size=32, return_details=True, refuse=False)
    right = [d["answer"] == answer for d, answer in zip(details, rows["answer"], strict=True)]
    chosen = [d["program"] == program for d, program in zip(details, rows["program"], strict=True)]
    by_task = {}
    for task in sorted(set(rows["task"])):
        picked = [i for i, t in enumerate(rows["task"]) if t == task]
        by_task[task] = {
            "selection": sum(chosen[i] for i in picked) / len(picked),
            "exact": sum(right[i] for i in picked) / len(picked),
        }
    return {
        "selection_accuracy": sum(chosen) / len(rows),
        "exact_match": sum(right) / len(rows),
        "refused": sum(d["refusal"] is not None for d in details) / len(rows),
        "by_task": by_task,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--choice", choices=("sample", "enumerate"), default="sample")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--examples_per_task", type=int, default=200)
    parser.add_argument("--eval_rows", type=int, default=90)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache_dir", default="/tmp/mixed_selection_data")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = load_task(
        "all",
        cache_dir=args.cache_dir,
        tasks=TASKS,
        examples_per_task=args.examples_per_task,
        ood_examples=10,
        heldout_phrasing_size=10,
        seed=args.seed,
    )
    train, validation = data["train"], data["validation"].shuffle(seed=args.seed)
    validation = validation.select(range(min(args.eval_rows, len(validation))))
    tokenizer = load_llama3_tokenizer()
    per_token = max(3, elements_per_token(train, tokenizer))  # 3: Llama 3's numerals up to 999 as one token
    rows = [train, validation]
    longest = max(max(example_sizes(split)) for split in rows)
    delta_config = dict(
        delta_programs={name: LIBRARY[name] for name in PROGRAMS},
        delta_word_size=128,
        delta_memory_size=max(memory_needed(name, longest) for name in PROGRAMS),
        delta_max_steps=max(split_step_bound(split) for split in rows),
        delta_parse_mode="mixed",
        delta_elements_per_token=per_token,
        delta_token_values=spelled_token_values(tokenizer, 128, per_token),
        delta_input_cells=max(len(m) for split in rows for m in split["memory"]),
        delta_input_registers=2,
        delta_answer_source="program",
        delta_answer_format="program",
        delta_answer_length=max(len(a) for split in rows for a in split["answer_ids"]) + 1,
        delta_parse_samples=args.samples,
        delta_program_choice=args.choice,
    )
    model = build_delta_model("scratch", None, backbone_kwargs={"vocab_size": len(tokenizer)}, **delta_config)
    collate = DeltaCollator(tokenizer, model.config.delta_answer_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    curve, start = [], time.time()
    for step in range(1, args.steps + 1):
        model.train()
        picks = torch.randint(len(train), (args.batch_size,), generator=generator).tolist()
        batch = collate([train[i] for i in picks])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            scores = evaluate(model, tokenizer, validation)
            curve.append(
                {"step": step, "loss": float(loss.detach()), "seconds": round(time.time() - start, 1), **scores}
            )
            print(json.dumps(curve[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python -m experiments.mixed_selection " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}",
        "train_rows": len(train),
        "eval_rows": len(validation),
        "curve": curve,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
