"""Why Δ's soft run cannot teach a sorting parse: the insertion sort's answer as a function of parse certainty.

Every token of the question that spells a string character (and only those: the parse a trained head should
give) emits it with the same probability `g`; Δ runs the library's insertion sort on the soft parse (the paper's
mean-field semantics). Printed per `g`: the answer loss, element accuracy, halted mass and d loss / d logit(g).
Measured (length 8, 288 steps, 32 questions, seed 0): the loss is smallest near g = 0.6, not at 1, and even
g = 1 - 6e-6 gives 25% element accuracy; only an exactly one-hot parse sorts. Parse errors grow step by step
(a wrong branch's registers steer the right branch), so gradients through hundreds of soft steps point the wrong
way; `delta_parse_samples` trains on exact runs of sampled parses instead.

    python -m experiments.soft_sort_sensitivity --length 8 --logits -2 0 1 2 3 5 9 12 20
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from llama_delta.task_settings import delta_settings, load_task_data
from llama_delta.tokenizer import load_llama3_tokenizer
from modeling_llama_delta import LlamaDeltaConfig
from modeling_llama_delta.machine import DeltaMachine
from modeling_llama_delta.modeling_llama_delta import ANSWER_EPS
from modeling_llama_delta.parsing import compact_elements, spell_token_values, token_value_table


def main(length: int, logits: list[float], examples: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    tokenizer = load_llama3_tokenizer()
    data = load_task_data("sort", lengths=[length], ood_lengths=[], dataset_size=max(examples * 2, 100), seed=seed)
    settings = delta_settings("sort", data, tokenizer)
    config = LlamaDeltaConfig(vocab_size=len(tokenizer), **settings.delta_config)
    rows = data["train"].select(range(examples)).to_dict()  # column -> list
    batch = tokenizer(rows["question"], padding=True, return_tensors="pt")
    labels = torch.tensor([answer + [0] for answer in rows["answer_ids"]])  # (B, L + 1): the terminator too
    spelled = token_value_table(config)[batch["input_ids"]]  # (B, T, k)
    # The string's own tokens: those inside the quotes (offsets past the opening quote, before the closing one).
    offsets = tokenizer(rows["question"], padding=True, return_offsets_mapping=True)["offset_mapping"]
    inside = torch.tensor(
        [
            [q.index('"') < start < q.rindex('"') for start, _ in spans]
            for q, spans in zip(rows["question"], offsets, strict=True)
        ]
    )  # (B, T)
    machine = DeltaMachine(
        n=config.delta_word_size,
        num_registers=config.delta_num_registers,
        memory_size=config.delta_memory_size,
        max_steps=config.delta_max_steps,
        programs=config.delta_programs,
    )
    results = []
    for logit in logits:
        gate_logit = torch.tensor(float(logit), requires_grad=True)
        gates = gate_logit.sigmoid() * inside[..., None].float().expand_as(spelled)  # (B, T, k)
        gates, values = spell_token_values(spelled, gates, config.delta_word_size)  # (B, T, k), (B, T, k, n)
        cells = compact_elements(gates.flatten(1), values.flatten(1, 2), config.delta_input_cells)  # (B, C, n)
        run = machine(machine.start_state(memory=cells, batch_size=examples), selection=torch.ones(examples, 1))
        answer = run.state.memory[:, : length + 1]  # (B, L + 1, n)
        loss = F.nll_loss(torch.log(answer + ANSWER_EPS).flatten(0, 1), labels.flatten())
        loss.backward()
        results.append(
            {
                "gate": gate_logit.sigmoid().item(),
                "loss": loss.item(),
                "element_accuracy": (answer.argmax(-1) == labels).float().mean().item(),
                "halted": run.state.halted.mean().item(),
                "dloss_dlogit": gate_logit.grad.item(),
            }
        )
        print(json.dumps(results[-1]))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--logits", type=float, nargs="+", default=[-2, 0, 1, 2, 3, 5, 9, 12, 20])
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.length, args.logits, args.examples, args.seed)
