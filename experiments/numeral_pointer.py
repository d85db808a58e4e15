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

import torch
import torch.nn.functional as F
from torch import Tensor

from modeling_llama_delta.parsing import SlotParser


def numeral_lexicon(tokenizer, n: int) -> Tensor:
    """(V,) long: token id -> the number 0..n-1 it spells (no leading zeros, surrounding spaces allowed), else -1."""
    lexicon = torch.full((len(tokenizer),), -1, dtype=torch.long)
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip()
        if text.isdecimal() and text.isascii() and (text == "0" or not text.startswith("0")) and int(text) < n:
            lexicon[token_id] = int(text)
    return lexicon


class NumeralPointerParser(SlotParser):
    """`slots` whose value slots are attention-weighted lexicon values instead of classifiers."""

    def __init__(self, config, lexicon: Tensor):
        super().__init__(config)
        self.register_buffer("lexicon", lexicon, persistent=False)  # (V,) the number each token spells, or -1

    def slot_values(self, attention: Tensor, read: Tensor, input_ids: Tensor | None) -> Tensor:
        if input_ids is None:
            raise ValueError("the numeral pointer reads the token ids: pass input_ids")
        values = self.lexicon[input_ids]  # (B, T): the number each token spells, or -1
        spelled = F.one_hot(values.clamp(min=0), self.n).float()  # (B, T, n)
        per_token = torch.where(values[..., None] >= 0, spelled, torch.full_like(spelled, 1 / self.n))  # (B, T, n)
        return torch.einsum("bst,btn->bsn", attention, per_token)  # (B, S, n)


def install_numeral_pointer(model, tokenizer) -> None:
    """Replace the `slots` parser by a `NumeralPointerParser` with the same weights (in place)."""
    head = model.delta_head
    parser, config = head.parser, head.config
    if not isinstance(parser, SlotParser) or parser.num_cells:
        raise ValueError("the numeral pointer is for `slots` parsing of registers only (arithmetic)")
    pointer = NumeralPointerParser(config, numeral_lexicon(tokenizer, config.delta_word_size))
    pointer.load_state_dict(parser.state_dict())  # the same keys: the slot classifiers stay, unused
    head.parser = pointer.to(parser.norm.weight.device)
