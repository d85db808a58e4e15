"""The exact reference interpreter: pure Python, the source of truth for ISA v1.

Where the differentiable machine and this interpreter disagree on a one-hot input, the machine
is wrong. Deliberately naive: one `if` per opcode, Python integers, no tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

from .assembler import Program, initial_memory


@dataclass
class ReferenceResult:
    memory: list[int]
    registers: list[int]
    halted: bool
    steps: int  # executed lines, the final `halt` included
    trace: list[int] | None = None  # the line executed at each step, when asked for


def binary_op(op: str, x: int, y: int, n: int) -> int:
    """Value of a binary ALU operation mod n (the definition every ALU backend must match)."""
    if op == "add":
        return (x + y) % n
    if op == "sub":
        return (x - y) % n
    if op == "mul":
        return (x * y) % n
    if op == "div":
        return 0 if y == 0 else x // y
    if op == "mod":
        return 0 if y == 0 else x % y
    if op == "min":
        return min(x, y)
    if op == "max":
        return max(x, y)
    if op == "eq":
        return int(x == y)
    if op == "lt":
        return int(x < y)
    raise ValueError(f"{op!r} is not a binary ALU operation")


def run_reference(
    program: Program,
    memory_size: int,
    memory=(),
    registers=(),
    entry: str | None = None,
    max_steps: int = 1000,
    record_trace: bool = False,
) -> ReferenceResult:
    """Run `program` for at most `max_steps` lines; start values follow ISA.md's "Start"."""
    n = program.n
    if not 1 <= memory_size <= n:
        raise ValueError(f"memory_size = {memory_size} is not allowed: 1..{n} (n)")
    mem = initial_memory(memory, memory_size, n)
    reg = program.initial_registers(registers)
    c = program.entry_line(entry)
    halted, steps = False, 0
    trace = [] if record_trace else None
    while steps < max_steps:
        # Lines past the program are halt lines.
        ins = program.instructions[c] if c < len(program.instructions) else program.instructions[-1]
        steps += 1
        if trace is not None:
            trace.append(c)
        op, nxt = ins.op, c + 1
        a, b = reg[ins.a], reg[ins.b]
        if op == "halt":
            halted = True
            break
        elif op == "const":
            reg[ins.d] = ins.imm
        elif op == "mov":
            reg[ins.d] = a
        elif op == "inc":
            reg[ins.d] = (a + 1) % n
        elif op == "dec":
            reg[ins.d] = (a - 1) % n
        elif op == "read":
            reg[ins.d] = mem[a] if a < memory_size else 0
        elif op == "write":
            if a < memory_size:
                mem[a] = b
        elif op == "jmp":
            nxt = ins.imm
        elif op == "jez":
            nxt = ins.imm if a == 0 else c + 1
        elif op == "jnz":
            nxt = ins.imm if a != 0 else c + 1
        elif op == "call":
            reg[ins.d] = c + 1
            nxt = ins.imm
        elif op == "ret":
            nxt = a
        else:
            reg[ins.d] = binary_op(op, a, b, n)
        c = nxt
    return ReferenceResult(mem, reg, halted, steps, trace)
