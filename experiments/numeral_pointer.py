"""Diagnostic parse for arithmetic: `slots` whose register values are copied from the attended token's numeral.

Llama 3 spells every number 0..999 as one token, so a register slot's value can be a pointer: the slot's
attention over the tokens (learned) times a fixed lexicon token -> one-hot value (uniform for tokens that are
no numeral below n). The backbone then only has to learn *where* x and y are and which operation is asked for,
not the identity of 128 number embeddings. If this converges in an epoch while the learned `slots` classifier
does not, the bottleneck is learning number identity from answer-only supervision.

    OMP_NUM_THREADS=1 python -m experiments.run_sft --name arith-pointer --numeral_pointer -- \
        --task arithmetic --parse_mode slots --dataset_size 10000 --num_train_epochs 6
"""

from __future__ import annotations

import math
import types

import torch
import torch.nn.functional as F
from torch import Tensor

from modeling_llama_delta.modeling_llama_delta import ParsedQuestion


def numeral_lexicon(tokenizer, n: int) -> Tensor:
    """(V,) long: token id -> the number 0..n-1 it spells (no leading zeros, surrounding spaces allowed), else -1."""
    lexicon = torch.full((len(tokenizer),), -1, dtype=torch.long)
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip()
        if text.isdecimal() and text.isascii() and (text == "0" or not text.startswith("0")) and int(text) < n:
            lexicon[token_id] = int(text)
    return lexicon


def install_numeral_pointer(model, tokenizer) -> None:
    """Replace the `slots` parser's register classifiers by attention-weighted lexicon values (in place)."""
    head = model.delta_head
    parser, n = head.parser, head.config.delta_word_size
    if parser.mode != "slots" or parser.num_cells:
        raise ValueError("the numeral pointer is for `slots` parsing of registers only (arithmetic)")
    lexicon = numeral_lexicon(tokenizer, n)

    def parse(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor):
        hidden = self.norm(hidden).float()  # (B, T, H)
        scores = torch.einsum("sh,bth->bst", self.queries.float(), self.keys(hidden)) / math.sqrt(hidden.shape[-1])
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask[:, None, :] == 0, torch.finfo(scores.dtype).min)
        attention = scores.softmax(-1)  # (B, S + 1, T)
        values = lexicon.to(hidden.device)[input_ids]  # (B, T): the number each token spells, or -1
        spelled = F.one_hot(values.clamp(min=0), n).float()  # (B, T, n)
        per_token = torch.where(values[..., None] >= 0, spelled, torch.full_like(spelled, 1 / n))  # (B, T, n)
        registers = torch.einsum("bst,btn->bsn", attention[:, :-1], per_token)  # (B, Rin, n)
        read = torch.einsum("bt,bth->bh", attention[:, -1], hidden)  # (B, H): the selection slot's read
        cells = registers.new_zeros(registers.shape[0], 0, n)  # (B, 0, n)
        return ParsedQuestion(cells, registers, self.select(read).softmax(-1))

    parser.forward = types.MethodType(parse, parser)  # the head passes the token ids the lexicon reads
