"""`LlamaDeltaForAlgorithmicQA`: a Llama whose hidden states are parsed into the initial state of Δ.

Paper §3.4: the backbone runs, a head turns a hidden layer into one-hot classifications (Δ's initial
memory cells and registers, and a choice of library program), Δ runs every library program, and the
answer is read from the final state, mixed over programs by the selection. Trained on answers alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .compiler import compile_library
from .configuration_llama_delta import LlamaDeltaConfig
from .discrete import DiscreteMachine, one_hot_values
from .library import (
    CHARACTER_INPUTS,
    LIBRARY,
    REGISTERS_READ,
    RESULTS,
    SEQUENCES_READ,
    memory_needed,
    size_meaning,
    step_bound,
)
from .machine import DeltaMachine, DeltaState, DeltaTrace
from .parsing import (
    NUMERAL_CAP,
    DeltaParser,
    MixedParser,
    ParsedElements,
    ParsedMixed,
    ParsedQuestion,
    SlotParser,
    build_parser,
    log_probability,
    token_value_table,
)
from .pipeline_llama_delta import custom_pipelines

# Floor added to answer probabilities before the log: keeps the loss finite and its gradient bounded
# (<= 1/eps) where Δ gives the right answer almost no mass.
ANSWER_EPS = 1e-6
# A number right after these words is the question's modulus (`check_question` lets n itself through there).
# Not after a number: "5 mod 128" asks for an operation on 128.
MODULUS = re.compile(r"(?<!\d)(?<!\d )\bmod(?:ulo|ulus)?\W{0,3}$", re.IGNORECASE)
# The initial logit of a `mixed` parse's end-of-sequence gates (P = 0.047).
END_GATE_BIAS = -3.0


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
    answer_probability: (B,) (evaluation) the arg-max answer's probability: for an exact run on the integer
        interpreter, the parse's probability under the head times the chosen program's (the run adds no
        uncertainty); otherwise the product of the answer elements' arg-max probabilities.
    refusals: (evaluation) per example, why its answer cannot be trusted (None: no reason found): an input longer
        than Δ's memory or the parse holds, a token inside the input that spells no value, a run that did not halt
        within its step budget. `solve` raises them (or returns them with `refuse=False`).
    """

    loss: Tensor | None = None
    answer_logits: Tensor | None = None
    selection: Tensor | None = None
    halt_probability: Tensor | None = None
    parsed_memory: Tensor | None = None
    parsed_registers: Tensor | None = None
    delta_trace: DeltaTrace | None = None
    sample_loss: Tensor | None = None
    answer_probability: Tensor | None = None
    refusals: list | None = None


