"""`LlamaDeltaForAlgorithmicQA`: a Llama whose hidden states are parsed into the initial state of Δ.

Paper §3.4: the backbone runs, a head turns a hidden layer into one-hot classifications (Δ's initial
memory cells and registers, and a choice of library program), Δ runs every library program, and the
answer is read from the final state, mixed over programs by the selection. Trained on answers alone.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers import initialization as init
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.utils import ModelOutput

from .assembler import AssemblyError, assemble
from .compiler import compile_programs
from .configuration_llama_delta import LlamaDeltaConfig
from .machine import DeltaMachine, DeltaTrace

# Floor added to answer probabilities before the log: keeps the loss finite and its gradient bounded
# (<= 1/eps) where Δ gives the right answer almost no mass.
ANSWER_EPS = 1e-6
# Sampled parses (`delta_parse_samples`) draw each gate from P = EXPLORATION + (1 - 2·EXPLORATION)·gate: a token
# whose gate has collapsed the wrong way is still tried now and then, so its gradient does not vanish for good.
EXPLORATION = 0.05


@dataclass
class AlgorithmicQAOutput(ModelOutput):
    """
    loss: cross-entropy on answer elements (only when `labels` are given).
    answer_logits: (B, K, n) log-probabilities of each answer element, read from Δ's final state.
    selection: (B, P) program selection probabilities.
    halt_probability: (B,) P(halted) after the run, mixed over programs.
    parsed_memory / parsed_registers: (B, C, n) / (B, Rin, n) the head's initial cells and registers.
    delta_trace: per-step Δ record, when `return_delta_trace=True`.
    sample_loss: (B, S) the answer loss of each sampled parse (training with `delta_parse_samples`, labels given).
    """

    loss: Tensor | None = None
    answer_logits: Tensor | None = None
    selection: Tensor | None = None
    halt_probability: Tensor | None = None
    parsed_memory: Tensor | None = None
    parsed_registers: Tensor | None = None
    delta_trace: DeltaTrace | None = None
    sample_loss: Tensor | None = None


@dataclass
class ParsedQuestion:
    """The head's parse, as distributions: cells (B, C, n), registers (B, Rin, n), selection (B, P); for `tokens`
    parsing also its factors, element gates (B, E) and values (B, E, n) (E = T·k, token-major), which
    `compact_elements` turns into the cells."""

    cells: Tensor
    registers: Tensor
    selection: Tensor
    gates: Tensor | None = None
    elements: Tensor | None = None


def last_token_states(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(B, T, H) -> (B, H): the state of each row's last real token (left or right padding)."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)  # (T,)
    last = (attention_mask.to(positions.dtype) * (positions + 1)).argmax(-1)  # (B,) index of the last 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class DeltaParser(nn.Module):
    """Hidden states -> Δ's parsed cells (B, C, n), registers (B, Rin, n) and program selection (B, P),
    all probability distributions (one-hot classifications, paper §3.4).

    `last_token` (the paper): everything from one vector, the last token's state.
    `slots`: one learned query per parsed value and one for the selection, each attending over all token
        states, so that parsing a string into cells need not squeeze through one vector.
    `tokens`: every token emits up to `k` elements (a gate and a value each, `k` =
        `delta_elements_per_token`), and element number i lands in cell m[i] (`compact_elements`); registers
        and the selection come from the last token. Position-free, so it parses strings of any length, and
        `k > 1` lets a multi-character BPE token spell several cells. With `delta_token_values`, a token that
        spells values (a slot's attended token, a token's characters) passes them on exactly; only where they
        go (attention, gates) is learned.
    """

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__()
        h, n = config.hidden_size, config.delta_word_size
        self.mode = config.delta_parse_mode
        self.num_cells, self.num_registers = config.delta_input_cells, config.delta_input_registers
        self.per_token = config.delta_elements_per_token
        self.n = n
        self.norm = LlamaRMSNorm(h, eps=config.rms_norm_eps)
        self.select = nn.Linear(h, len(config.delta_programs))
        self.copies_tokens = bool(config.delta_token_values) and self.mode != "last_token"
        if self.copies_tokens:
            self.register_buffer("token_values", token_value_table(config), persistent=False)  # (V, 1 or k)
        if self.mode == "slots":
            slots = self.num_cells + self.num_registers
            self.queries = nn.Parameter(torch.empty(slots + 1, h))  # (S + 1, H); the last one selects
            self.keys = nn.Linear(h, h, bias=False)
            self.values = nn.Parameter(torch.empty(slots, h, n))  # (S, H, n): one classifier per slot
            self.values_bias = nn.Parameter(torch.empty(slots, n))  # (S, n)
        else:
            last_token_values = self.num_registers + (self.num_cells if self.mode == "last_token" else 0)
            self.values = nn.Linear(h, last_token_values * n)
        if self.mode == "tokens":
            self.gates = nn.Linear(h, self.per_token)  # (H -> k): P(a token emits its element j)
            if not self.copies_tokens:
                self.elements = nn.Linear(h, self.per_token * n)  # (H -> k·n): element j's value, classified

    def forward(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor | None = None) -> ParsedQuestion:
        if self.copies_tokens and input_ids is None:
            raise ValueError("this parser copies values from the tokens (delta_token_values): pass input_ids")
        hidden = self.norm(hidden).float()  # (B, T, H); Δ runs in float32 whatever the backbone's dtype
        b, t, _ = hidden.shape
        if self.mode == "slots":
            scores = torch.einsum("sh,bth->bst", self.queries.float(), self.keys(hidden)) / math.sqrt(hidden.shape[-1])
            if attention_mask is not None:
                scores = scores.masked_fill(attention_mask[:, None, :] == 0, torch.finfo(scores.dtype).min)
            attention = scores.softmax(-1)  # (B, S + 1, T)
            read = torch.einsum("bst,bth->bsh", attention, hidden)  # (B, S + 1, H)
            values = torch.einsum("bsh,shn->bsn", read[:, :-1], self.values.float()) + self.values_bias.float()
            values = values.softmax(-1)  # (B, S, n)
            if self.copies_tokens:
                numerals = numeral_values(self.token_values[input_ids, 0], self.n)  # (B, T)
                values = copy_token_values(attention[:, :-1], numerals, values)
            cells, registers = values.split([self.num_cells, self.num_registers], dim=1)
            selection = self.select(read[:, -1]).softmax(-1)  # (B, P)
            return ParsedQuestion(cells, registers, selection)  # (B, C, n), (B, Rin, n), (B, P)
        z = last_token_states(hidden, attention_mask)  # (B, H)
        values = self.values(z).view(
            b, self.num_registers + (self.num_cells if self.mode == "last_token" else 0), self.n
        )
        values = values.softmax(-1)  # (B, [C +] Rin, n)
        selection = self.select(z).softmax(-1)  # (B, P)
        if self.mode == "last_token":
            return ParsedQuestion(*values.split([self.num_cells, self.num_registers], dim=1), selection)
        gates = self.gates(hidden).sigmoid()  # (B, T, k)
        if attention_mask is not None:
            gates = gates * attention_mask[..., None].to(gates.dtype)
        if self.copies_tokens:
            gates, elements = spell_token_values(self.token_values[input_ids], gates, self.n)
        else:
            elements = self.elements(hidden).view(b, t, self.per_token, self.n).softmax(-1)  # (B, T, k, n)
        gates, elements = gates.flatten(1), elements.flatten(1, 2)  # (B, T·k), (B, T·k, n): token-major
        return ParsedQuestion(compact_elements(gates, elements, self.num_cells), values, selection, gates, elements)


def token_value_table(config: LlamaDeltaConfig) -> Tensor:
    """(vocab, k) token id -> the values it spells, -1 padded (-1 everywhere: it spells none); `k` is 1 for `slots`,
    `delta_elements_per_token` for `tokens`. A pure function of the config (rebuilt, not saved)."""
    k = 1 if config.delta_parse_mode == "slots" else config.delta_elements_per_token
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


class DeltaComputerHead(nn.Module):
    """Parser + Δ + answer read-out. The library ROM is a persistent, frozen buffer of the machine."""

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__()
        self.config = config
        self.parser = DeltaParser(config)
        self.machine = build_machine(config)

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        input_ids: Tensor | None = None,
        return_trace: bool = False,
    ):
        # Δ is exact only in full precision: no bf16/fp16 autocast inside the head.
        with torch.autocast(hidden.device.type, enabled=False):
            return self._run(hidden, attention_mask, input_ids, return_trace)

    def _run(self, hidden: Tensor, attention_mask: Tensor | None, input_ids: Tensor | None, return_trace: bool):
        config = self.config
        parsed = self.parser(hidden, attention_mask, input_ids)
        cells, registers, selection = parsed.cells, parsed.registers, parsed.selection
        inputs, run_selection, log_q = (cells, registers), selection, None
        samples = config.delta_parse_samples
        if config.delta_straight_through:
            inputs = tuple(straight_through_one_hot(values) for values in inputs)
        elif samples and self.training:
            inputs, log_q = sample_parse(parsed, samples)  # (B·S, ., n) one-hot each, (B, S)
            run_selection = selection.repeat_interleave(samples, dim=0)  # (B·S, P)
        elif samples:
            inputs = greedy_parse(parsed)
        state = self.machine.start_state(
            memory=inputs[0] if cells.shape[1] else None,
            registers=inputs[1] if registers.shape[1] else None,
            batch_size=run_selection.shape[0],
        )
        run = self.machine(state, selection=run_selection, return_trace=return_trace)
        source = run.state.registers if config.delta_answer_source == "registers" else run.state.memory
        answer = source[:, : config.delta_answer_length]  # (B[·S], K, n) probabilities
        halted = run.state.halted
        if log_q is not None:
            answer = answer.view(-1, samples, *answer.shape[1:])  # (B, S, K, n)
            halted = halted.view(-1, samples).mean(1)  # (B,)
        return answer, selection, halted, cells, registers, run.trace, log_q


def sample_categorical(values: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """`samples` one-hot draws from each distribution: values (B, X, n) -> (B, S, X, n) one-hot, log q (B, S)."""
    b, x, n = values.shape
    if x == 0:
        return values.new_zeros(b, samples, 0, n), values.new_zeros(b, samples)
    picks = torch.multinomial(values.detach().reshape(b * x, n), samples, replacement=True)  # (B·X, S)
    picks = picks.view(b, x, samples).transpose(1, 2)  # (B, S, X)
    chosen = values[:, None].expand(b, samples, x, n).gather(-1, picks[..., None])[..., 0]  # (B, S, X)
    return F.one_hot(picks, n).to(values), _log(chosen).sum(-1)


def _log(probabilities: Tensor) -> Tensor:
    return torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))


def sample_parse(parsed: ParsedQuestion, samples: int) -> tuple[tuple[Tensor, Tensor], Tensor]:
    """`samples` one-hot parses per example, drawn from the head's distributions (its policy), and their log q.

    Cells and registers are drawn independently, except under `tokens` parsing, where the draws are the factors:
    each element is emitted or not (Bernoulli on its gate) with a drawn value, and the emitted ones are compacted,
    so that a parse never holds one element twice. Returns cells (B·S, C, n), registers (B·S, Rin, n) (example-
    major) and log q (B, S).
    """
    b, c, n = parsed.cells.shape
    registers, log_q = sample_categorical(parsed.registers, samples)  # (B, S, Rin, n), (B, S)
    if parsed.gates is None:
        cells, log_q_cells = sample_categorical(parsed.cells, samples)  # (B, S, C, n)
        log_q = log_q + log_q_cells
    else:
        listed = parsed.gates > 0  # (B, E): padding and elements no token spells stay off
        gates = (EXPLORATION + (1 - 2 * EXPLORATION) * parsed.gates) * listed  # (B, E)
        emitted = torch.bernoulli(gates.detach()[:, None].expand(b, samples, -1))  # (B, S, E)
        log_q = log_q + (emitted * _log(gates[:, None]) + (1 - emitted) * _log(1 - gates[:, None])).sum(-1)
        values, log_q_values = sample_categorical(parsed.elements, samples)  # (B, S, E, n); a copied value: log q 0
        log_q = log_q + log_q_values
        cells = compact_elements(emitted.flatten(0, 1), values.flatten(0, 1), c)  # (B·S, C, n): exact on 0/1 gates
        cells = cells.view(b, samples, c, n)
    return (cells.flatten(0, 1), registers.flatten(0, 1)), log_q


def greedy_parse(parsed: ParsedQuestion) -> tuple[Tensor, Tensor]:
    """The most likely parse, one-hot: the arg-max of every distribution (of every factor under `tokens`)."""

    def arg_max(values: Tensor) -> Tensor:
        return F.one_hot(values.argmax(-1), values.shape[-1]).to(values)

    cells = parsed.cells
    if parsed.gates is not None:
        cells = compact_elements((parsed.gates > 0.5).to(cells), arg_max(parsed.elements), cells.shape[1])
    return arg_max(cells), arg_max(parsed.registers)


def straight_through_one_hot(probabilities: Tensor) -> Tensor:
    """The arg-max as an exact one-hot forward, the probabilities' gradient backward (straight-through).

    Δ is exact on one-hot inputs, while soft inputs drift: a counter split by a branch on a slightly
    uncertain value writes both paths into the same registers, and over hundreds of steps (insertion sort)
    the mixture compounds. A one-hot start keeps the run exact; the gradient is Δ's Jacobian at that point.
    """
    hard = F.one_hot(probabilities.argmax(-1), probabilities.shape[-1]).to(probabilities)
    return hard + (probabilities - probabilities.detach())  # exactly `hard`: the difference is exactly 0


def build_machine(config: LlamaDeltaConfig) -> DeltaMachine:
    """Δ as the config describes it, holding the compiled library.

    Built on the CPU even inside `from_pretrained`'s meta-device context: its buffers are exact functions
    of the config, cheap to compute and not all computable on meta tensors.
    """
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # `from_pretrained(dtype=...)` sets the default dtype while building
    try:
        with torch.device("cpu"):
            return DeltaMachine(
                n=config.delta_word_size,
                num_registers=config.delta_num_registers,
                memory_size=config.delta_memory_size,
                alu=config.delta_alu,
                max_steps=config.delta_max_steps,
                checkpoint_steps=config.delta_checkpoint_steps,
                programs=config.delta_programs,
            )
    finally:
        torch.set_default_dtype(default_dtype)


class LlamaDeltaPreTrainedModel(LlamaPreTrainedModel):
    config: LlamaDeltaConfig
    config_class = LlamaDeltaConfig
    # Δ runs in float32 whatever the backbone's dtype (from_pretrained(dtype=torch.bfloat16) included)
    _keep_in_fp32_modules_strict = ["delta_head"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, DeltaParser):
            if module.mode == "slots":
                std = self.config.initializer_range
                init.normal_(module.queries, std=std)
                init.normal_(module.values, std=std)
                init.zeros_(module.values_bias)
            if module.copies_tokens:  # non-persistent: loading leaves it uninitialised
                init.copy_(module.token_values, token_value_table(self.config).to(module.token_values.device))
        if isinstance(module, DeltaMachine):
            # Every Δ buffer (the library ROM, the control tables, the ALU's index tables) is a pure function
            # of the config: rebuild it wherever loading did not fill it (`copy_` leaves loaded values alone).
            fresh = dict(build_machine(self.config).named_buffers())
            for name, buffer in module.named_buffers():
                init.copy_(buffer, fresh[name].to(buffer.dtype))


class LlamaDeltaForAlgorithmicQA(LlamaDeltaPreTrainedModel):
    """A Llama backbone + `DeltaComputerHead`; `forward` returns `AlgorithmicQAOutput`."""

    # The loss is a mean over answer elements; never rescale it by accumulation steps (OFFLINE-STACK.md).
    accepts_loss_kwargs = False

    def __init__(self, config: LlamaDeltaConfig):
        config.validate_delta()  # from_pretrained sets keyword overrides on the config after its own validation
        super().__init__(config)
        self.model = LlamaModel(config)
        self.delta_head = DeltaComputerHead(config)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        # `output_loading_info=True` returns (model, loading_info)
        (loaded[0] if isinstance(loaded, tuple) else loaded).verify_library()
        return loaded

    def verify_library(self) -> None:
        """Refuse a library whose ROM buffer disagrees with (or cannot be rebuilt from) its assembly source."""
        config, machine = self.config, self.delta_head.machine
        rom = machine.rom_distribution()  # (P, n, F)
        for index, (name, source) in enumerate(config.delta_programs.items()):
            try:
                program = assemble(source, config.delta_word_size, config.delta_num_registers)
            except AssemblyError as error:
                raise ValueError(f"library program {name!r} does not assemble: {error}") from error
            expected = compile_programs([program]).to(rom.device, rom.dtype)[0]  # (n, F)
            if not torch.equal(rom[index], expected):
                lines = (rom[index] != expected).any(-1).nonzero().flatten().tolist()
                raise ValueError(
                    f"library program {name!r}: the ROM buffer disagrees with its assembly source on lines "
                    f"{lines[:10]}; the checkpoint's weights do not match its config.delta_programs"
                )

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        return_delta_trace: bool = False,
        **kwargs,
    ) -> AlgorithmicQAOutput:
        """labels: (B, K) answer elements in 0..n-1, -100 where an answer is shorter than K."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=True,
            use_cache=False,
            **kwargs,
        )
        hidden = outputs.hidden_states[self.config.delta_feature_layer]  # (B, T, H)
        answer, selection, halted, cells, registers, trace, log_q = self.delta_head(
            hidden, attention_mask, input_ids, return_trace=return_delta_trace
        )
        loss = sample_loss = None
        if log_q is not None:  # sampled parses: answer (B, S, K, n)
            if labels is not None:
                loss, sample_loss = score_function_loss(torch.log(answer + ANSWER_EPS), labels, log_q)
            answer = answer.mean(1)  # (B, K, n): the answer distribution over the samples
        answer_logits = torch.log(answer + ANSWER_EPS)  # (B, K, n)
        if labels is not None and loss is None:
            loss = F.nll_loss(answer_logits.flatten(0, 1), labels.flatten().to(answer_logits.device), ignore_index=-100)
        return AlgorithmicQAOutput(loss, answer_logits, selection, halted, cells, registers, trace, sample_loss)

    @torch.no_grad()
    def solve(self, questions: str | Sequence[str], tokenizer, batch_size: int = 32) -> list[str]:
        """Answer questions as text, batched: `["7", "abbdddefijll"]`.

        Refuses (never truncates) a question longer than the backbone's context, and, for `integers`
        answers, a question mentioning a number outside `0..n-1`: Δ cannot represent it.
        """
        questions = [questions] if isinstance(questions, str) else list(questions)
        n, context = self.config.delta_word_size, self.config.max_position_embeddings
        for index, question in enumerate(questions):
            length = len(tokenizer(question)["input_ids"])
            if length > context:
                raise ValueError(f"question {index} has {length} tokens; the model's context is {context}")
            if self.config.delta_answer_format == "integers":
                for number in re.findall(r"(?<![\w)])-?\d+", question):
                    if not 0 <= int(number) < n:
                        raise ValueError(f"question {index} mentions {number}, outside 0..{n - 1} (the word size n)")
        was_training = self.training
        self.eval()
        answers = []
        for start in range(0, len(questions), batch_size):
            batch = tokenizer(questions[start : start + batch_size], return_tensors="pt", padding=True)
            batch = {key: value.to(self.device) for key, value in batch.items()}
            values = self(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).answer_logits.argmax(-1)
            answers.extend(format_answer(row.tolist(), self.config.delta_answer_format) for row in values)
        self.train(was_training)
        return answers


