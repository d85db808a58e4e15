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


def soft_answers(model, tokenizer, rows: list[dict], batch_size: int = 64) -> list[str]:
    """The arg-max of the soft chain's answer (what training optimises), beside `solve`'s exact arg-max main()."""
    model.eval()
    answers = []
    with torch.enable_grad():  # the model runs the soft chain where gradients are on
        for first in range(0, len(rows), batch_size):
            encoded = tokenizer(
                [row["question"] for row in rows[first : first + batch_size]], return_tensors="pt", padding=True
            )
            logits = model(encoded["input_ids"], encoded["attention_mask"]).answer_logits.detach()
            answers += [str(values[0]) for values in logits.argmax(-1).tolist()]
    return answers


def evaluate(model, tokenizer, rows: list[dict], soft: bool) -> dict:
    answers = model.solve([row["question"] for row in rows], tokenizer, batch_size=64)
    right = Counter(row["operation"] for row, answer in zip(rows, answers, strict=True) if answer == row["answer"])
    total = Counter(row["operation"] for row in rows)
    result = {
        "exact_match": sum(right.values()) / len(rows),
        "count": len(rows),
        "per_composition": {name: right[name] / total[name] for name in sorted(total)},
    }
    if soft:
        by_soft = soft_answers(model, tokenizer, rows)
        hits = Counter(row["operation"] for row, answer in zip(rows, by_soft, strict=True) if answer == row["answer"])
        result["soft_exact_match"] = sum(hits.values()) / len(rows)
        result["soft_per_composition"] = {name: hits[name] / total[name] for name in sorted(total)}
    return result | {"answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240.0, help="training time budget (wall clock)")
    parser.add_argument("--examples", type=int, default=3000, help="problems per seen composition")
    parser.add_argument("--learning_rate", type=float, default=1e-2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compositions", nargs="+", default=NUMBERS_SEEN, choices=NUMBERS_SEEN, help="seen ones")
    parser.add_argument("--unseen", nargs="+", default=NUMBERS_UNSEEN, choices=NUMBERS_UNSEEN)
    parser.add_argument("--out", default="experiments/results/compose_probe")
    parser.add_argument("--save_model", default=None, help="a folder for the trained model (not committed)")
    parser.add_argument("--load_model", default=None, help="evaluate this saved model instead of training one")
    args = parser.parse_args()

    splits = get_builder(
        "compose",
        compositions=tuple(args.compositions),
        unseen_compositions=tuple(args.unseen),
        examples_per_composition=args.examples,
        unseen_examples_per_composition=300,
        heldout_phrasing_size=300,
        seed=args.seed,
    ).make_splits()
    tokenizer = load_llama3_tokenizer()
    if args.load_model:  # evaluate a saved model (no training), the soft chain's answers too
        model = LlamaDeltaForComposedQA.from_pretrained(args.load_model)
        args.seconds = 0
    else:
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
        result = evaluate(model, tokenizer, rows, soft=bool(args.load_model))
        answers = result.pop("answers")
        results[name] = result
        print(name, json.dumps(result))
        for row, answer in zip(rows, answers, strict=True):  # the explain output of a right and a wrong answer
            key = f"{name}/{row['operation']}/{'right' if answer == row['answer'] else 'wrong'}"
            if key not in examples:
                examples[key] = {"expected": row["answer"], "explain": model.explain(row["question"], tokenizer)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "explain.json").write_text(json.dumps(examples, indent=2, sort_keys=True) + "\n")
    if args.save_model:
        model.save_pretrained(args.save_model)
    print(f"wrote {out / 'results.json'} and {out / 'explain.json'}")


if __name__ == "__main__":
    main()
