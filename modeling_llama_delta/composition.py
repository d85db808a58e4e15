"""Composition: a main() of up to K library calls, run on Δ as real code (issue #17, the paper's "an intermediate
main() function is synthesized").

A `MainProgram` is a sequence of `Call`s. Each call names a library program (its index in the library) and, per
input register r0, r1, ... (the calling convention of `library.py`), where that register's value comes from: one
of the question's parsed values (`parsed[k]`, a source k >= 0) or the previous call's result (`PREVIOUS`: its r0).
A sequence input is not passed: memory is Δ's state, and it is carried from call to call, so "sort, then reverse"
reverses what the sort left in memory.

One semantics, three executors that must agree (tests/test_composition.py, on random mains over random inputs):

- `run_main_reference`: the reference interpreter, call after call on one carried state;
- `run_main_discrete`: the same chain on the exact batched integer machine (`discrete.DiscreteMachine`), each
  example its own main();
- `run_main_soft`: the chain on the soft machine (`machine.DeltaMachine`), a selection over the programs and a
  distribution over sources per call, so that gradients reach both;

and `to_assembly` writes a main() as ISA v1.1 text, a `.func main` that sets the registers with `const` / `mov` and
`call`s the library functions, assembled together with their sources; run in the reference interpreter it leaves
the same memory and registers (all but `ra`, which holds a return address into main instead of a halt line).

Before each call: the call's input registers are set from their sources, `ra` is the program's trailing halt line
(its `ret` halts) and the counter its line 0; every other register and all of memory are as the previous call left
them (the first call starts from the ISA start state with the parsed memory). A call's program must not read
`ra` as data: `fib_recursive` and `fib_linear` push it onto a stack in memory, so there the chained run and the
assembled main() leave different stack cells (the answer in r0 is the same).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .assembler import Program, assemble
from .discrete import DiscreteMachine, DiscreteState
from .machine import DeltaMachine, DeltaState
from .reference import ReferenceResult, run_reference

PREVIOUS = -1  # a source: the previous call's result (its r0)
KEEP = -2  # in tensors only: leave the register as it is (a call with fewer inputs than the tensor's width)
MAX_CALLS = 3  # K: the longest main() the data and the head use
# Library program -> its input registers, in order (the `In:` line of its `;;` block in library.py; a sequence
# input lives in memory and is no register). Checked against the sources by tests/test_composition.py.
PROGRAM_INPUTS: dict[str, tuple[str, ...]] = {
    **{op: ("x", "y") for op in ("add", "sub", "mul", "div", "mod", "min", "max")},
    **{name: ("x0", "x1", "depth") for name in ("fib", "fib_recursive", "fib_linear")},
    "count": ("character",),
    **{name: () for name in ("strlen", "reverse", "sort", "sum", "parity", "add_digits")},
}


@dataclass(frozen=True)
class Call:
    """One call of a main(): library program `program` (an index into the library's names); `sources[i]` is where
    register r_i comes from: `PREVIOUS` or a parsed value's index k >= 0."""

    program: int
    sources: tuple[int, ...] = ()


@dataclass(frozen=True)
class MainProgram:
    """A main(): its calls, in order (1..K of them; the head's "stop" ends it)."""

    calls: tuple[Call, ...]

    def check(self, num_programs: int, num_parsed: int, num_registers: int, max_calls: int = MAX_CALLS) -> None:
        """Refuse a main() that is not runnable: no calls or more than `max_calls`, an unknown program, a source
        outside the parse, `PREVIOUS` in the first call (there is no result yet), or an input register that would
        overwrite sp / ra (r(R-2), r(R-1))."""
        if not 1 <= len(self.calls) <= max_calls:
            raise ValueError(f"a main() has 1..{max_calls} calls; got {len(self.calls)}")
        for index, call in enumerate(self.calls):
            where = f"call {index}"
            if not 0 <= call.program < num_programs:
                raise ValueError(f"{where}: program {call.program} is not in 0..{num_programs - 1}")
            if len(call.sources) > num_registers - 2:
                raise ValueError(f"{where}: {len(call.sources)} inputs; registers r0..r{num_registers - 3} only")
            for register, source in enumerate(call.sources):
                if source == PREVIOUS and index == 0:
                    raise ValueError(f"{where}: r{register} takes the previous result, but it is the first call")
                if source != PREVIOUS and not 0 <= source < num_parsed:
                    raise ValueError(
                        f"{where}: r{register} source {source} is neither PREVIOUS ({PREVIOUS}) "
                        f"nor a parsed value 0..{num_parsed - 1}"
                    )


def mains_to_tensors(mains: Sequence[MainProgram], max_calls: int, max_inputs: int) -> tuple[Tensor, Tensor]:
    """Batch mains as tensors: programs (B, K) long, -1 after the last call (stop); sources (B, K, I) long, a
    source per input register (`PREVIOUS`, k >= 0) and `KEEP` where a call sets no such register."""
    programs = torch.full((len(mains), max_calls), -1, dtype=torch.long)
    sources = torch.full((len(mains), max_calls, max_inputs), KEEP, dtype=torch.long)
    for b, main in enumerate(mains):
        if len(main.calls) > max_calls:
            raise ValueError(f"main {b} has {len(main.calls)} calls; the tensors hold {max_calls}")
        for k, call in enumerate(main.calls):
            if len(call.sources) > max_inputs:
                raise ValueError(f"main {b}, call {k}: {len(call.sources)} inputs; the tensors hold {max_inputs}")
            programs[b, k] = call.program
            sources[b, k, : len(call.sources)] = torch.tensor(call.sources, dtype=torch.long)
    return programs, sources


def run_main_reference(
    main: MainProgram,
    programs: Sequence[Program],
    parsed: Sequence[int],
    memory: Sequence[int] = (),
    memory_size: int | None = None,
    max_steps: int = 10_000,
) -> ReferenceResult:
    """The chain of `main`'s calls in the reference interpreter, on one carried state (the module's semantics).

    `programs` is the library, indexed by `Call.program`; `parsed` the question's values; `memory` the parsed
    memory. Each call runs for at most `max_steps` lines; `steps` is the total, `halted` whether every call halted.
    """
    first = programs[main.calls[0].program]
    main.check(len(programs), len(parsed), first.num_registers)
    memory_size = first.n if memory_size is None else memory_size
    registers = first.initial_registers()
    steps, halted = 0, True
    for call in main.calls:
        program = programs[call.program]
        previous = registers[0]
        for register, source in enumerate(call.sources):
            registers[register] = previous if source == PREVIOUS else parsed[source]
        registers[-1] = program.halt_line  # its `ret` halts
        result = run_reference(program, memory_size, memory, registers, max_steps=max_steps)
        memory, registers = result.memory, result.registers
        steps, halted = steps + result.steps, halted and result.halted
    return ReferenceResult(list(memory), list(registers), halted, steps)


def run_main_discrete(
    machine: DiscreteMachine,
    programs: Tensor,
    sources: Tensor,
    parsed: Tensor,
    memory: Tensor | None = None,
    max_steps: int | None = None,
) -> DiscreteState:
    """Each example's main() chained on the exact integer machine, batched.

    programs (B, K) long (-1: stop; calls after a stop do not run), sources (B, K, I) long (`PREVIOUS`, `KEEP` or
    k >= 0), parsed (B, V) values, memory (B, k <= M) the parsed memory. Each call gets `max_steps` (default the
    machine's). Returns the final state; `halted` is whether every call that ran halted, `steps` the lines run.
    """
    b, num_calls = programs.shape
    if sources.shape[:2] != (b, num_calls):
        raise ValueError(f"sources must be (B={b}, K={num_calls}, I); got {tuple(sources.shape)}")
    r = machine.num_registers
    if sources.shape[2] > r - 2:
        raise ValueError(f"sources set {sources.shape[2]} registers; r0..r{r - 3} only (sp and ra are not inputs)")
    state = machine.start_state(programs[:, 0].clamp_min(0), memory)
    tables = machine._tables(programs.device)
    running = torch.ones(b, dtype=torch.bool, device=programs.device)  # no stop so far
    all_halted = torch.ones_like(running)
    for k in range(num_calls):
        running = running & (programs[:, k] >= 0)
        program = torch.where(running, programs[:, k], state.program)
        registers = state.registers.clone()
        previous = registers[:, 0].clone()  # r0 before this call sets any register
        for register in range(sources.shape[2]):
            source = sources[:, k, register]  # (B,)
            value = parsed.gather(1, source.clamp_min(0)[:, None])[:, 0] if parsed.shape[1] else previous
            value = torch.where(source == PREVIOUS, previous, value)
            registers[:, register] = torch.where(running & (source != KEEP), value, registers[:, register])
        registers[:, r - 1] = torch.where(running, tables["halt"][program], registers[:, r - 1])
        counter = torch.where(running, torch.zeros_like(state.counter), state.counter)  # line 0 of every program
        state = DiscreteState(state.memory, registers, counter, ~running, program, state.steps)
        state, _ = machine.run(state, max_steps)
        all_halted = all_halted & (state.halted | ~running)
    state.halted = all_halted
    return state


def run_main_soft(
    machine: DeltaMachine,
    selections: Tensor,
    sources: Tensor,
    parsed: Tensor,
    memory: Tensor | None = None,
    max_steps: int | None = None,
) -> DeltaState:
    """The chain on the soft machine, differentiable in every input: a mean field over mains.

    selections (B, K, P + 1): per call, probabilities over the library's programs and, last, "stop" (this call and
    every later one do not run: the state stays). sources (B, K, I, V + 2): per call and input register, weights
    over the parsed values (V), the previous result (index V) and "keep the register" (V + 1). parsed (B, V, n)
    value distributions, memory (B, k <= M, n). Call k's start state is the mixed state after call k - 1 with
    those registers set, ra = each program's halt line and the counter at line 0; its result is the programs'
    final states mixed by alive · selection, plus the state itself by the share that has stopped (alive: the
    probability that no earlier call said stop). On one-hot inputs this is `run_main_discrete`'s run exactly.
    """
    b, num_calls, options = selections.shape
    p, r = len(machine.programs), machine.num_registers
    v = parsed.shape[1]
    if options != p + 1:
        raise ValueError(f"selections must be (B, K, P + 1 = {p + 1}): the programs and stop; got {options}")
    if sources.shape[:2] != (b, num_calls) or sources.shape[3] != v + 2 or sources.shape[2] > r - 2:
        raise ValueError(
            f"sources must be (B={b}, K={num_calls}, I <= {r - 2}, V + 2 = {v + 2}); got {tuple(sources.shape)}"
        )
    state = machine.start_state(memory=memory, batch_size=b).map(lambda t: t[:, 0])  # (B, ...): the parse's
    alive = selections.new_ones(b)
    for k in range(num_calls):
        registers = state.registers
        rows = []
        for register in range(r - 1):  # every register but ra, which start_state sets per program
            current = registers[:, register]  # (B, n)
            if register < sources.shape[2]:
                offered = torch.cat([parsed, registers[:, :1], current[:, None]], dim=1)  # (B, V + 2, n)
                current = torch.einsum("bs,bsn->bn", sources[:, k, register], offered)
            rows.append(current)
        start = machine.start_state(memory=state.memory, registers=torch.stack(rows, dim=1))  # (B, P, ...)
        run_share = alive[:, None] * selections[:, k, :p]  # (B, P)
        finals = machine(start, max_steps=max_steps).program_states  # (B, P, ...)
        stay = 1 - run_share.sum(1)  # (B,): the stopped share keeps the state

        def mix(final: Tensor, before: Tensor, share=run_share, stay=stay) -> Tensor:
            shape = (b, p) + (1,) * (final.dim() - 2)
            return (share.reshape(shape) * final).sum(1) + stay.reshape((b,) + (1,) * (before.dim() - 1)) * before

        halted = mix(finals.halted, state.halted if k else torch.ones_like(state.halted))
        state = DeltaState(
            mix(finals.memory, state.memory),
            mix(finals.registers, state.registers),
            mix(finals.counter, state.counter),
            halted,
        )
        alive = alive * (1 - selections[:, k, p])
    return state


def _local_labels(program: Program) -> list[str]:
    return [label for label in program.labels if label not in program.functions]


def _prefixed_source(name: str, source: str, program: Program) -> str:
    """`source` with its local labels renamed `name.label`, so that library sources assemble together (`sort`
    and `reverse` both have a `test:`); `.func` names stay, they are what main() calls."""
    for label in _local_labels(program):
        source = re.sub(rf"(?<![\w.']){re.escape(label)}(?![\w.'])", f"{name}.{label}", source)
    return source


def _line(instruction: str, comment: str) -> str:
    return f"    {instruction:<20} ; {comment}"


def to_assembly(
    main: MainProgram,
    names: Sequence[str],
    parsed_values: Sequence[int],
    library_sources: Mapping[str, str],
    n: int = 128,
    num_registers: int = 8,
    memory: Sequence[int] = (),
) -> str:
    """`main` as ISA v1.1 text: a `.func main` first (line 0, where a run starts), setting each call's registers
    (`mov` from r0 for the previous result, `const` for a parsed value) before `call`ing the program, and ending
    in `halt`; then the source of every program it calls (`library_sources`: name -> assembly, e.g. `library.LIBRARY`),
    local labels renamed `program.label`. `names` maps `Call.program` to a name; `parsed_values` are the values
    the `const`s write; `memory`, if given, is described in a comment (main() does not write it: the parse does).
    """
    main.check(len(names), len(parsed_values), num_registers)
    lines = [";; main(): generated by modeling_llama_delta.composition.to_assembly"]
    if memory:
        text = "".join(chr(v) if 32 <= v < 127 else f"\\{v}" for v in memory)
        lines.append(f";; memory at the start (the parse's), as characters: {text}")
    lines.append(".func main")
    for index, call in enumerate(main.calls):
        name = names[call.program]
        inputs = PROGRAM_INPUTS.get(name, ())
        # Registers from the previous result first, while r0 still holds it; then the parsed values.
        order = sorted(range(len(call.sources)), key=lambda i: call.sources[i] != PREVIOUS)
        for register in order:
            source = call.sources[register]
            what = inputs[register] if register < len(inputs) else "unused by the program"
            if source == PREVIOUS and register:
                lines.append(_line(f"mov r{register}, r0", f"{what} := call {index - 1}'s result"))
            elif source == PREVIOUS:
                lines.append(_line("", f"r0 ({what}) is call {index - 1}'s result already"))
            else:
                lines.append(_line(f"const r{register}, {parsed_values[source]}", f"{what} := parsed value {source}"))
        lines.append(_line(f"call {name}", f"call {index}"))
    lines.append(_line("halt", "the answer: r0, or memory from m[0]"))
    text = "\n".join(lines) + "\n"
    for name in dict.fromkeys(names[call.program] for call in main.calls):
        program = assemble(library_sources[name], n, num_registers)
        text += "\n" + _prefixed_source(name, library_sources[name], program)
    return text


__all__ = [
    "KEEP",
    "MAX_CALLS",
    "PREVIOUS",
    "PROGRAM_INPUTS",
    "Call",
    "MainProgram",
    "mains_to_tensors",
    "run_main_discrete",
    "run_main_reference",
    "run_main_soft",
    "to_assembly",
]
