"""Δ on one-hot states: an exact batched integer interpreter (ISA.md's table, vectorised over examples and programs).

On exactly one-hot states and a one-hot ROM, every distribution of Δ's soft step stays one-hot, and the step IS the
discrete machine of ISA.md. Where no gradient is asked of Δ (sampled and greedy parses, evaluation, `solve`), this
module runs that machine on integers instead: memory (B, M) and registers (B, R) values in 0..n-1, the counter (B,),
halted (B,), no `n` axis. Each example names its own program (B,); the ROM is held as integer field tables (one row
per line of every program, `compiler.compile_fields`), and a step gathers each example's line by (program, counter),
so a library of P programs costs one program's run per example (the soft machine runs all P on every example).

A step is a fixed handful of batched tensor ops, whatever the programs: the line's fields and the per-line tables
built once from the ROM (which value a line writes to its register, whether it writes memory, where it sends the
counter), the two operand registers, the candidate results of the ops the ROM uses, and three masked writes. An
example that has halted changes nothing but is still stepped (vectorised); a run ends once all have halted.
Equal to the reference interpreter and to the soft machine on one-hot inputs: tests/test_discrete.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .assembler import BINARY_OPS, OPCODE_INDEX, OPCODES, Program
from .compiler import compile_fields
from .machine import DeltaState

# Where each op sends the counter (ISA.md's "next c" column), as a per-line code.
_NEXT, _IMMEDIATE, _REGISTER_A, _STAY, _IF_ZERO, _IF_NONZERO = range(6)
_CONTROL = {"halt": _STAY, "jmp": _IMMEDIATE, "jez": _IF_ZERO, "jnz": _IF_NONZERO, "call": _IMMEDIATE}
_CONTROL["ret"] = _REGISTER_A
# The ops that write register d, each by the name of the candidate value it writes (`DiscreteMachine._candidates`).
_REGISTER_RESULTS = {"const": "imm", "mov": "a", "inc": "a+1", "dec": "a-1", "read": "m[a]", "call": "c+1"}
_REGISTER_RESULTS |= {op: op for op in BINARY_OPS}
# Columns of the per-line table (P·n, 9): the five ROM fields, then the ones derived from the op.
_OP, _A, _B, _D, _IMM, _SOURCE, _WRITES_REGISTER, _WRITES_MEMORY, _JUMP = range(9)


@dataclass
class DiscreteState:
    """Integer state of a batch of discrete runs: memory (B, M), registers (B, R), counter (B,) long values,
    halted (B,) bool, program (B,) the library program each example runs, steps (B,) lines each has executed
    (its `halt` included, as `run_reference` counts)."""

    memory: Tensor
    registers: Tensor
    counter: Tensor
    halted: Tensor
    program: Tensor
    steps: Tensor

    def one_hot(self, n: int, dtype: torch.dtype = torch.float32) -> DeltaState:
        """The same state as the soft machine holds it: memory (B, M, n), registers (B, R, n), counter (B, n)
        one-hot, halted (B,) 0/1."""
        return DeltaState(
            F.one_hot(self.memory, n).to(dtype),
            F.one_hot(self.registers, n).to(dtype),
            F.one_hot(self.counter, n).to(dtype),
            self.halted.to(dtype),
        )


def one_hot_values(distributions: Tensor) -> Tensor | None:
    """(..., n) -> (...) the values of exactly one-hot distributions (every entry 0 or 1, one 1 per row), else None.

    Exactness, not closeness: a discrete run replaces the soft one only where the two are the same computation.
    """
    if distributions.requires_grad:
        return None
    binary = ((distributions == 0) | (distributions == 1)).all()
    if not bool(binary) or not bool((distributions.sum(-1) == 1).all()):
        return None
    return distributions.argmax(-1)


class DiscreteMachine:
    """The discrete machine for a library of programs (one machine shape: n, R), with M memory cells.

    Not an `nn.Module`: it holds no parameters, only integer tables that are pure functions of the programs
    (built on the CPU, copied to a run's device on first use there).
    """

    def __init__(self, programs: Sequence[Program], memory_size: int, max_steps: int = 1000):
        programs = list(programs)
        fields = compile_fields(programs)  # (P, n, 5): op, a, b, d, imm of every line
        self.n, self.num_registers = programs[0].n, programs[0].num_registers
        if not 1 <= memory_size <= self.n:
            raise ValueError(f"memory_size = {memory_size} is out of range 1..{self.n} (n)")
        self.memory_size, self.max_steps = memory_size, max_steps
        self.num_programs = len(programs)
        op_names = [OPCODES[code] for code in fields[..., 0].unique().tolist()]
        # Candidate register values a step computes: only those of ops some line uses (the rest are never written).
        used = [_REGISTER_RESULTS[op] for op in op_names if op in _REGISTER_RESULTS]
        self.results = tuple(dict.fromkeys(used)) or ("a",)  # a ROM of control ops only writes no register
        column = {name: i for i, name in enumerate(self.results)}
        source = torch.tensor([column.get(_REGISTER_RESULTS.get(op), 0) for op in OPCODES])  # (O,)
        writes_register = torch.tensor([op in _REGISTER_RESULTS for op in OPCODES])  # (O,)
        writes_memory = F.one_hot(torch.tensor(OPCODE_INDEX["write"]), len(OPCODES)).bool()  # (O,)
        jump = torch.tensor([_CONTROL.get(op, _NEXT) for op in OPCODES])  # (O,)
        op = fields[..., 0]  # (P, n)
        derived = torch.stack([source[op], writes_register[op].long(), writes_memory[op].long(), jump[op]], dim=-1)
        self.lines = torch.cat([fields, derived], dim=-1).flatten(0, 1)  # (P·n, 9): row p·n + line
        self.halt_lines = torch.tensor([program.halt_line for program in programs])  # (P,)
        self.functions = [program.functions for program in programs]
        self._on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self.lines.to(device), self.halt_lines.to(device))
        return self._on_device[device]

    def entry_lines(self, entry: str | None) -> Tensor:
        """(P,) the start line of every program: 0, or the line of its `.func` named `entry`."""
        if entry is not None:
            for p, functions in enumerate(self.functions):
                if entry not in functions:
                    raise ValueError(f"program {p} has no entry function {entry!r}; defined: {sorted(functions)}")
        return torch.tensor([0 if entry is None else functions[entry] for functions in self.functions])

    def start_state(
        self,
        program: Tensor,
        memory: Tensor | None = None,
        registers: Tensor | None = None,
        entry: str | None = None,
    ) -> DiscreteState:
        """ISA start state of each example's program (B,): `memory` (B, k <= M) and `registers` (B, k <= R) give
        the first k values; the rest take the ISA start values (0; `ra` = the program's trailing halt line)."""
        b, device = program.shape[0], program.device
        n, r, m = self.n, self.num_registers, self.memory_size
        if program.dtype != torch.long or not bool(((program >= 0) & (program < self.num_programs)).all()):
            raise ValueError(f"program must be (B,) long indices in 0..{self.num_programs - 1}")
        _, halt_lines = self._tables(device)
        cells = torch.zeros(b, m, dtype=torch.long, device=device)
        regs = torch.zeros(b, r, dtype=torch.long, device=device)
        regs[:, r - 1] = halt_lines[program]
        for values, out, rows, what in ((memory, cells, m, "memory"), (registers, regs, r, "registers")):
            if values is None:
                continue
            if values.dim() != 2 or values.shape[0] != b or values.shape[1] > rows:
                raise ValueError(f"{what} must be (B={b}, k <= {rows}) values; got {tuple(values.shape)}")
            if values.numel() and not bool(((values >= 0) & (values < n)).all()):
                raise ValueError(f"{what} values must be in 0..{n - 1} (n = {n})")
            out[:, : values.shape[1]] = values
        counter = self.entry_lines(entry).to(device)[program]
        no = torch.zeros(b, dtype=torch.bool, device=device)
        return DiscreteState(cells, regs, counter, no, program, torch.zeros(b, dtype=torch.long, device=device))

    def _candidates(self, a: Tensor, b: Tensor, imm: Tensor, counter: Tensor, memory: Tensor) -> Tensor:
        """(B, len(self.results)) every register value the ROM's ops can write, from operand values a, b (B,)."""
        n, m = self.n, self.memory_size
        safe_b = b.clamp_min(1)  # div/mod by 0 give 0 (masked below)
        compute = {
            "imm": lambda: imm,
            "a": lambda: a,
            "a+1": lambda: (a + 1) % n,
            "a-1": lambda: (a - 1) % n,
            "m[a]": lambda: memory.gather(1, a.clamp_max(m - 1)[:, None])[:, 0].masked_fill(a >= m, 0),
            "c+1": lambda: (counter + 1) % n,
            "add": lambda: (a + b) % n,
            "sub": lambda: (a - b) % n,
            "mul": lambda: (a * b) % n,
            "div": lambda: torch.div(a, safe_b, rounding_mode="floor").masked_fill(b == 0, 0),
            "mod": lambda: torch.remainder(a, safe_b).masked_fill(b == 0, 0),
            "min": lambda: torch.minimum(a, b),
            "max": lambda: torch.maximum(a, b),
            "eq": lambda: (a == b).long(),
            "lt": lambda: (a < b).long(),
        }
        return torch.stack([compute[name]() for name in self.results], dim=1)

    def step(self, state: DiscreteState) -> DiscreteState:
        """One line executed by every example that has not halted (ISA.md's "Step")."""
        n, r, m = self.n, self.num_registers, self.memory_size
        lines, _ = self._tables(state.counter.device)
        live = ~state.halted  # (B,)
        line = lines[state.program * n + state.counter]  # (B, 9): each example's current line of its own program
        op, imm, d = line[:, _OP], line[:, _IMM], line[:, _D]
        operands = state.registers.gather(1, line[:, _A : _B + 1])  # (B, 2): the values of registers a and b
        a, b = operands[:, 0], operands[:, 1]
        # Registers: d := the line's candidate value, where the line's op writes a register.
        value = self._candidates(a, b, imm, state.counter, state.memory).gather(1, line[:, _SOURCE, None])  # (B, 1)
        writes = (live & line[:, _WRITES_REGISTER].bool())[:, None]  # (B, 1)
        at_d = torch.arange(r, device=d.device) == d[:, None]  # (B, R)
        registers = torch.where(at_d & writes, value, state.registers)
        # Memory: m[a] := b, where the op is `write` and a < M (out of range: nothing).
        stores = (live & line[:, _WRITES_MEMORY].bool())[:, None]  # (B, 1)
        at_a = torch.arange(m, device=a.device) == a[:, None]  # (B, M): all False where a >= M
        memory = torch.where(at_a & stores, b[:, None], state.memory)
        # Counter: next line, the immediate, the value of a (ret), or stay (halt); jez/jnz by a == 0.
        jump = line[:, _JUMP]
        taken = (jump == _IMMEDIATE) | ((jump == _IF_ZERO) & (a == 0)) | ((jump == _IF_NONZERO) & (a != 0))
        counter = torch.where(taken, imm, torch.where(jump == _REGISTER_A, a, (state.counter + 1) % n))
        counter = torch.where(live & (jump != _STAY), counter, state.counter)
        halted = state.halted | (op == OPCODE_INDEX["halt"])
        return DiscreteState(memory, registers, counter, halted, state.program, state.steps + live)

    def run(self, state: DiscreteState, max_steps: int | None = None) -> tuple[DiscreteState, int]:
        """Step until every example has halted or `max_steps` steps ran; returns the final state and the steps run
        (the soft machine's `DeltaOutput.steps` for the same run)."""
        max_steps = self.max_steps if max_steps is None else max_steps
        steps = 0
        with torch.no_grad():
            while steps < max_steps and not bool(state.halted.all()):
                state = self.step(state)
                steps += 1
        return state, steps


__all__ = ["DiscreteMachine", "DiscreteState", "one_hot_values"]
