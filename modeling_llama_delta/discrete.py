"""Δ on one-hot states: an exact batched integer interpreter (ISA.md's table, vectorised over examples and programs).

On exactly one-hot states and a one-hot ROM, every distribution of Δ's soft step stays one-hot, and the step IS the
discrete machine of ISA.md. Where no gradient is asked of Δ (sampled and greedy parses, evaluation, `solve`), this
module runs that machine on integers instead: memory (B, M) and registers (B, R) values in 0..n-1, the counter (B,),
halted (B,), no `n` axis. Each example names its own program (B,); the ROM is held as integer field tables (one row
per line of every program, `compiler.compile_fields`), and a step gathers each example's line by (program, counter),
so a library of P programs costs one program's run per example (the soft machine runs all P on every example).

A step is a fixed handful of batched tensor ops, whatever the programs: the line's fields and the per-line tables
built once from the ROM (which value a line writes, whether to a register or to memory, where it sends the
counter), the two operand registers, the candidate values of the ops the ROM uses, ONE scatter (a line writes at
most one register or cell) and the new counter. An example that has halted changes nothing but is still stepped
(vectorised); a run ends once all have halted.
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
# The ops that write register d, each by the name of the value it writes (`DiscreteMachine._candidates`).
_REGISTER_RESULTS = {"const": "imm", "mov": "a", "inc": "a+1", "dec": "a-1", "read": "m[a]", "call": "c+1"}
_REGISTER_RESULTS |= {op: op for op in BINARY_OPS}
_WRITTEN = _REGISTER_RESULTS | {"write": "b"}  # and `write` writes b (to memory cell a)
# The new counter is a column of stack([c + 1, imm, a, c]), chosen by (the line's jump code, a == 0).
_STAY_COLUMN = 3
_CHOICE = torch.tensor(
    [[0, 0], [1, 1], [2, 2], [_STAY_COLUMN, _STAY_COLUMN], [0, 1], [1, 0]]  # next, imm, ret, halt, jez, jnz
).flatten()  # (6 · 2,): index jump · 2 + (a == 0)
# Columns of the per-line table (P·n, 9): op, the registers a and b, the immediate (ROM fields), then derived from
# the op: which candidate value it writes, the register it writes (or scratch), whether it writes memory, its jump
# code (times 2: a row of `_CHOICE`) and the next line.
_OP, _A, _B, _IMM, _SOURCE, _TARGET, _WRITES_MEMORY, _JUMP, _NEXT_LINE = range(9)


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
    (built on the CPU, copied to a run's device on first use there). A run holds each example's values as one row
    (R + M + 2,): the registers, the memory cells, a scratch column (where a line that writes nothing writes) and a
    column that stays 0 (what reading a cell >= M gives).
    """

    def __init__(self, programs: Sequence[Program], memory_size: int, max_steps: int = 1000):
        programs = list(programs)
        fields = compile_fields(programs)  # (P, n, 5): op, a, b, d, imm of every line
        n, r = programs[0].n, programs[0].num_registers
        if not 1 <= memory_size <= n:
            raise ValueError(f"memory_size = {memory_size} is out of range 1..{n} (n)")
        self.n, self.num_registers, self.memory_size, self.max_steps = n, r, memory_size, max_steps
        self.num_programs = len(programs)
        self.scratch, self.zero = r + memory_size, r + memory_size + 1  # the two extra value columns
        op_names = [OPCODES[code] for code in fields[..., 0].unique().tolist()]
        # Candidate values a step computes: only those of ops some line uses (the rest are never written).
        used = [_WRITTEN[op] for op in op_names if op in _WRITTEN]
        self.results = tuple(dict.fromkeys(used)) or ("a",)  # a ROM of control ops only writes nothing
        column = {name: i for i, name in enumerate(self.results)}
        source = torch.tensor([column.get(_WRITTEN.get(op), 0) for op in OPCODES])  # (O,)
        writes_register = torch.tensor([op in _REGISTER_RESULTS for op in OPCODES])  # (O,)
        jump = torch.tensor([_CONTROL.get(op, _NEXT) for op in OPCODES])  # (O,)
        op, a, b, d, imm = fields.unbind(-1)  # (P, n) each
        columns = {
            _OP: op,
            _A: a,
            _B: b,
            _IMM: imm,
            _SOURCE: source[op],
            _TARGET: torch.where(writes_register[op], d, self.scratch),  # a written register, else scratch
            _WRITES_MEMORY: (op == OPCODE_INDEX["write"]).long(),
            _JUMP: 2 * jump[op],  # the row of `_CHOICE` (plus a == 0)
            _NEXT_LINE: ((torch.arange(n) + 1) % n).expand_as(op),
        }
        self.lines = torch.stack([columns[i] for i in range(len(columns))], dim=-1).flatten(0, 1)  # (P·n, 9)
        values = torch.arange(n)
        in_memory = values < memory_size
        self.read_columns = torch.where(in_memory, r + values, self.zero)  # (n,) value a -> the column m[a] reads
        self.write_columns = torch.where(in_memory, r + values, self.scratch)  # (n,) and the one `write` writes
        self.halt_lines = torch.tensor([program.halt_line for program in programs])  # (P,)
        self.functions = [program.functions for program in programs]
        self._on_device: dict[torch.device, dict[str, Tensor]] = {}

    def _tables(self, device: torch.device) -> dict[str, Tensor]:
        """The per-line table, the value-to-column tables, the counter's choice table and the halt lines on `device`."""
        if device not in self._on_device:
            tables = {"lines": self.lines, "read": self.read_columns, "write": self.write_columns, "choice": _CHOICE}
            self._on_device[device] = {name: t.to(device) for name, t in (tables | {"halt": self.halt_lines}).items()}
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
        cells = torch.zeros(b, m, dtype=torch.long, device=device)
        regs = torch.zeros(b, r, dtype=torch.long, device=device)
        regs[:, r - 1] = self._tables(device)["halt"][program]
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

    def _candidates(self, a: Tensor, b: Tensor, imm: Tensor, next_line: Tensor, loaded) -> Tensor:
        """(B, len(self.results)) every value the ROM's ops can write, from operand values a, b (B,)."""
        n = self.n
        safe_b = b.clamp_min(1)  # div/mod by 0 give 0 (masked below)
        compute = {
            "imm": lambda: imm,
            "a": lambda: a,
            "b": lambda: b,
            "a+1": lambda: (a + 1) % n,
            "a-1": lambda: (a - 1) % n,
            "m[a]": loaded,
            "c+1": lambda: next_line,
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

    def _step(self, values: Tensor, counter: Tensor, halted: Tensor, first_line: Tensor, tables: dict[str, Tensor]):
        """One line executed by every example that has not halted (ISA.md's "Step").

        values (B, R + M + 2) are written in place (a line writes at most one register or one cell: ONE scatter);
        counter (B,), halted (B,); first_line (B,) the row of each example's program in the line table. Returns the
        new counter and halted, and which examples ran (B,).
        """
        live = ~halted  # (B,)
        line = tables["lines"].index_select(0, first_line + counter)  # (B, 9): each example's line of its program
        op, _, _, imm, source, target, writes_memory, jump, next_line = line.unbind(1)  # (B,) each
        a, b = values.gather(1, line[:, _A : _B + 1]).unbind(1)  # (B,) each: the values of registers a and b

        def loaded() -> Tensor:  # m[a], 0 where a >= M (the zero column)
            return values.gather(1, tables["read"].index_select(0, a)[:, None])[:, 0]

        written = self._candidates(a, b, imm, next_line, loaded).gather(1, source[:, None])  # (B, 1)
        # `write` writes cell a (out of range: the scratch column); other lines their register d or scratch.
        target = torch.where(writes_memory.bool(), tables["write"].index_select(0, a), target)
        values.scatter_(1, torch.where(live, target, self.scratch)[:, None], written)
        # Counter: the next line, the immediate, the value of a (ret) or stay (halt); jez/jnz decided by a == 0.
        choice = torch.where(live, tables["choice"].index_select(0, jump + (a == 0)), _STAY_COLUMN)  # (B,)
        counter = torch.stack([next_line, imm, a, counter], dim=1).gather(1, choice[:, None])[:, 0]
        return counter, halted | (op == OPCODE_INDEX["halt"]), live

    def run(self, state: DiscreteState, max_steps: int | None = None, early_exit: bool = True):
        """Step until every example has halted (`early_exit`) or `max_steps` steps ran; returns the final state and
        the steps run (the soft machine's `DeltaOutput.steps` for the same run): (DiscreteState, int)."""
        max_steps = self.max_steps if max_steps is None else max_steps
        b, r = state.registers.shape
        tables = self._tables(state.counter.device)
        extra = state.registers.new_zeros(b, 2)  # the scratch and zero columns
        values = torch.cat([state.registers, state.memory, extra], dim=1)  # (B, R + M + 2), a copy: written in place
        first_line = state.program * self.n  # (B,)
        counter, halted, taken = state.counter, state.halted, state.steps
        steps = 0
        with torch.no_grad():
            while steps < max_steps and not (early_exit and bool(halted.all())):
                counter, halted, live = self._step(values, counter, halted, first_line, tables)
                taken = taken + live
                steps += 1
        memory = values[:, r : r + self.memory_size]
        return DiscreteState(memory, values[:, :r], counter, halted, state.program, taken), steps


__all__ = ["DiscreteMachine", "DiscreteState", "one_hot_values"]