class DeltaComputerHead(nn.Module):
    """Parser + Δ + answer read-out. The library ROM is a persistent, frozen buffer of the machine (trainable logits
    with `delta_trainable_programs`)."""

    def __init__(self, config: LlamaDeltaConfig):
        super().__init__()
        self.config = config
        self.parser = build_parser(config)
        self.machine = build_machine(config)
        # Parses that pick one program (`delta_parse_samples`) and are exactly one-hot run on the integer interpreter
        # (`discrete.py`): no gradient flows through those runs, and it computes the same final state. False runs
        # them on the soft machine (the reference path, and the benchmarks' baseline).
        self.discrete_runs = True
        self._discrete: dict[int, DiscreteMachine] = {}  # memory size -> the integer interpreter
        self._discrete_programs: list | None = None  # the machine's program list `_discrete` was built from

    def forward(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        input_ids: Tensor | None = None,
        return_trace: bool = False,
        grow_answer: bool = False,
    ):
        # Δ is exact only in full precision: no bf16/fp16 autocast inside the head.
        with torch.autocast(hidden.device.type, enabled=False):
            return self._run(hidden, attention_mask, input_ids, return_trace, grow_answer)

    def sizes_per_question(self, return_trace: bool) -> bool:
        """Whether this run sizes Δ from its parse (`delta_size_per_question`): outside training, without gradients,
        where the arg-max parse and program run on the integer interpreter (which takes any memory size <= n)."""
        config = self.config
        return (
            config.delta_size_per_question
            and bool(config.delta_parse_samples)
            and not self.training
            and self.discrete_runs
            and not return_trace
            and not torch.is_grad_enabled()
        )

    def _run(
        self,
        hidden: Tensor,
        attention_mask: Tensor | None,
        input_ids: Tensor | None,
        return_trace: bool,
        grow_answer: bool,
    ):
        config = self.config
        resize = self.sizes_per_question(return_trace)
        if resize and self.parser.resizable:
            parsed = self.parser(hidden, attention_mask, input_ids, num_cells=self.parser.capacity(hidden.shape[1]))
        else:
            parsed = self.parser(hidden, attention_mask, input_ids)
        cells, registers, selection = parsed.cells, parsed.registers, parsed.selection
        inputs, log_q = (cells, registers), None
        program = None  # (B[·S[·P]],) the one program each run executes, where the parse picks it
        samples, programs = config.delta_parse_samples, selection.shape[1]
        enumerate_programs = samples and self.training and config.delta_program_choice == "enumerate"
        if config.delta_straight_through:
            inputs = tuple(straight_through_one_hot(values) for values in inputs)
        elif enumerate_programs:  # every sampled parse under every program: (B·S·P,) runs, program-minor
            inputs, log_q = self.parser.sample(parsed, samples)  # (B·S, ., n) one-hot each, (B, S)
            inputs = tuple(values.repeat_interleave(programs, 0) for values in inputs)  # (B·S·P, ., n)
            program = torch.arange(programs, device=selection.device).repeat(inputs[0].shape[0] // programs)
        elif samples and self.training:
            inputs, log_q = self.parser.sample(parsed, samples)  # (B·S, ., n) one-hot each, (B, S)
            program, log_q_program = sample_program(selection, samples)  # (B·S,), (B, S)
            log_q = log_q + log_q_program
        elif samples:
            inputs, program = self.parser.greedy(parsed), selection.argmax(-1)  # (B,)
        report = None if self.training else RunReport.of_parse(parsed, config.delta_word_size)
        if report is not None and isinstance(parsed, ParsedMixed):
            report.check_program_inputs(parsed, selection.argmax(-1), self.library_names, config.delta_word_size)
        final, trace, program_states = None, None, None
        answer_length = config.delta_answer_length
        if program is not None:
            size = RunSize.fixed(config)  # the soft machine's, and the discrete run's unless it resizes
            if resize:
                size = RunSize.of_parse(config, self.library_names, inputs, program, report)
                if grow_answer:
                    answer_length = size.answer_length
            if report is not None:  # the same refusals on either path
                report.check_size(size, config, self.library_names, inputs, program, resized=resize)
            if self.discrete_runs and not return_trace:
                final = self._run_discrete(inputs, program, memory_size=size.memory, max_steps=size.steps)
        if final is None:
            if report is not None and cells.shape[1] > self.machine.memory_size:  # a parse sized for the discrete run
                for example, count in enumerate(report.elements):
                    if count >= self.machine.memory_size:
                        report.refuse(
                            example,
                            f"the input has {count} elements; delta_memory_size holds {self.machine.memory_size} cells",
                        )
            run_selection = selection if program is None else F.one_hot(program, programs).to(selection)
            state = self.machine.start_state(
                memory=inputs[0][:, : self.machine.memory_size] if cells.shape[1] else None,
                registers=inputs[1] if registers.shape[1] else None,
                batch_size=run_selection.shape[0],
            )
            run = self.machine(state, selection=run_selection, return_trace=return_trace)
            final, trace, program_states = run.state, run.trace, run.program_states
        elif report is not None:
            report.exact = True
        in_memory = None  # (B[·S[·P]],) whether each run's answer is in memory (delta_answer_source = "program")
        if config.delta_answer_source == "program":
            places = self.answers_in_memory.to(selection.device)  # (P,)
            if program is None:  # a mixed selection: each program's answer where it puts it, mixed by the selection
                per_program = program_answers(program_states, places.expand(len(selection), -1), answer_length)
                answer = torch.einsum("bp,bpkn->bkn", selection, per_program)  # (B, K, n)
                in_memory = places[selection.argmax(-1)]
            else:
                in_memory = places[program]
                answer = program_answers(final, in_memory, answer_length)  # (B[·S[·P]], K, n)
            memory = final.memory
        else:
            memory = final.memory if config.delta_answer_source == "memory" else None
            source = final.registers if memory is None else memory
            answer = source[:, :answer_length]  # (B[·S], K, n) probabilities
        halted = final.halted
        if enumerate_programs:
            answer = answer.view(-1, samples, programs, *answer.shape[1:])  # (B, S, P, K, n)
            halted = torch.einsum("bsp,bp->b", halted.view(-1, samples, programs), selection.detach()) / samples
        elif log_q is not None:
            answer = answer.view(-1, samples, *answer.shape[1:])  # (B, S, K, n)
            halted = halted.view(-1, samples).mean(1)  # (B,)
        if report is not None:
            report.check_halted(halted)
            if memory is not None and config.delta_answer_format != "integers":
                report.check_terminated(memory, answer_length, in_memory)
        return answer, selection, halted, cells, registers, trace, log_q, report

    @property
    def library_names(self) -> list[str | None]:
        """The library program each selection index holds (matched by source), None for a source not in Λ."""
        by_source = {source: name for name, source in LIBRARY.items()}
        return [by_source.get(source) for source in self.config.delta_programs.values()]

    @property
    def answers_in_memory(self) -> Tensor:
        """(P,) bool: whether each selection index's program puts its result in memory (`library.RESULTS`)."""
        return torch.tensor([RESULTS[name][0] == "memory" for name in self.library_names])

    def discrete_machine(self, memory_size: int | None = None) -> DiscreteMachine:
        """The integer interpreter of the machine's programs with `memory_size` cells (default the machine's),
        built once per size (again only if the programs change)."""
        machine = self.machine
        memory_size = machine.memory_size if memory_size is None else memory_size
        if self._discrete_programs is not machine.programs:
            self._discrete, self._discrete_programs = {}, machine.programs
        if memory_size not in self._discrete:
            self._discrete[memory_size] = DiscreteMachine(machine.programs, memory_size)
        return self._discrete[memory_size]

    def _run_discrete(
        self,
        inputs: tuple[Tensor, Tensor],
        program: Tensor,
        memory_size: int | None = None,
        max_steps: int | None = None,
    ) -> DeltaState | None:
        """Δ's final state (one-hot, batch (B,)) for exactly one-hot parses `inputs` ((B, C, n), (B, Rin, n)) and each
        example's program (B,), run on the integer interpreter with `memory_size` cells (default the machine's; the
        parse's cells beyond it must be empty) for at most `max_steps` steps (default the machine's); None where a
        parse is not exactly one-hot or a gradient flows through it (the soft machine then runs it)."""
        values = [one_hot_values(t) if t.shape[1] else None for t in inputs]  # (B, C), (B, Rin) or None
        if any(v is None and t.shape[1] for v, t in zip(values, inputs, strict=True)):
            return None
        discrete = self.discrete_machine(memory_size)
        memory = values[0]
        if memory is not None and memory.shape[1] > discrete.memory_size:
            # RunReport refuses a parse that fills cells beyond the memory; what is cut here holds only 0s
            memory = memory[:, : discrete.memory_size]
        start = discrete.start_state(program, memory=memory, registers=values[1])
        final, _ = discrete.run(start, max_steps=self.machine.max_steps if max_steps is None else max_steps)
        return final.one_hot(discrete.n, dtype=inputs[0].dtype)


# Most Δ steps one question may be given when Δ is sized per question (the config's own limit on delta_max_steps).
MAX_RUN_STEPS = 1_000_000


@dataclass
class RunSize:
    """Δ's size for one batch: memory cells, step budget, answer elements (memory answers)."""

    memory: int
    steps: int
    answer_length: int

    @classmethod
    def fixed(cls, config: LlamaDeltaConfig) -> RunSize:
        return cls(config.delta_memory_size, config.delta_max_steps, config.delta_answer_length)

    @classmethod
    def of_parse(
        cls, config: LlamaDeltaConfig, names: list[str | None], inputs: tuple[Tensor, Tensor], program: Tensor, report
    ) -> RunSize:
        """The size every example of the batch needs (the largest), never below the config's training-time sizes:
        memory for the parsed elements and their terminator and `memory_needed` of the chosen program, steps from
        its `step_bound` (a program outside Λ keeps the config's budget), capped at n cells and `MAX_RUN_STEPS`
        (`RunReport.check_size` refuses what the cap cuts)."""
        n = config.delta_word_size
        memory, steps = config.delta_memory_size, config.delta_max_steps
        for example, index in enumerate(program.tolist()):
            name, size = names[index], report.program_size(example, names[index], inputs)
            memory = max(memory, report.elements[example] + 1)
            if name is not None:
                memory = max(memory, memory_needed(name, size))
                steps = max(steps, step_bound(name, size))
        memory, steps = min(memory, n), min(steps, MAX_RUN_STEPS)
        answer_length = config.delta_answer_length
        if config.delta_answer_source == "program" or (
            config.delta_answer_source == "memory" and config.delta_answer_format != "integers"
        ):
            # a NUL-terminated answer (sort, reverse: as long as the input; add_digits: L + 1 of its 2L + 1 elements)
            # read up to its terminator
            answer_length = max(answer_length, min(memory, max(report.elements, default=0) + 1))
        return cls(memory, steps, answer_length)


@dataclass
class RunReport:
    """What a batch's run leaves to check, per example (evaluation only): the elements the parse emitted, the
    parse's probability, and the reasons Δ's answer cannot be trusted (`refusals`, None where none).

    parse_probability (B,): the arg-max parse's probability under the head (product over its factors: each gate's
    probability of its greedy choice, each value's and register's arg-max probability); exact marks an answer from
    the integer interpreter, which adds no uncertainty to that parse (`answer_probability` is then the parse's
    times the chosen program's). register_probability (B, Rin) and sequence_probability (B,) are its factors (the
    registers' arg-max probabilities; the gates' and cells'), from which a `mixed` parse's probability is taken
    over what the chosen program reads only (`check_program_inputs`).
    """

    elements: list[int]
    capacity: int
    parse_probability: Tensor
    refusals: list[str | None]
    exact: bool = False
    register_probability: Tensor | None = None
    sequence_probability: Tensor | None = None

    @classmethod
    def of_parse(cls, parsed: ParsedQuestion, n: int) -> RunReport:
        cells = parsed.cells
        registers = parsed.registers.amax(-1)  # (B, Rin)
        if isinstance(parsed, ParsedElements):
            gates = parsed.gates  # (B, E)
            emitted = gates > 0.5
            listed = gates > 0  # elements no token spells take no part
            chosen = torch.where(emitted, gates, 1 - gates).where(listed, 1.0)  # (B, E)
            values = parsed.elements.amax(-1).where(emitted, 1.0)  # (B, E)
            sequence = chosen.prod(-1) * values.prod(-1)  # (B,)
            elements = emitted.sum(-1).tolist()
        else:
            sequence = cells.amax(-1).prod(-1) if cells.shape[1] else cells.new_ones(len(cells))
            elements = [cells.shape[1]] * cells.shape[0]  # fixed cells: all of them are the input
        refusals: list[str | None] = [None] * cells.shape[0]
        report = cls(
            elements,
            cells.shape[1],
            registers.prod(-1) * sequence,
            refusals,
            register_probability=registers,
            sequence_probability=sequence,
        )
        for example, count in enumerate(elements):
            if count > report.capacity:
                bound = "n, Δ's memory bound" if report.capacity == n else "delta_input_cells"
                report.refuse(
                    example, f"the input has {count} elements; the parse holds {report.capacity} cells ({bound})"
                )
        if isinstance(parsed, ParsedElements) and parsed.unspelled is not None:
            for example, position in parsed.unspelled.nonzero().tolist():
                report.refuse(
                    example,
                    f"token {position} lies inside the input but spells no value in 0..{n - 1} "
                    "(a character Δ cannot represent)",
                )
        return report

    def check_program_inputs(self, parsed: ParsedMixed, program: Tensor, names: list[str | None], n: int) -> None:
        """The refusals of a `mixed` parse, which depend on the program each example runs (B,) (its arg-max):
        a register the program reads (`library.REGISTERS_READ`; all of them for a program outside Λ) whose
        arg-max attention lies on a numeral >= n; a token that spells no value, its gate open, inside a sequence;
        a 0 inside the input (a token's terminator followed by more elements) of a program reading one sequence,
        and for a program reading two (`library.SEQUENCES_READ`) anything but two sequences, or (add_digits, L
        digits each) two of different lengths."""
        if parsed.numerals is None:  # values classified, not copied: nothing copied to check
            return
        rows = parsed.numerals.shape[0]
        attended = parsed.register_attention.argmax(-1)  # (B, Rin) the token each register slot reads
        numerals = parsed.numerals.gather(1, attended)  # (B, Rin)
        emitted = (parsed.gates > 0.5).tolist()  # (B, E)
        terminators = parsed.terminators[0].tolist()  # (E,) the same layout for every example
        per_token = len(terminators) // parsed.unspelled_open.shape[1]
        for example, index in zip(range(rows), program.tolist(), strict=True):
            name = names[index]
            reads = REGISTERS_READ[name] if name is not None else numerals.shape[1]
            sequences = SEQUENCES_READ[name] if name is not None else 1
            # The answer's probability counts what the program reads: its registers, and the memory if any.
            probability = self.register_probability[example, :reads].prod()
            self.parse_probability[example] = probability * (self.sequence_probability[example] if sequences else 1)
            for slot in range(min(reads, numerals.shape[1])):
                value, token = int(numerals[example, slot]), int(attended[example, slot])
                character = int(parsed.characters[example, token])
                wants_character = slot in CHARACTER_INPUTS.get(name, ())
                if value < 0 and character < 0:
                    self.refuse(example, f"no token of the question writes a value for register r{slot} of {name}")
                elif value < 0 and not wants_character:
                    self.refuse(
                        example,
                        f"register r{slot} of {name} reads the character {chr(character)!r} (token {token}), not a "
                        "number",
                    )
                elif value >= 0 and wants_character:
                    self.refuse(
                        example,
                        f"register r{slot} of {name} reads the numeral {value} (token {token}), not a character",
                    )
                elif value >= n:
                    shown = f">= {value}" if value >= NUMERAL_CAP else str(value)
                    self.refuse(
                        example,
                        f"register r{slot} of {name or 'its program'} reads the numeral {shown} (token "
                        f"{int(attended[example, slot])}), outside 0..{n - 1} (the word size n)",
                    )
            if not sequences:  # the program reads no memory: what the gates emit does not matter
                continue
            # The emitted elements in order, (token, is a terminator), trailing terminators dropped.
            stream = [(e // per_token, terminators[e]) for e in range(len(terminators)) if emitted[example][e]]
            while stream and stream[-1][1]:
                stream.pop()
            separators = [position for position, (_, ends) in enumerate(stream) if ends]
            for token in parsed.unspelled_open[example].nonzero().flatten().tolist():
                before = [ends for source, ends in stream if source < token]
                after = [ends for source, ends in stream if source > token]
                if before and after and not before[-1] and not after[0]:  # inside a sequence, not between two
                    self.refuse(
                        example,
                        f"token {token} lies inside the input but spells no value in 0..{n - 1} "
                        "(a character Δ cannot represent)",
                    )
            if sequences == 1 and separators:
                self.refuse(
                    example,
                    f"token {stream[separators[0]][0]} ends a sequence inside the input (a 0 in it); "
                    f"{name or 'its program'} reads one sequence",
                )
            elif sequences == 2 and len(separators) != 1:
                self.refuse(
                    example,
                    f"{name} reads two zero-terminated sequences; the parse has {len(separators) + bool(stream)}",
                )
            elif sequences == 2 and name == "add_digits" and separators[0] != len(stream) - separators[0] - 1:
                self.refuse(
                    example,
                    f"add_digits adds numerals of one length; the parse gives {separators[0]} and "
                    f"{len(stream) - separators[0] - 1} digits",
                )

    def refuse(self, example: int, reason: str) -> None:
        if self.refusals[example] is None:  # the first cause found is the one reported
            self.refusals[example] = reason

    def program_size(self, example: int, name: str | None, inputs: tuple[Tensor, Tensor]) -> int:
        """The `size` (`library.size_meaning`) of example's input for program `name`: the elements before the
        first 0 (a string's length, the first operand's digits), the depth in r2, or 0."""
        if name is None or size_meaning(name) == "unused":
            return 0
        if size_meaning(name) == "depth":
            registers = inputs[1][example].argmax(-1)  # (Rin,)
            return int(registers[2]) if registers.shape[0] > 2 else 0
        cells = inputs[0][example].argmax(-1).tolist()[: self.elements[example]]  # (C,) -> the emitted elements
        return cells.index(0) if 0 in cells else len(cells)

    def check_size(
        self, size: RunSize, config, names: list[str | None], inputs, program: Tensor, resized: bool
    ) -> None:
        """Refuse an example whose input Δ cannot hold at `size` (sized per question if `resized`, else the config's):
        its elements and terminator, or what its program needs (`memory_needed`), beyond the memory; a step bound
        beyond the budget."""
        n = config.delta_word_size
        for example, index in enumerate(program.tolist()):
            name = names[index]
            program_size = self.program_size(example, name, inputs)
            needed = memory_needed(name, program_size) if name is not None else self.elements[example]
            limit = f"Δ's memory (n = {n})" if resized else "delta_memory_size"
            if needed > size.memory:
                self.refuse(
                    example,
                    f"the input needs {needed} memory cells for {name or 'its program'} "
                    f"({self.elements[example]} elements); {limit} holds {size.memory}",
                )
            elif name is not None and step_bound(name, program_size) > size.steps:
                self.refuse(
                    example,
                    f"{name} on this input may run {step_bound(name, program_size)} steps; the budget is {size.steps}",
                )

    def check_terminated(self, memory: Tensor, answer_length: int, rows: Tensor | None = None) -> None:
        """Refuse a NUL-terminated answer cut short: no 0 among the `answer_length` cells read of memory (B, M, n),
        and the next cell is not 0 either; rows (B,) bool: the examples whose answer is in memory (default all)."""
        values = memory.argmax(-1)  # (B, M)
        if values.shape[1] <= answer_length:
            return
        cut = (values[:, :answer_length] != 0).all(-1) & (values[:, answer_length] != 0)  # (B,)
        if rows is not None:
            cut = cut & rows
        for example in cut.nonzero().flatten().tolist():
            self.refuse(example, f"the answer is longer than the {answer_length} elements read (delta_answer_length)")

    def check_halted(self, halted: Tensor) -> None:
        """Refuse a run that did not halt (probability of halting below 1/2) within its step budget."""
        for example, probability in enumerate(halted.tolist()):
            if probability < 0.5:
                self.refuse(example, f"the run did not halt within its step budget (P(halted) = {probability:.3g})")


def sample_program(selection: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """One library program per sampled parse, drawn from the selection (B, P) as the parse is: program (B·S,)
    (example-major) and its log-probability (B, S), which joins the parse's log q (score-function gradient)."""
    if selection.shape[1] == 1:  # one program: nothing to draw (and the parse draws' random stream is unchanged)
        picks = selection.new_zeros(selection.shape[0], samples, dtype=torch.long)  # (B, S)
    else:
        picks = torch.multinomial(selection.detach(), samples, replacement=True)  # (B, S)
    return picks.flatten(), log_probability(selection.gather(1, picks))


def program_answers(state: DeltaState, in_memory: Tensor, length: int) -> Tensor:
    """Each run's answer read where its program puts it (`delta_answer_source = "program"`): from memory, its first
    `length` cells; from the registers, ONE element, r0, followed by `length - 1` positions holding 0 (the labels
    mask them with -100). state: memory (*batch, M, n), registers (*batch, R, n); in_memory (*batch,) bool ->
    (*batch, K, n)."""
    registers = state.registers[..., :1, :]  # (*batch, 1, n)
    zero = F.one_hot(torch.zeros((), dtype=torch.long, device=registers.device), registers.shape[-1]).to(registers)
    padding = zero.expand(*registers.shape[:-2], length - 1, registers.shape[-1])  # (*batch, K - 1, n)
    from_registers = torch.cat([registers, padding], dim=-2)  # (*batch, K, n)
    return torch.where(in_memory[..., None, None], state.memory[..., :length, :], from_registers)


def straight_through_one_hot(probabilities: Tensor) -> Tensor:
    """The arg-max as an exact one-hot forward, the probabilities' gradient backward (straight-through).

    Δ is exact on one-hot inputs, while soft inputs drift: a counter split by a branch on a slightly
    uncertain value writes both paths into the same registers, and over hundreds of steps (insertion sort)
    the mixture compounds. A one-hot start keeps the run exact; the gradient is Δ's Jacobian at that point.
    """
    hard = F.one_hot(probabilities.argmax(-1), probabilities.shape[-1]).to(probabilities)
    return hard + (probabilities - probabilities.detach())  # exactly `hard`: the difference is exactly 0


def build_machine(config: LlamaDeltaConfig) -> DeltaMachine:
    """Δ as the config describes it, holding the compiled library (`compile_library`: frozen one-hot ROM, or
    trainable ROM logits with `delta_trainable_programs`).

    Built on the CPU even inside `from_pretrained`'s meta-device context: its buffers are exact functions
    of the config, cheap to compute and not all computable on meta tensors.
    """
    library = compile_library(config.delta_programs, config.delta_word_size, config.delta_num_registers)
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
                programs=library,
                trainable_programs=config.delta_trainable_programs,
                sharpness=config.delta_program_sharpness,
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
            if isinstance(module, SlotParser | MixedParser):
                std = self.config.initializer_range
                init.normal_(module.queries, std=std)
                if hasattr(module, "values"):  # a `mixed` parse copying spelled tokens classifies no register
                    init.normal_(module.values, std=std)
                    init.zeros_(module.values_bias)
            if isinstance(module, MixedParser) and module.copies_tokens:
                # A question holds at most two sequences among its tokens: the end-of-sequence gates start closed
                # (P = sigmoid(END_GATE_BIAS)), so that early sampled parses do not cut strings at random.
                bias = torch.zeros_like(module.gates.bias)
                bias[-1] = END_GATE_BIAS
                init.copy_(module.gates.bias, bias)
            if module.copies_tokens:  # non-persistent: loading leaves it uninitialised
                init.copy_(module.token_values, token_value_table(self.config).to(module.token_values.device))
        if isinstance(module, DeltaMachine):
            # Every Δ buffer (the library ROM, the control tables, the ALU's index tables) and the initial
            # trainable ROM logits are pure functions of the config: rebuild them wherever loading did not fill
            # them (`copy_` leaves loaded values alone).
            fresh = build_machine(self.config)
            fresh_tensors = {**dict(fresh.named_buffers()), **dict(fresh.named_parameters())}
            for name, tensor in [*module.named_buffers(), *module.named_parameters()]:
                init.copy_(tensor, fresh_tensors[name].to(tensor.dtype))


class LlamaDeltaForAlgorithmicQA(LlamaDeltaPreTrainedModel):
    """A Llama backbone + `DeltaComputerHead`; `forward` returns `AlgorithmicQAOutput`."""

    # The loss is a mean over answer elements; the Trainer must not rescale it by accumulation steps (it does for a
    # forward that takes **kwargs unless this is False).
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
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.verify_library()
        model.verify_finite()
        return loaded

    def verify_finite(self) -> None:
        """Refuse NaN / inf weights or buffers (one NaN in the parser silently turns every answer into '')."""
        for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all():
                bad = int((~torch.isfinite(tensor)).sum())
                raise ValueError(f"checkpoint tensor {name!r} holds {bad} non-finite value(s) (NaN or inf)")

    def verify_library(self) -> None:
        """Refuse a library whose ROM disagrees with (or cannot be rebuilt from) its assembly source.

        A frozen ROM must equal its compiled sources exactly. A trainable one (`delta_trainable_programs`) has
        learned away from them by design: only its shape is checked (`delta_head.machine.decompile()` gives what
        it runs).
        """
        config = self.config
        library = compile_library(config.delta_programs, config.delta_word_size, config.delta_num_registers)
        rom = self.delta_head.machine.rom_distribution()  # (P, n, F)
        if rom.shape != library.rom.shape:
            raise ValueError(
                f"the ROM has shape {tuple(rom.shape)}; config.delta_programs compiles to {tuple(library.rom.shape)}"
            )
        if config.delta_trainable_programs:
            return
        for index, name in enumerate(library.names):
            expected = library.rom[index].to(rom.device, rom.dtype)  # (n, F)
            if not torch.equal(rom[index], expected):
                lines = (rom[index] != expected).any(-1).nonzero().flatten().tolist()
                raise ValueError(
                    f"library program {name!r}: the ROM buffer disagrees with its assembly source on lines "
                    f"{lines[:10]}; the checkpoint's weights do not match its config.delta_programs"
                )

    def resize_delta(self, *, max_steps: int) -> None:
        """Run Δ for at most `max_steps` steps per forward pass from now on: in the config (what `save_pretrained`
        writes) and in every Δ of the model (a PEFT wrapper holds the original head and its trained copy).

        A run stops early only once every example has halted exactly, which soft parses rarely reach, so the limit
        is what a batch costs: size it to the data being run (train_sft.py uses each split's step bound). A
        checkpoint block (`delta_checkpoint_steps`) longer than the new limit shrinks to it.
        """
        config = self.config
        before = config.delta_max_steps, config.delta_checkpoint_steps
        config.delta_max_steps = max_steps
        if isinstance(max_steps, int) and not isinstance(max_steps, bool):
            config.delta_checkpoint_steps = min(config.delta_checkpoint_steps, max_steps)
        try:
            config.validate_delta()
        except ValueError:
            config.delta_max_steps, config.delta_checkpoint_steps = before
            raise
        for machine in (module for module in self.modules() if isinstance(module, DeltaMachine)):
            machine.max_steps, machine.checkpoint_steps = max_steps, config.delta_checkpoint_steps

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
        answer, selection, halted, cells, registers, trace, log_q, report = self.delta_head(
            hidden, attention_mask, input_ids, return_trace=return_delta_trace, grow_answer=labels is None
        )
        loss = sample_loss = None
        if log_q is not None:  # sampled parses: answer (B, S, K, n), or (B, S, P, K, n) with every program
            weights = selection if answer.dim() == 5 else None
            if labels is not None:
                loss, sample_loss = score_function_loss(torch.log(answer + ANSWER_EPS), labels, log_q, weights)
            if weights is not None:
                answer = torch.einsum("bp,bspkn->bskn", selection, answer)  # (B, S, K, n)
            answer = answer.mean(1)  # (B, K, n): the answer distribution over the samples
        answer_logits = torch.log(answer + ANSWER_EPS)  # (B, K, n)
        if labels is not None and loss is None:
            loss = F.nll_loss(answer_logits.flatten(0, 1), labels.flatten().to(answer_logits.device), ignore_index=-100)
        answer_probability = refusals = None
        if report is not None:
            refusals = report.refusals
            if report.exact:
                answer_probability = report.parse_probability * selection.amax(-1)
            else:
                answer_probability = answer.amax(-1).prod(-1)  # (B,)
            threshold = self.config.delta_min_answer_probability
            for example in (answer_probability < threshold).nonzero().flatten().tolist():
                report.refuse(
                    example,
                    f"the answer's probability {float(answer_probability[example]):.3g} is below "
                    f"delta_min_answer_probability = {threshold} (the parse or the program choice is uncertain)",
                )
        return AlgorithmicQAOutput(
            loss, answer_logits, selection, halted, cells, registers, trace, sample_loss, answer_probability, refusals
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, declaring the `algorithmic-qa` pipeline in `config.custom_pipelines`:
        its file ships with the remote code, so `pipeline(model=folder, trust_remote_code=True)` works."""
        self.config.custom_pipelines = custom_pipelines()
        super().save_pretrained(save_directory, *args, **kwargs)

    def check_question(self, question: str, num_tokens: int, index: int | None = None) -> None:
        """Refuse (never truncate) a question longer than the backbone's context, and, for `integers` (or
        `program`) answers outside the `mixed` parse, a question mentioning a number outside `0..n-1`: Δ cannot
        represent it."""
        n, context = self.config.delta_word_size, self.config.max_position_embeddings
        name = "the question" if index is None else f"question {index}"
        if not question.strip():
            raise ValueError(f"{name} is empty: there is nothing to parse")
        if num_tokens > context:
            raise ValueError(f"{name} has {num_tokens} tokens; the model's context is {context}")
        # A `mixed` parse checks the numerals its chosen program reads itself (`RunReport.check_program_inputs`), so
        # that add_digits' long numerals, which are characters in memory, are not refused here.
        if self.config.delta_answer_format in ("integers", "program") and self.config.delta_parse_mode != "mixed":
            for match in re.finditer(r"(?<![\w)])-?\d+", question):
                number = int(match.group())
                if number == n and MODULUS.search(question[: match.start()]):
                    continue  # "(mod 128)": the question states Δ's own modulus, no input
                if not 0 <= number < n:
                    raise ValueError(f"{name} mentions {number}, outside 0..{n - 1} (the word size n)")

    @torch.no_grad()
    def answer_values(self, input_ids: Tensor, attention_mask: Tensor) -> AnswerBatch:
        """(B, T) tokenized questions -> the most likely answer elements (B, K) with their probabilities and
        refusals (`AnswerBatch`), in eval mode (the arg-max parse; Δ sized per question where the config says)."""
        was_training = self.training
        self.eval()
        out = self(input_ids=input_ids, attention_mask=attention_mask)
        self.train(was_training)
        return AnswerBatch(
            out.answer_logits.argmax(-1),
            out.answer_probability,
            out.halt_probability,
            list(out.refusals),
            out.selection.argmax(-1),
        )

    def answer_text(self, values: list[int], program: int) -> str:
        """One answer's elements as text, in the config's format, or (`delta_answer_format = "program"`) in the
        format of the program at selection index `program` (a register result is its first element)."""
        answer_format = self.config.delta_answer_format
        if answer_format == "program":
            answer_format = RESULTS[self.delta_head.library_names[program]][1]
            values = values[:1] if answer_format == "integers" else values
        return format_answer(values, answer_format)

    def solve(
        self,
        questions: str | Sequence[str],
        tokenizer,
        batch_size: int = 32,
        return_details: bool = False,
        refuse: bool = True,
    ) -> list:
        """Answer questions as text, batched: `["7", "abbdddefijll"]`. Never a silent wrong answer: a question Δ
        cannot answer (`check_question`, and what the run reports in `AlgorithmicQAOutput.refusals`) raises a
        ValueError naming the question and the cause; with `refuse=False` it is answered None instead, and its
        cause is in the details. `return_details=True` returns per question a dict: `answer` (text, None where
        refused), `probability` (`AlgorithmicQAOutput.answer_probability`), `halt_probability`, `refusal` (the
        cause, or None), `program` (the chosen program's name; None where `check_question` refused). The
        `algorithmic-qa` pipeline (`pipeline_llama_delta.py`) answers the same way."""
        questions = [questions] if isinstance(questions, str) else list(questions)
        details = []
        checked = []  # the indices of the questions that reach the model
        for index, question in enumerate(questions):
            try:
                self.check_question(question, len(tokenizer(question)["input_ids"]), index)
            except ValueError as error:
                if refuse:
                    raise
                details.append(answer_details(None, None, None, str(error)))
            else:
                details.append(None)
                checked.append(index)
        for start in range(0, len(checked), batch_size):
            indices = checked[start : start + batch_size]
            batch = tokenizer([questions[i] for i in indices], return_tensors="pt", padding=True)
            out = self.answer_values(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            for row, index in enumerate(indices):
                refusal = out.refusals[row]
                if refusal is not None:
                    refusal = f"question {index} ({questions[index]!r}): {refusal}"
                    if refuse:
                        raise ValueError(f"refused {refusal}")
                program = int(out.program[row])
                text = self.answer_text(out.values[row].tolist(), program)
                details[index] = answer_details(
                    None if refusal else text,
                    float(out.probability[row]),
                    float(out.halt_probability[row]),
                    refusal,
                    list(self.config.delta_programs)[program],
                )
        return details if return_details else [detail["answer"] for detail in details]


@dataclass
class AnswerBatch:
    """A batch's arg-max answers: values (B, K), probability (B,) (`AlgorithmicQAOutput.answer_probability`),
    halt_probability (B,), refusals (per question, None where Δ's answer stands), program (B,) the selection index
    of the program chosen (the arg-max of the selection)."""

    values: Tensor
    probability: Tensor
    halt_probability: Tensor
    refusals: list[str | None]
    program: Tensor


def answer_details(
    answer: str | None, probability, halt_probability, refusal: str | None, program: str | None = None
) -> dict:
    """One question's entry of `solve(..., return_details=True)`; `program`: the chosen program's name (its key in
    `config.delta_programs`), None where the question was refused before the model ran."""
    return {
        "answer": answer,
        "probability": probability,
        "halt_probability": halt_probability,
        "refusal": refusal,
        "program": program,
    }


def score_function_loss(
    answer_logits: Tensor, labels: Tensor, log_q: Tensor, selection: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The answer loss over sampled parses, with the score-function gradient for the parse.

    answer_logits (B, S, K, n) log-probabilities from Δ's exact runs, labels (B, K) (-100: padding), log_q (B, S)
    the samples' log-probabilities under the head. Each sample's loss is its mean answer NLL; its baseline is the
    mean loss of the other samples of the same example (leave-one-out). The value returned is the mean sample
    loss; its gradient adds (loss - baseline) * d log q for the parse (one program per sample: the selection learns
    through log q).
    With `selection` (B, P) (`delta_program_choice = "enumerate"`), answer_logits are (B, S, P, K, n), each sample
    run under every program, and a sample's loss is its marginal answer NLL over the programs, per answer element:
    -log(sum_p selection_p * P(answer | sample, p)) / K (log q is then the parse's alone). The selection logits get
    the gradient of the undivided marginal NLL, selection - posterior, the posterior over programs given the answer:
    it moves the selection toward the programs that explain the answer, however unlikely they are now. (The
    expected loss, sum_p selection_p * loss_p, has gradient proportional to selection_p: on the full mixture it
    collapsed onto `div`, right by chance on many parity and count answers, within one epoch, and never recovered.)
    Returns (loss, per-sample losses (B, S)).
    """
    enumerated = selection is not None
    if not enumerated:  # one program per sample, its log-probability in log q
        answer_logits, selection = answer_logits[:, :, None], answer_logits.new_ones(len(answer_logits), 1)
    b, s, p, k, _ = answer_logits.shape
    labels = labels.to(answer_logits.device)[:, None, None].expand(b, s, p, k)  # (B, S, P, K)
    valid = labels != -100
    picked = answer_logits.gather(-1, labels.clamp_min(0)[..., None])[..., 0]  # (B, S, P, K)
    elements = valid.sum(-1).clamp_min(1)[:, :, 0]  # (B, S) answer elements
    log_likelihood = (picked * valid).sum(-1)  # (B, S, P) log P(answer | sample, program)
    log_selection = log_probability(selection)[:, None]  # (B, 1, P)
    # (B, S); one program: its mean answer NLL. The selection takes no gradient here (its term is below).
    sample_loss = -torch.logsumexp(log_likelihood + log_selection.detach(), dim=-1) / elements
    baseline = (sample_loss.sum(1, keepdim=True) - sample_loss) / (s - 1)  # (B, S) leave-one-out
    advantage = (sample_loss - baseline).detach()
    surrogate = advantage * (log_q - log_q.detach())  # value 0; gradient advantage * d log q
    loss = sample_loss.mean() + surrogate.mean()
    if enumerated:
        # The selection's gradient, selection - posterior per question, undivided by the answer's length: a sorted
        # string's question moves the selection as much as a parity bit's. Value 0.
        selection_loss = -torch.logsumexp(log_likelihood.detach() + log_selection, dim=-1).mean()
        loss = loss + (selection_loss - selection_loss.detach())
    return loss, sample_loss


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
    "AnswerBatch",
    "DeltaComputerHead",
    "LlamaDeltaForAlgorithmicQA",
    "LlamaDeltaPreTrainedModel",
    "format_answer",
]
