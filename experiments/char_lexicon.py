"""Diagnostic parse for string tasks: `tokens` parsing whose element values come from a fixed lexicon.

Every token that spells one character (spaces aside) below n emits that character's code point as a one-hot value;
other tokens emit a uniform value. The backbone learns only the gates (which tokens are elements of the string),
not the identity of each character token. Counterpart of `numeral_pointer.py`; one element per token only.

    OMP_NUM_THREADS=1 python -m experiments.run_sft --name sort-lexicon --char_lexicon -- --task sort_spaced ...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modeling_llama_delta.parsing import TokenParser


def char_lexicon(tokenizer, n: int) -> Tensor:
    """(V,) long: token id -> the code point (< n) of the one character it spells, spaces stripped, else -1."""
    lexicon = torch.full((len(tokenizer),), -1, dtype=torch.long)
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip()
        if len(text) == 1 and 0 < ord(text) < n:
            lexicon[token_id] = ord(text)
    return lexicon


class CharLexiconParser(TokenParser):
    """`tokens` parsing (one element per token) whose element values are lexicon values; the gates stay learned."""

    def __init__(self, config, lexicon: Tensor):
        super().__init__(config)
        self.register_buffer("lexicon", lexicon, persistent=False)  # (V,) the character each token spells, or -1

    def element_values(self, hidden: Tensor, gates: Tensor, input_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        if input_ids is None:
            raise ValueError("the character lexicon reads the token ids: pass input_ids")
        codes = self.lexicon[input_ids]  # (B, T): the character each token spells, or -1
        spelled = F.one_hot(codes.clamp(min=0), self.n).float()  # (B, T, n)
        values = torch.where(codes[..., None] >= 0, spelled, torch.full_like(spelled, 1 / self.n))  # (B, T, n)
        return gates, values[:, :, None]  # (B, T, 1), (B, T, 1, n)


def install_char_lexicon(model, tokenizer) -> None:
    """Replace the `tokens` parser by a `CharLexiconParser` with the same weights (in place)."""
    head = model.delta_head
    parser, config = head.parser, head.config
    if not isinstance(parser, TokenParser) or parser.per_token != 1:
        raise ValueError("the character lexicon is for `tokens` parsing with one element per token (sort_spaced)")
    lexicon_parser = CharLexiconParser(config, char_lexicon(tokenizer, config.delta_word_size))
    lexicon_parser.load_state_dict(parser.state_dict())  # the same keys: the element classifier stays, unused
    head.parser = lexicon_parser.to(parser.norm.weight.device)
