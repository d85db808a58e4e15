"""Parse modes: how the head turns hidden states into Δ's initial cells, registers and program selection.

One class per parse mode behind `PARSERS` (name -> class, as transformers dispatches attention implementations):
each owns its parameters, its forward, and how its parse is sampled (`delta_parse_samples`) and taken greedily.
`config.delta_parse_mode` names the class; `build_parser` is the one place that reads it. A variant of a mode
(experiments/char_lexicon.py, experiments/numeral_pointer.py) subclasses it and overrides its value hook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

if TYPE_CHECKING:
    from .configuration_llama_delta import LlamaDeltaConfig

# Sampled parses (`delta_parse_samples`) draw each gate from P = EXPLORATION + (1 - 2·EXPLORATION)·gate: a token
# whose gate has collapsed the wrong way is still tried now and then, so its gradient does not vanish for good.
EXPLORATION = 0.05


@dataclass
class ParsedQuestion:
    """The head's parse, as distributions: cells (B, C, n), registers (B, Rin, n), selection (B, P)."""

    cells: Tensor
    registers: Tensor
    selection: Tensor


@dataclass
class ParsedElements(ParsedQuestion):
    """A `tokens` parse, with its factors: element gates (B, E) and values (B, E, n) (E = T·k, token-major), which
    `compact_elements` turns into the cells."""

    gates: Tensor
    elements: Tensor
    # (B, T) bool, only when values are copied from tokens: a token that spells no value, whose own (learned) gate
    # is open, lying between the first and last token that emits an element: the input holds something Δ cannot
    # represent (a character outside the token table, e.g. one >= n), which the parse would silently drop.
    unspelled: Tensor | None = None


@dataclass
class ParsedMixed(ParsedElements):
    """A `mixed` parse: a `tokens` parse of the cells plus what the refusals need once the program is chosen
    (`RunReport.check_program_inputs`): register_attention (B, Rin, T) the register slots' attention, numerals
    (B, T) the numeral each token ends (-1: none; values >= n kept, capped at `NUMERAL_CAP`, so that a refusal can
    name them), terminators (B, E) which elements are a token's end-of-sequence 0, unspelled_open (B, T) tokens
    that spell no value although their first gate is open (only with `delta_token_values`), characters (B, T) the
    code point each one-character token writes into a register (-1: none)."""

    register_attention: Tensor | None = None
    numerals: Tensor | None = None
    terminators: Tensor | None = None
    unspelled_open: Tensor | None = None
    characters: Tensor | None = None  # (B, T) the code point a one-character token writes into a register, -1 none


