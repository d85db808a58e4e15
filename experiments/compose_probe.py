"""A short training probe of `LlamaDeltaForComposedQA` (issue #17) on the numbers-only compositions, from scratch.

The paper's minimal LLaMA (dimension 128, 4 layers, Llama 3 tokenizer) with a `slots` parse that copies numerals,
a library of the binary programs the compositions use, and a main() of up to 3 calls, trained from answers alone
through the soft chain (Δ runs 3 steps per call); evaluated with the arg-max main() run exactly. Exact match on
the seen compositions' test split, their held-out phrasings, and the unseen compositions.

    OMP_NUM_THREADS=1 python -m experiments.compose_probe --seconds 240 --out experiments/results/compose_probe
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

import torch

from data_builders import HELDOUT_SPLIT, get_builder
from data_builders.composition import COMPOSITIONS, SEEN, UNSEEN, UNSEEN_SPLIT
from llama_delta.backbones import minimal_llama_config
from llama_delta.build import delta_config_from
from llama_delta.task_settings import numeral_token_values
from llama_delta.tokenizer import load_llama3_tokenizer
from modeling_llama_delta.library import LIBRARY
from modeling_llama_delta.modeling_composition import LlamaDeltaForComposedQA

NUMBERS_SEEN = tuple(name for name in SEEN if COMPOSITIONS[name].inputs == "numbers")
NUMBERS_UNSEEN = tuple(name for name in UNSEEN if COMPOSITIONS[name].inputs == "numbers")
PROGRAMS = ("add", "sub", "mul", "max", "min")  # what the compositions call, and `min` as a distractor


def build_model(tokenizer, seed: int) -> LlamaDeltaForComposedQA:
    torch.manual_seed(seed)
    config = delta_config_from(
        minimal_llama_config(vocab_size=len(tokenizer)).to_dict(),
        delta_programs={name: LIBRARY[name] for name in PROGRAMS},
        delta_word_size=128,
        delta_num_registers=8,
        delta_memory_size=1,
        delta_max_steps=3,  # per call: a binary program is op, ret, halt
        delta_parse_mode="slots",
        delta_input_cells=0,
        delta_input_registers=4,  # the most numbers a question gives
        delta_answer_source="registers",
        delta_answer_length=1,
        delta_token_values=numeral_token_values(tokenizer, 128),
    )
    return LlamaDeltaForComposedQA(config)


def evaluate(model, tokenizer, rows: list[dict]) -> dict:
    answers = model.solve([row["question"] for row in rows], tokenizer, batch_size=64)
    right = Counter(row["operation"] for row, answer in zip(rows, answers, strict=True) if answer == row["answer"])
    total = Counter(row["operation"] for row in rows)
    return {
        "exact_match": sum(right.values()) / len(rows),
        "count": len(rows),
        "per_composition": {name: right[name] / total[name] for name in sorted(total)},
        "answers": answers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240.0, help="training time budget (wall clock)")
    parser.add_argument("--examples", type=int, default=3000, help="problems per seen composition")
    parser.add_argument("--learning_rate", type=float, default=1e-2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="experiments/results/compose_probe")
    args = parser.parse_args()

    splits = get_builder(
        "compose",
        compositions=NUMBERS_SEEN,
        unseen_compositions=NUMBERS_UNSEEN,
        examples_per_composition=args.examples,
        unseen_examples_per_composition=300,
        heldout_phrasing_size=300,
        seed=args.seed,
    ).make_splits()
    tokenizer = load_llama3_tokenizer()
    model = build_model(tokenizer, args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    train, rng = splits["train"], random.Random(args.seed)
    start, steps, epochs, losses = time.time(), 0, 0, []
    model.train()
    while time.time() - start < args.seconds:
        order = list(range(len(train)))
        rng.shuffle(order)
        for first in range(0, len(order), args.batch_size):
            batch = [train[i] for i in order[first : first + args.batch_size]]
            encoded = tokenizer([row["question"] for row in batch], return_tensors="pt", padding=True)
            labels = torch.tensor([row["answer_ids"] for row in batch])
            loss = model(encoded["input_ids"], encoded["attention_mask"], labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            steps += 1
            if time.time() - start >= args.seconds:
                break
        epochs += 1
        print(f"epoch {epochs}: {steps} steps, mean loss of the last 50 {sum(losses[-50:]) / len(losses[-50:]):.3f}")
    seconds = time.time() - start
    results = {"command": vars(args), "train_seconds": round(seconds, 1), "optimizer_steps": steps}
    results["train_size"] = len(train)
    rows_by_split = {
        name: splits[name][:: max(1, len(splits[name]) // 600)]  # every composition, about 600 rows
        for name in ("validation", "test", HELDOUT_SPLIT, UNSEEN_SPLIT)
    }
    examples = {}
    for name, rows in rows_by_split.items():
        result = evaluate(model, tokenizer, rows)
        answers = result.pop("answers")
        results[name] = result
        print(name, json.dumps(result))
        for want_right in (True, False):  # the explain output of one right and one wrong answer per split
            found = [row for row, a in zip(rows, answers, strict=True) if (a == row["answer"]) == want_right]
            if found:
                row = found[0]
                key = f"{name}_{'right' if want_right else 'wrong'}"
                examples[key] = {"expected": row["answer"], "explain": model.explain(row["question"], tokenizer)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "explain.json").write_text(json.dumps(examples, indent=2) + "\n")
    print(f"wrote {out / 'results.json'} and {out / 'explain.json'}")


if __name__ == "__main__":
    main()
