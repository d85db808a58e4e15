"""Tiny models with a known right answer: an untrained `tokens` sorter whose every gate is open, so that each
lower-case letter token is parsed as its character (other tokens spell nothing) and Δ's `sort` answers exactly,
whatever the random backbone does."""

import torch

from modeling_llama_delta import LIBRARY, LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA
from modeling_llama_delta.library import memory_needed, step_bound
from tests.helpers.configs import TINY_LLAMA

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def exact_sorter(tokenizer, length: int, **overrides) -> LlamaDeltaForAlgorithmicQA:
    """A sorter sized for strings of up to `length` letters; `overrides` are config fields (Llama's or Δ's)."""
    letters = {str(tokenizer.convert_tokens_to_ids(c)): [ord(c)] for c in LETTERS}
    settings = dict(
        **TINY_LLAMA,
        delta_word_size=128,
        delta_memory_size=memory_needed("sort", length),
        delta_max_steps=step_bound("sort", length),
        delta_programs={"sort": LIBRARY["sort"]},
        delta_parse_mode="tokens",
        delta_token_values=letters,
        delta_input_cells=length + 1,
        delta_input_registers=0,
        delta_answer_source="memory",
        delta_answer_length=length,
        delta_answer_format="string",
    )
    torch.manual_seed(0)
    model = LlamaDeltaForAlgorithmicQA(LlamaDeltaConfig(**settings | overrides)).eval()
    with torch.no_grad():
        model.delta_head.parser.gates.bias.fill_(1e4)  # sigmoid-exact: every token's gate open
        model.delta_head.parser.gates.weight.zero_()
    return model