def last_token_states(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(B, T, H) -> (B, H): the state of each row's last real token (left or right padding)."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)  # (T,)
    last = (attention_mask.to(positions.dtype) * (positions + 1)).argmax(-1)  # (B,) index of the last 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def one_hot_arg_max(values: Tensor) -> Tensor:
    """(..., n) distributions -> (..., n) the one-hot of each arg-max."""
    return F.one_hot(values.argmax(-1), values.shape[-1]).to(values)


class DeltaParser(nn.Module):
    """Hidden states -> `ParsedQuestion`: Δ's cells (B, C, n), registers (B, Rin, n) and program selection (B, P),
    all probability distributions (one-hot classifications, paper §3.4). The parts every mode shares: the norm,
    the selection classifier, and the table of values tokens spell (`delta_token_values`), where the mode copies.

    Subclasses set `min_input_cells` and `values_per_token` (read by the config's validation) and implement
    `forward`; `sample` and `greedy` draw one-hot parses from the distributions.
    """

    min_input_cells: int = 0  # fewest `delta_input_cells` the mode works with
    resizable: bool = False  # whether `forward` takes `num_cells` (a parse as long as the question needs)

    @staticmethod
    def values_per_token(config: LlamaDeltaConfig) -> int:
        """How many values one token can spell in `delta_token_values` (0: this mode copies none)."""
        return 0

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__()
        self.hidden_size, self.n = config.hidden_size, config.delta_word_size
        self.num_cells, self.num_registers = config.delta_input_cells, config.delta_input_registers
        self.norm = LlamaRMSNorm(self.hidden_size, eps=config.rms_norm_eps)
        self.select = nn.Linear(self.hidden_size, len(config.delta_programs))
        self.copies_tokens = bool(config.delta_token_values)  # the config refuses them where the mode copies none
        if self.copies_tokens:
            self.register_buffer("token_values", token_value_table(config), persistent=False)  # (V, 1 or k)

    def prepare(self, hidden: Tensor, input_ids: Tensor | None) -> Tensor:
        """(B, T, H) normed, in float32 (Δ runs in float32 whatever the backbone's dtype)."""
        if self.copies_tokens and input_ids is None:
            raise ValueError("this parser copies values from the tokens (delta_token_values): pass input_ids")
        return self.norm(hidden).float()

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor | None = None) -> ParsedQuestion:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    @staticmethod
    def sample(parsed: ParsedQuestion, samples: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """`samples` one-hot parses per example, drawn from the head's distributions (its policy), and their log q:
        cells (B·S, C, n) and registers (B·S, Rin, n) (example-major), each drawn independently, and log q (B, S)."""
        registers, log_q = sample_categorical(parsed.registers, samples)  # (B, S, Rin, n), (B, S)
        cells, log_q_cells = sample_categorical(parsed.cells, samples)  # (B, S, C, n)
        return (cells.flatten(0, 1), registers.flatten(0, 1)), log_q + log_q_cells

    @staticmethod
    def greedy(parsed: ParsedQuestion) -> tuple[Tensor, Tensor]:
        """The most likely parse, one-hot: the arg-max of every distribution."""
        return one_hot_arg_max(parsed.cells), one_hot_arg_max(parsed.registers)


class LastTokenParser(DeltaParser):
    """`last_token` (the paper): cells, registers and the selection all from one vector, the last token's state."""

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__(config)
        self.values = nn.Linear(self.hidden_size, (self.num_cells + self.num_registers) * self.n)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor | None = None) -> ParsedQuestion:
        hidden = self.prepare(hidden, input_ids)  # (B, T, H)
        z = last_token_states(hidden, attention_mask)  # (B, H)
        values = self.values(z).view(hidden.shape[0], self.num_cells + self.num_registers, self.n).softmax(-1)
        cells, registers = values.split([self.num_cells, self.num_registers], dim=1)  # (B, C, n), (B, Rin, n)
        return ParsedQuestion(cells, registers, self.select(z).softmax(-1))


class SlotParser(DeltaParser):
    """`slots`: one learned query per parsed value and one for the selection, each attending over all token states,
    so that parsing a string into cells need not squeeze through one vector. With `delta_token_values`, a slot
    attending to a numeral's last token copies the numeral's value (`copy_token_values`)."""

    @staticmethod
    def values_per_token(config: LlamaDeltaConfig) -> int:
        return 1

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__(config)
        h, slots = self.hidden_size, self.num_cells + self.num_registers
        self.queries = nn.Parameter(torch.empty(slots + 1, h))  # (S + 1, H); the last one selects
        self.keys = nn.Linear(h, h, bias=False)
        self.values = nn.Parameter(torch.empty(slots, h, self.n))  # (S, H, n): one classifier per slot
        self.values_bias = nn.Parameter(torch.empty(slots, self.n))  # (S, n)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor | None = None) -> ParsedQuestion:
        hidden = self.prepare(hidden, input_ids)  # (B, T, H)
        scores = torch.einsum("sh,bth->bst", self.queries.float(), self.keys(hidden)) / math.sqrt(hidden.shape[-1])
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask[:, None, :] == 0, torch.finfo(scores.dtype).min)
        attention = scores.softmax(-1)  # (B, S + 1, T)
        read = torch.einsum("bst,bth->bsh", attention, hidden)  # (B, S + 1, H)
        values = self.slot_values(attention[:, :-1], read[:, :-1], input_ids)  # (B, S, n)
        cells, registers = values.split([self.num_cells, self.num_registers], dim=1)
        selection = self.select(read[:, -1]).softmax(-1)  # (B, P)
        return ParsedQuestion(cells, registers, selection)  # (B, C, n), (B, Rin, n), (B, P)

    def slot_values(self, attention: Tensor, read: Tensor, input_ids: Tensor | None) -> Tensor:
        """Each value slot's distribution: attention (B, S, T), the slots' reads (B, S, H) -> (B, S, n)."""
        values = torch.einsum("bsh,shn->bsn", read, self.values.float()) + self.values_bias.float()
        values = values.softmax(-1)  # (B, S, n)
        if self.copies_tokens:
            numerals = numeral_values(self.token_values[input_ids, 0], self.n)  # (B, T)
            values = copy_token_values(attention, numerals, values)
        return values


