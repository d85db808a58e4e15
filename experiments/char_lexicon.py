"""Diagnostic parse for string tasks: `tokens` parsing whose element values come from a fixed lexicon.

Every token that spells one character (spaces aside) below n emits that character's code point as a one-hot value;
other tokens emit a uniform value. The backbone learns only the gates (which tokens are elements of the string),
not the identity of each character token. Counterpart of `numeral_pointer.py`; one element per token only.

    OMP_NUM_THREADS=1 python -m experiments.run_sft --name sort-lexicon --char_lexicon -- --task sort_spaced ...
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor

from modeling_llama_delta.modeling_llama_delta import ParsedQuestion, compact_elements, last_token_states


def char_lexicon(tokenizer, n: int) -> Tensor:
    """(V,) long: token id -> the code point (< n) of the one character it spells, spaces stripped, else -1."""
    lexicon = torch.full((len(tokenizer),), -1, dtype=torch.long)
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip()
        if len(text) == 1 and 0 < ord(text) < n:
            lexicon[token_id] = ord(text)
    return lexicon


def install_char_lexicon(model, tokenizer) -> None:
    """Replace the `tokens` parser's element values by lexicon values (in place); gates stay learned."""
    parser = model.delta_head.parser
    n = model.delta_head.config.delta_word_size
    if parser.mode != "tokens" or parser.per_token != 1:
        raise ValueError("the character lexicon is for `tokens` parsing with one element per token (sort_spaced)")
    lexicon = char_lexicon(tokenizer, n)

    def parse(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor):
        hidden = self.norm(hidden).float()  # (B, T, H)
        b = hidden.shape[0]
        z = last_token_states(hidden, attention_mask)  # (B, H)
        registers = self.values(z).view(b, self.num_registers, self.n).softmax(-1)  # (B, Rin, n)
        gates = self.gates(hidden)[..., 0].sigmoid()  # (B, T): the learned gate of each token's element
        if attention_mask is not None:
            gates = gates * attention_mask.to(gates.dtype)
        codes = lexicon.to(hidden.device)[input_ids]  # (B, T): the character each token spells, or -1
        spelled = F.one_hot(codes.clamp(min=0), n).float()  # (B, T, n)
        values = torch.where(codes[..., None] >= 0, spelled, torch.full_like(spelled, 1 / n))  # (B, T, n)
        cells = compact_elements(gates, values, self.num_cells)  # (B, C, n)
        return ParsedQuestion(cells, registers, self.select(z).softmax(-1))

    parser.forward = types.MethodType(parse, parser)  # the head passes the token ids the lexicon reads