def score_function_loss(answer_logits: Tensor, labels: Tensor, log_q: Tensor) -> tuple[Tensor, Tensor]:
    """The answer loss over sampled parses, with the score-function gradient for the parse.

    answer_logits (B, S, K, n) log-probabilities from Δ's exact runs, labels (B, K) (-100: padding), log_q (B, S)
    the samples' log-probabilities under the head. Each sample's loss is its mean answer NLL; its baseline is the
    mean loss of the other samples of the same example (leave-one-out). The value returned is the mean sample
    loss; its gradient adds (loss - baseline) * d log q for the parse to the exact gradient for the selection.
    Returns (loss, per-sample losses (B, S)).
    """
    b, s, k, _ = answer_logits.shape
    labels = labels.to(answer_logits.device)[:, None].expand(b, s, k)  # (B, S, K)
    valid = labels != -100
    picked = answer_logits.gather(-1, labels.clamp_min(0)[..., None])[..., 0]  # (B, S, K)
    sample_loss = -(picked * valid).sum(-1) / valid.sum(-1).clamp_min(1)  # (B, S)
    baseline = (sample_loss.sum(1, keepdim=True) - sample_loss) / (s - 1)  # (B, S) leave-one-out
    advantage = (sample_loss - baseline).detach()
    surrogate = advantage * (log_q - log_q.detach())  # value 0; gradient advantage * d log q
    return sample_loss.mean() + surrogate.mean(), sample_loss


def format_answer(values: list[int], answer_format: str) -> str:
    """Answer elements -> text, per `config.delta_answer_format`."""
    if answer_format in ("string", "digits"):
        end = values.index(0) if 0 in values else len(values)
        text = "".join(chr(v) for v in values[:end])
        # A numeral's characters, most significant first, with the carry digit in front: "0579" reads "579".
        return text.lstrip("0") or text[-1:] if answer_format == "digits" else text
    return " ".join(str(v) for v in values)


__all__ = [
    "AlgorithmicQAOutput",
    "DeltaComputerHead",
    "LlamaDeltaForAlgorithmicQA",
    "LlamaDeltaPreTrainedModel",
    "format_answer",
]