class TokenParser(DeltaParser):
    """`tokens`: every token emits up to `k` elements (a gate and a value each, `k` = `delta_elements_per_token`),
    and element number i lands in cell m[i] (`compact_elements`); registers and the selection come from the last
    token. Position-free, so it parses strings of any length, and `k > 1` lets a multi-character BPE token spell
    several cells. With `delta_token_values`, a token's elements are the characters it spells, copied exactly;
    only the gates (which tokens are the string's elements) are learned."""

    min_input_cells = 1
    resizable = True

    @staticmethod
    def values_per_token(config: LlamaDeltaConfig) -> int:
        return config.delta_elements_per_token

    def capacity(self, num_tokens: int) -> int:
        """Cells a parse of `num_tokens` tokens can fill: every element it can emit, at most n (Δ's memory bound),
        and at least the training-time `delta_input_cells`."""
        return max(self.num_cells, min(self.n, num_tokens * self.per_token))

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__(config)
        h, self.per_token = self.hidden_size, config.delta_elements_per_token
        self.values = nn.Linear(h, self.num_registers * self.n)
        self.gates = nn.Linear(h, self.per_token)  # (H -> k): P(a token emits its element j)
        if not self.copies_tokens:
            self.elements = nn.Linear(h, self.per_token * self.n)  # (H -> k·n): element j's value, classified

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        input_ids: Tensor | None = None,
        num_cells: int | None = None,
    ) -> ParsedElements:
        """num_cells: the cells to compact into (default `delta_input_cells`; `capacity` sizes it per question)."""
        hidden = self.prepare(hidden, input_ids)  # (B, T, H)
        b = hidden.shape[0]
        z = last_token_states(hidden, attention_mask)  # (B, H)
        registers = self.values(z).view(b, self.num_registers, self.n).softmax(-1)  # (B, Rin, n)
        selection = self.select(z).softmax(-1)  # (B, P)
        gates = self.gates(hidden).sigmoid()  # (B, T, k)
        if attention_mask is not None:
            gates = gates * attention_mask[..., None].to(gates.dtype)
        wanted = gates  # (B, T, k) before a token that spells nothing is closed
        gates, elements = self.element_values(hidden, gates, input_ids)  # (B, T, k), (B, T, k, n)
        unspelled = unspelled_inside(wanted, gates, self.token_values[input_ids]) if self.copies_tokens else None
        gates, elements = gates.flatten(1), elements.flatten(1, 2)  # (B, T·k), (B, T·k, n): token-major
        cells = compact_elements(gates, elements, self.num_cells if num_cells is None else num_cells)  # (B, C, n)
        return ParsedElements(cells, registers, selection, gates, elements, unspelled)

    def element_values(self, hidden: Tensor, gates: Tensor, input_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """Each token's elements: hidden (B, T, H), gates (B, T, k) -> gates (B, T, k), values (B, T, k, n)."""
        if self.copies_tokens:
            return spell_token_values(self.token_values[input_ids], gates, self.n)
        b, t, _ = hidden.shape
        return gates, self.elements(hidden).view(b, t, self.per_token, self.n).softmax(-1)

    @staticmethod
    def sample(parsed: ParsedElements, samples: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """As `DeltaParser.sample`, but the draws are the factors: each element is emitted or not (Bernoulli on its
        gate) with a drawn value, and the emitted ones are compacted, so that a parse never holds one element twice.
        """
        b, c, n = parsed.cells.shape
        registers, log_q = sample_categorical(parsed.registers, samples)  # (B, S, Rin, n), (B, S)
        listed = parsed.gates > 0  # (B, E): padding and elements no token spells stay off
        gates = (EXPLORATION + (1 - 2 * EXPLORATION) * parsed.gates) * listed  # (B, E)
        emitted = torch.bernoulli(gates.detach()[:, None].expand(b, samples, -1))  # (B, S, E)
        log_q = log_q + (
            emitted * log_probability(gates[:, None]) + (1 - emitted) * log_probability(1 - gates[:, None])
        ).sum(-1)
        values, log_q_values = sample_categorical(parsed.elements, samples)  # (B, S, E, n); a copied value: log q 0
        log_q = log_q + log_q_values
        cells = compact_emitted(emitted.flatten(0, 1), values.flatten(0, 1), c)  # (B·S, C, n) one-hot
        return (cells, registers.flatten(0, 1)), log_q

    @staticmethod
    def greedy(parsed: ParsedElements) -> tuple[Tensor, Tensor]:
        """The arg-max of every factor: the elements whose gate is above 1/2, with their arg-max values, compacted."""
        cells = compact_emitted(parsed.gates > 0.5, one_hot_arg_max(parsed.elements), parsed.cells.shape[1])
        return one_hot_arg_max(cells), one_hot_arg_max(parsed.registers)


class MixedParser(DeltaParser):
    """`mixed`: ONE parse for the whole library, numbers into registers and sequences into memory in one pass.

    Registers: one learned query per input register attends only over the tokens that write a value (a numeral's
    last token: its value; a token of one non-digit character: its code point, `count`'s character) and copies it
    (`copy_register_values`; no classifier). Cells: each token emits up to `k` elements (as `tokens`), the characters
    it spells, copied, with learned gates, compacted in order from m[0]. The selection: one more query. ONE token
    table, `delta_token_values` (the code points each token spells): a token whose characters are all digits
    spells the numeral they write ("118" is 118 for a register while its characters '1', '1', '8' can be cells).

    Two sequences (add_digits' A 0 B 0): with `delta_token_values` every token has one more element after its
    characters, the terminator 0, behind its own learned gate (an end-of-sequence gate). Why not a 0 from the
    tokens that spell nothing: with Llama 3 and k = 3 the tokens between two numerals (" ", " +", " and" once
    k >= 4) may all spell characters, so no token spelling nothing need lie between A and B; with the end gate
    any token can close a sequence, whatever the wording. Where the chosen program reads fewer sequences, a 0
    inside its input is refused (`RunReport.check_program_inputs`). Without `delta_token_values` the registers
    and the elements are classified (a classified element can be 0 itself: no end gate).
    """

    min_input_cells = 1
    resizable = True
    values_per_token = staticmethod(TokenParser.values_per_token)
    sample = staticmethod(TokenParser.sample)  # the same factors as `tokens`: registers categorical, gates Bernoulli
    greedy = staticmethod(TokenParser.greedy)

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__(config)
        h, self.per_token = self.hidden_size, config.delta_elements_per_token
        self.queries = nn.Parameter(torch.empty(self.num_registers + 1, h))  # (Rin + 1, H); the last one selects
        self.keys = nn.Linear(h, h, bias=False)
        # (H -> k [+ 1]): P(a token emits its element j) [, P(it then ends the sequence)]
        self.gates = nn.Linear(h, self.elements_per_token)
        if not self.copies_tokens:  # values classified: a classifier per register, one per element
            self.values = nn.Parameter(torch.empty(self.num_registers, h, self.n))  # (Rin, H, n)
            self.values_bias = nn.Parameter(torch.empty(self.num_registers, self.n))  # (Rin, n)
            self.elements = nn.Linear(h, self.per_token * self.n)  # (H -> k·n): element j's value, classified

    @property
    def elements_per_token(self) -> int:
        """Elements each token can emit: its k characters, and the terminator where values are copied."""
        return self.per_token + self.copies_tokens

    def capacity(self, num_tokens: int) -> int:
        """As `TokenParser.capacity`, counting every element a token can emit (its terminator included)."""
        return max(self.num_cells, min(self.n, num_tokens * self.elements_per_token))

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        input_ids: Tensor | None = None,
        num_cells: int | None = None,
    ) -> ParsedMixed:
        """num_cells: the cells to compact into (default `delta_input_cells`; `capacity` sizes it per question)."""
        hidden = self.prepare(hidden, input_ids)  # (B, T, H)
        b, t, _ = hidden.shape
        k, n = self.per_token, self.n
        scores = torch.einsum("qh,bth->bqt", self.queries.float(), self.keys(hidden)) / math.sqrt(hidden.shape[-1])
        if attention_mask is not None:
            scores = scores.masked_fill(attention_mask[:, None, :] == 0, torch.finfo(scores.dtype).min)
        attention = scores.softmax(-1)  # (B, Rin + 1, T)
        read = torch.einsum("bqt,bth->bqh", attention, hidden)  # (B, Rin + 1, H)
        selection = self.select(read[:, -1]).softmax(-1)  # (B, P)
        gates = self.gates(hidden).sigmoid()  # (B, T, k [+ 1])
        if attention_mask is not None:
            gates = gates * attention_mask[..., None].to(gates.dtype)
        if not self.copies_tokens:
            registers = torch.einsum("brh,rhn->brn", read[:, :-1], self.values.float()) + self.values_bias.float()
            registers = registers.softmax(-1)  # (B, Rin, n)
            elements = self.elements(hidden).view(b, t, k, n).softmax(-1)  # (B, T, k, n)
            cells = compact_elements(gates.flatten(1), elements.flatten(1, 2), num_cells or self.num_cells)
            return ParsedMixed(cells, registers, selection, gates.flatten(1), elements.flatten(1, 2))
        spelled = self.token_values[input_ids]  # (B, T, k), -1 padded
        numerals = spelled_numerals(spelled)  # (B, T)
        register_attention, registers, characters_written = copy_register_values(scores[:, :-1], numerals, spelled, n)
        characters, ends = gates.split([k, 1], dim=-1)  # (B, T, k), (B, T, 1)
        unspelled_open = (spelled < 0).all(-1) & (characters[..., 0] > 0.5)  # (B, T)
        gates = torch.cat([characters * (spelled >= 0), ends], dim=-1)  # (B, T, k + 1): what spells nothing stays off
        values = F.one_hot(torch.cat([spelled.clamp_min(0), torch.zeros_like(spelled[..., :1])], -1), n).to(gates)
        terminators = torch.zeros_like(gates, dtype=torch.bool)  # (B, T, k + 1): the last element of each token
        terminators[..., k] = True
        gates, values = gates.flatten(1), values.flatten(1, 2)  # (B, T·(k+1)), (B, T·(k+1), n): token-major
        cells = compact_elements(gates, values, num_cells or self.num_cells)  # (B, C, n)
        return ParsedMixed(
            cells,
            registers,
            selection,
            gates,
            values,
            None,
            register_attention,
            numerals,
            terminators.flatten(1),
            unspelled_open,
            characters_written,
        )


# The registry: `delta_parse_mode` -> its parser class.
PARSERS: dict[str, type[DeltaParser]] = {
    "last_token": LastTokenParser,
    "slots": SlotParser,
    "tokens": TokenParser,
    "mixed": MixedParser,
}
PARSE_MODES: tuple[str, ...] = tuple(PARSERS)


def build_parser(config: LlamaDeltaConfig) -> DeltaParser:
    """The parser `config.delta_parse_mode` names."""
    return PARSERS[config.delta_parse_mode](config)


def token_value_table(config: LlamaDeltaConfig) -> Tensor:
    """(vocab, k) token id -> the values it spells, -1 padded (-1 everywhere: it spells none); `k` is the parse
    mode's `values_per_token`. A pure function of the config (rebuilt, not saved)."""
    k = PARSERS[config.delta_parse_mode].values_per_token(config)
    rows = [[-1] * k for _ in range(config.vocab_size)]
    for token, spelled in config.delta_token_values.items():
        values = spelled if isinstance(spelled, list) else [spelled]
        rows[int(token)][: len(values)] = values
    return torch.tensor(rows, dtype=torch.long, device="cpu")  # on the CPU even under a meta-device context


def numeral_values(token_values: Tensor, n: int) -> Tensor:
    """The number each token ends, for `slots` copying: adjacent value tokens read as one decimal numeral (a
    digit-by-digit tokenizer's "1", "2", "5" is 125; Llama 3's "123", "4" is 1234), carried by the numeral's last
    token only; the other tokens, and numerals of n or more, spell none (-1).

    token_values (B, T) (each token's own value, -1 where it spells none) -> (B, T).
    """
    digits = torch.ones_like(token_values)
    power = 10
    while power < n:  # a value below n has at most len(str(n - 1)) digits
        digits += (token_values >= power).long()
        power *= 10
    numerals, running = torch.full_like(token_values, -1), torch.full_like(token_values[:, 0], -1)  # (B, T), (B,)
    for t in range(token_values.shape[1]):  # questions are short: a loop over positions, O(T) small ops
        value = token_values[:, t]
        extended = (running * 10 ** digits[:, t] + value).clamp_max(n)  # n: the numeral is out of range
        running = torch.where(value < 0, -1, torch.where(running >= 0, extended, value))
        numerals[:, t] = running
    ends = torch.ones_like(token_values, dtype=torch.bool)
    ends[:, :-1] = token_values[:, 1:] < 0  # the next token spells no value: the numeral ends here
    return torch.where(ends & (numerals < n), numerals, -1)


# Where `spelled_numerals` stops counting: a numeral this large or larger is out of range for any word size.
NUMERAL_CAP = 10**6


def spelled_numerals(spelled: Tensor) -> Tensor:
    """The numeral each token ends, for `mixed` parsing, from the characters tokens spell: a token whose characters
    are all decimal digits spells their value, adjacent such tokens read as one numeral (Llama 3's "791", "0" is
    7910), carried by the numeral's last token; other tokens -1. Values are capped at `NUMERAL_CAP` (the copy
    takes only those below n; the refusals name the rest).

    spelled (B, T, k) code points (-1 padded) -> (B, T).
    """
    is_digit = (spelled >= ord("0")) & (spelled <= ord("9"))  # (B, T, k)
    numeral_token = (is_digit | (spelled < 0)).all(-1) & is_digit.any(-1)  # (B, T)
    value = torch.zeros_like(spelled[..., 0])  # (B, T)
    for j in range(spelled.shape[-1]):  # k is small: a loop over a token's characters
        digit = spelled[..., j] - ord("0")
        value = torch.where(is_digit[..., j], (value * 10 + digit).clamp_max(NUMERAL_CAP), value)
    shift = 10 ** is_digit.sum(-1).clamp_max(6)  # (B, T) 10^(digits of the token), at most NUMERAL_CAP
    numerals, running = torch.full_like(value, -1), torch.full_like(value[:, 0], -1)  # (B, T), (B,)
    for t in range(value.shape[1]):  # questions are short: a loop over positions, O(T) small ops
        extended = (running * shift[:, t] + value[:, t]).clamp_max(NUMERAL_CAP)
        running = torch.where(numeral_token[:, t], torch.where(running >= 0, extended, value[:, t]), -1)
        numerals[:, t] = running
    ends = torch.ones_like(numeral_token)
    ends[:, :-1] = ~numeral_token[:, 1:]  # the next token is no numeral: the numeral ends here
    return torch.where(ends, numerals, -1)


def copy_register_values(scores: Tensor, numerals: Tensor, spelled: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """`mixed` registers with spelled tokens: copied, never classified, so that a register holds a value the
    question writes (a classifier would let the backbone compute an answer and smuggle it into a register, where
    an identity-like program passes it through: measured on the `all` mixture, `add` answering strlen). A register
    slot attends only over the tokens that write a value: a numeral's last token (its value; a numeral >= n is
    listed too, with the value 0, so that the refusals can name it) and a token of one non-digit character (its
    code point: `count`'s character). A question with no such token gives the value 0.

    scores (B, Rin, T) the slots' attention logits (padding at the dtype's min), numerals (B, T) (`spelled_numerals`),
    spelled (B, T, k) -> attention (B, Rin, T), registers (B, Rin, n), characters (B, T) the code point each
    one-character token writes (-1: none; the refusals tell a character read as a number).
    """
    one_value = (spelled >= 0).sum(-1) == 1  # (B, T)
    digit = (spelled[..., 0] >= ord("0")) & (spelled[..., 0] <= ord("9"))
    character = torch.where(one_value & ~digit, spelled[..., 0], -1)  # (B, T)
    writes = (numerals >= 0) | (character >= 0)  # (B, T) the tokens a register may copy
    value = torch.where(numerals >= 0, torch.where(numerals < n, numerals, 0), character.clamp_min(0))  # (B, T)
    none = ~writes.any(-1, keepdim=True)  # (B, 1): nothing to copy (then the value 0 everywhere)
    attention = scores.masked_fill(~(writes | none)[:, None, :], torch.finfo(scores.dtype).min).softmax(-1)
    copied = F.one_hot(torch.where(none, 0, value), n).to(attention)  # (B, T, n)
    return attention, torch.einsum("brt,btn->brn", attention, copied), character  # (B, Rin, T), (B, Rin, n), (B, T)


def copy_token_values(attention: Tensor, token_values: Tensor, classified: Tensor) -> Tensor:
    """A slot's value: the value of the token it attends to where that token spells one (a copy, exact for a
    sharp attention), its own classifier's distribution for the rest of its attention mass.

    attention (B, S, T), token_values (B, T) (-1 where a token spells no value), classified (B, S, n) -> (B, S, n).
    """
    n = classified.shape[-1]
    spelled = F.one_hot(token_values.clamp_min(0), n).to(attention) * (token_values >= 0)[..., None]  # (B, T, n)
    copied = torch.einsum("bst,btn->bsn", attention, spelled)  # (B, S, n)
    return copied + (1 - copied.sum(-1, keepdim=True)) * classified


def spell_token_values(spelled: Tensor, gates: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """`tokens` parsing with spelled tokens: a token's elements are the values it spells, exactly (one-hot), and
    only those can be emitted (a token that spells nothing emits nothing); only the gates stay learned.

    spelled (B, T, k) (-1 padded), gates (B, T, k) -> gates (B, T, k), values (B, T, k, n).
    """
    return gates * (spelled >= 0), F.one_hot(spelled.clamp_min(0), n).to(gates)


def unspelled_inside(wanted: Tensor, gates: Tensor, spelled: Tensor) -> Tensor:
    """(B, T) tokens that spell no value although their gate is open (> 1/2), lying between the first and the last
    token whose element is emitted: wanted / gates (B, T, k) the gates before / after closing what spells nothing,
    spelled (B, T, k) the token values (-1: none)."""
    emits = (gates > 0.5).any(-1)  # (B, T)
    positions = torch.arange(emits.shape[1], device=emits.device)  # (T,)
    first = torch.where(emits, positions, emits.shape[1]).amin(-1, keepdim=True)  # (B, 1)
    last = torch.where(emits, positions, -1).amax(-1, keepdim=True)  # (B, 1)
    inside = (positions > first) & (positions < last)  # (B, T)
    return inside & (spelled < 0).all(-1) & (wanted[..., 0] > 0.5)


def compact_elements(gates: Tensor, values: Tensor, num_cells: int) -> Tensor:
    """Place the elements a sequence emits, in order, into cells m[0], m[1], ...; empty cells hold 0.

    gates (B, S): P(position s emits an element); values (B, S, n): the element's value distribution.
    Position s's element lands in cell i with P(exactly i elements were emitted before s) -- a
    Poisson-binomial over the earlier gates, built by one update per position. Hard gates give the
    exact compaction; soft ones a differentiable mixture. Returns (B, C, n) distributions.
    """
    b, s, n = values.shape
    before = F.one_hot(torch.zeros(b, dtype=torch.long, device=values.device), num_cells + 1).to(values)  # (B, C+1)
    cells = values.new_zeros(b, num_cells, n)
    for position in range(s):
        gate = gates[:, position, None]  # (B, 1)
        land = gate * before[:, :num_cells]  # (B, C): P(this element lands in cell i); counts >= C overflow
        cells = cells + land[:, :, None] * values[:, position, None, :]  # (B, C, 1) * (B, 1, n)
        # One more element emitted with P(gate): shift the count distribution (the overflow bin absorbs).
        shifted = torch.cat([before[:, :1] * 0, before[:, :-2], before[:, -2:].sum(-1, keepdim=True)], dim=1)
        before = (1 - gate) * before + gate * shifted
    filled = cells.sum(-1, keepdim=True).clamp(max=1)  # (B, C, 1) P(cell i holds an element), rounding clipped
    empty = F.one_hot(torch.zeros((), dtype=torch.long, device=values.device), n).to(values)  # (n,) the value 0
    return cells + (1 - filled) * empty


def compact_emitted(emitted: Tensor, values: Tensor, num_cells: int) -> Tensor:
    """`compact_elements` for hard gates, in one scatter instead of a pass per position: the elements with
    `emitted` (B, S) true (or 1), values (B, S, n), land in order in cells m[0], m[1], ...; the rest of the cells
    hold 0, elements past the last cell are dropped. Equal to `compact_elements` on 0/1 gates (tested)."""
    b, s, n = values.shape
    emitted = emitted.to(torch.long)
    cell = (emitted.cumsum(1) - 1).masked_fill(emitted == 0, num_cells).clamp(max=num_cells)  # (B, S); C: dropped
    cells = values.new_zeros(b, num_cells + 1, n).scatter_add_(1, cell[..., None].expand(b, s, n), values)
    cells = cells[:, :num_cells]  # (B, C, n)
    empty = cells.sum(-1) == 0  # (B, C): no element landed there
    return cells + empty[..., None] * F.one_hot(torch.zeros((), dtype=torch.long, device=values.device), n).to(values)


def sample_categorical(values: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """`samples` one-hot draws from each distribution: values (B, X, n) -> (B, S, X, n) one-hot, log q (B, S)."""
    b, x, n = values.shape
    if x == 0:
        return values.new_zeros(b, samples, 0, n), values.new_zeros(b, samples)
    picks = torch.multinomial(values.detach().reshape(b * x, n), samples, replacement=True)  # (B·X, S)
    picks = picks.view(b, x, samples).transpose(1, 2)  # (B, S, X)
    chosen = values[:, None].expand(b, samples, x, n).gather(-1, picks[..., None])[..., 0]  # (B, S, X)
    return F.one_hot(picks, n).to(values), log_probability(chosen).sum(-1)


def log_probability(probabilities: Tensor) -> Tensor:
    return torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))


__all__ = [
    "PARSERS",
    "PARSE_MODES",
    "DeltaParser",
    "LastTokenParser",
    "MixedParser",
    "ParsedElements",
    "ParsedMixed",
    "ParsedQuestion",
    "SlotParser",
    "TokenParser",
    "build_parser",
    "compact_elements",
    "compact_emitted",
    "last_token_states",
    "spelled_numerals",
    "unspelled_inside",
]
