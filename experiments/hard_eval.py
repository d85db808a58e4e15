"""A trained Δ model (a run's `hub/` export) scored with Δ on the soft parse and on the arg-max (exact) parse,
plus the parse's own accuracy against the data's input cells: is the error in the parse or in Δ's soft drift?

    OMP_NUM_THREADS=1 python -m experiments.hard_eval /tmp/exp/sortsp8-st-off-long/hub --task sort_spaced \
        --lengths 8 --ood_lengths 10 --dataset_size 2000 --ood_size 100 --max_examples 300
"""

from __future__ import annotations

import argparse
import json

import torch

from llama_delta.collator import DeltaCollator
from llama_delta.task_settings import (
    load_task_data,
    split_step_bound,
)
from llama_delta.tokenizer import load_llama3_tokenizer
from modeling_llama_delta.modeling_llama_delta import LlamaDeltaForAlgorithmicQA


@torch.no_grad()
def score(model, collator, split, batch_size: int = 50) -> dict:
    """Exact match and element accuracy of the answer, and of the parsed input cells (arg-max vs the data)."""
    exact = elements = counted = parse_exact = parse_cells = parse_counted = 0
    for start in range(0, len(split), batch_size):
        rows = [split[i] for i in range(start, min(start + batch_size, len(split)))]
        batch = collator(rows)
        # with labels, the answer keeps the collator's width K even where Δ is sized per question
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        predicted, labels = out.answer_logits.argmax(-1), batch["labels"]  # (B, K), (B, K)
        mask = labels != -100
        right = (predicted == labels) & mask
        exact += int((right.sum(-1) == mask.sum(-1)).sum())
        elements, counted = elements + int(right.sum()), counted + int(mask.sum())
        parsed = out.parsed_memory.argmax(-1)  # (B, C)
        for row, cells in zip(rows, parsed.tolist(), strict=True):
            truth = list(row["memory"])
            hits = sum(a == b for a, b in zip(cells[: len(truth)], truth, strict=True))
            parse_exact += hits == len(truth)
            parse_cells, parse_counted = parse_cells + hits, parse_counted + len(truth)
    n = len(split)
    return {
        "exact_match": exact / n,
        "element_accuracy": elements / counted,
        "parse_exact": parse_exact / n,
        "parse_cell_accuracy": parse_cells / parse_counted,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", help="a run's hub/ folder")
    parser.add_argument("--task", required=True)
    parser.add_argument("--lengths", type=int, nargs="+")
    parser.add_argument("--ood_lengths", type=int, nargs="+")
    parser.add_argument("--dataset_size", type=int)
    parser.add_argument("--ood_size", type=int)
    parser.add_argument("--max_examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = LlamaDeltaForAlgorithmicQA.from_pretrained(args.export)
    tokenizer = load_llama3_tokenizer()
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    data = load_task_data(
        args.task,
        lengths=args.lengths,
        ood_lengths=args.ood_lengths,
        dataset_size=args.dataset_size,
        ood_size=args.ood_size,
        seed=args.seed,
    )
    collator = DeltaCollator(tokenizer, model.config.delta_answer_length)
    report = {}
    for name, split in data.items():
        if name in ("train", "validation"):
            continue
        split = split.shuffle(seed=args.seed).select(range(min(args.max_examples, len(split))))
        model.resize_delta(max_steps=split_step_bound(split))
        for straight_through in (False, True):
            model.config.delta_straight_through = straight_through  # read by the head at every forward
            report[f"{name}/straight_through={straight_through}"] = score(model, collator, split)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
