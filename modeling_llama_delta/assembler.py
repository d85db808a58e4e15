"""Assembly text -> `Program` (ISA v1, see design/ISA.md).

The first of the one-way layers: assembly text -> Program -> compiled tensors -> machine.
A `Program` is plain Python data; both executors (the reference interpreter and the
differentiable machine) consume it, and it is the only thing they share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Operand kinds: "d" destination register, "a"/"b" source registers, "k" an immediate value,
# "L" an immediate line (same encoding as "k"; the name only documents intent).
OPERAND_KINDS: dict[str, tuple[str, ...]] = {
    "halt": (),
    "const": ("d", "k"),
    "mov": ("d", "a"),
    "inc": ("d", "a"),
    "dec": ("d", "a"),
    "add": ("d", "a", "b"),
    "sub": ("d", "a", "b"),
    "mul": ("d", "a", "b"),
    "div": ("d", "a", "b"),
    "mod": ("d", "a", "b"),
    "min": ("d", "a", "b"),
    "max": ("d", "a", "b"),
    "eq": ("d", "a", "b"),
    "lt": ("d", "a", "b"),
    "read": ("d", "a"),
    "write": ("a", "b"),
    "jmp": ("L",),
    "jez": ("a", "L"),
    "jnz": ("a", "L"),
    "call": ("L",),
    "ret": (),
}
OPCODES: tuple[str, ...] = tuple(OPERAND_KINDS)
OPCODE_INDEX: dict[str, int] = {name: i for i, name in enumerate(OPCODES)}
# Binary ALU operations, in the order every ALU backend returns them.
BINARY_OPS: tuple[str, ...] = ("add", "sub", "mul", "div", "mod", "min", "max", "eq", "lt")


class AssemblyError(ValueError):
    """A mistake in assembly text; the message names the line number and the offending text."""

    def __init__(self, line_number: int, text: str, reason: str):
        self.line_number = line_number
        self.text = text
        self.reason = reason
        super().__init__(f"line {line_number}: {reason}: {text.strip()!r}")


@dataclass(frozen=True)
class Instruction:
    """One ROM line. Unused register fields are 0; `imm` is already reduced mod n.

    `ret` is stored as "jump to the value of register `a`" with `a` = ra, and `call` writes
    c+1 into `d` = ra: the machine then needs no special link-register wiring.
    """

    op: str
    d: int = 0
    a: int = 0
    b: int = 0
    imm: int = 0
    source_line: int = 0  # 1-based line in the assembly text; 0 for the appended halt


@dataclass(frozen=True)
class Program:
    """An assembled program: instructions from line 0, with the trailing `halt` appended."""

    instructions: tuple[Instruction, ...]
    n: int
    num_registers: int
    labels: dict[str, int] = field(default_factory=dict)
    functions: dict[str, int] = field(default_factory=dict)  # `.func` entry points
    source: str = ""

    @property
    def halt_line(self) -> int:
        """Line of the appended trailing `halt` (the start value of `ra`)."""
        return len(self.instructions) - 1

    def entry_line(self, entry: str | None) -> int:
        if entry is None:
            return 0
        if entry not in self.functions:
            raise ValueError(f"unknown entry function {entry!r}; defined: {sorted(self.functions)}")
        return self.functions[entry]

    def initial_registers(self, registers=()) -> list[int]:
        """ISA start values: 0 everywhere, `ra` = the trailing halt; given values override."""
        if len(registers) > self.num_registers:
            raise ValueError(f"{len(registers)} register values given; the machine has {self.num_registers}")
        values = [0] * self.num_registers
        values[self.num_registers - 1] = self.halt_line
        for i, v in enumerate(registers):
            values[i] = _check_value(v, self.n, f"registers[{i}]")
        return values


def _check_value(value, n: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise ValueError(f"{where} = {value!r} is not an integer in 0..{n - 1}")
    return value


def initial_memory(memory, memory_size: int, n: int) -> list[int]:
    """ISA start values for memory: given cells, then zeros, checked against the machine."""
    if len(memory) > memory_size:
        raise ValueError(f"{len(memory)} memory values given; the machine has {memory_size} cells")
    return [_check_value(v, n, f"memory[{i}]") for i, v in enumerate(memory)] + [0] * (memory_size - len(memory))


_LABEL = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*:(.*)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_CHAR = re.compile(r"^'(\\.|[^'\\])'$")
_ESCAPES = {"n": "\n", "t": "\t", "0": "\0", "\\": "\\", "'": "'"}


def _strip_comment(line: str) -> str:
    """Cut ';' / '#' comments, but not inside a character literal such as ';'."""
    in_char = False
    for i, ch in enumerate(line):
        if ch == "'" and (i == 0 or line[i - 1] != "\\"):
            in_char = not in_char
        elif ch in ";#" and not in_char:
            return line[:i]
    return line


def _split_operands(text: str) -> list[str]:
    """Split on commas outside character literals ("const r0, ','")."""
    parts, current, in_char = [], "", False
    for i, ch in enumerate(text):
        if ch == "'" and (i == 0 or text[i - 1] != "\\"):
            in_char = not in_char
        if ch == "," and not in_char:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [] if parts == [""] else parts


def parse_register(token: str, num_registers: int) -> int | None:
    """Register index for `r3`, `ra`, `sp` (case-insensitive); None if it is not a register name."""
    t = token.lower()
    if t == "ra":
        return num_registers - 1
    if t == "sp":
        return num_registers - 2
    if re.fullmatch(r"r\d+", t):
        return int(t[1:])
    return None


def parse_literal(token: str) -> int | None:
    """Integer value of a decimal, 0x hex or 'c' literal (not reduced); None if not a literal."""
    if re.fullmatch(r"[+-]?\d+", token):
        return int(token)
    if re.fullmatch(r"[+-]?0[xX][0-9a-fA-F]+", token):
        return int(token, 16)
    m = _CHAR.match(token)
    if m:
        body = m.group(1)
        return ord(_ESCAPES.get(body[1], body[1]) if body.startswith("\\") else body)
    return None


def assemble(source: str, n: int, num_registers: int) -> Program:
    """Assemble ISA v1 text for a machine of word size `n` with `num_registers` registers.

    Two passes: the first collects labels and instruction lines, the second resolves operands.
    """
    if n < 2:
        raise ValueError(f"word size n = {n} is not allowed: n >= 2")
    if num_registers < 2:
        raise ValueError(f"num_registers = {num_registers} is not allowed: at least 2 (ra and sp)")

    labels: dict[str, int] = {}
    functions: dict[str, int] = {}
    pending: list[tuple[int, str, str, list[str]]] = []  # (line number, raw text, mnemonic, operands)
    for number, raw in enumerate(source.splitlines(), start=1):
        text = _strip_comment(raw).strip()
        if text.lower().startswith(".func"):
            parts = text.split()
            if len(parts) != 2 or not _NAME.match(parts[1]):
                raise AssemblyError(number, raw, "'.func' takes one function name")
            name = parts[1]
            if name in labels:
                raise AssemblyError(number, raw, f"duplicate label {name!r}")
            labels[name] = functions[name] = len(pending)
            continue
        while True:
            m = _LABEL.match(text)
            if not m:
                break
            name = m.group(1)
            if parse_register(name, num_registers) is not None or name.lower() in OPERAND_KINDS:
                raise AssemblyError(number, raw, f"label {name!r} is a register or mnemonic name")
            if name in labels:
                raise AssemblyError(number, raw, f"duplicate label {name!r}")
            labels[name] = len(pending)
            text = m.group(2).strip()
        if not text:
            continue
        if text.startswith("."):
            raise AssemblyError(number, raw, f"unknown directive {text.split()[0]!r}")
        mnemonic, _, rest = text.partition(" ")
        mnemonic = mnemonic.lower()
        if mnemonic not in OPERAND_KINDS:
            raise AssemblyError(number, raw, f"unknown mnemonic {mnemonic!r}")
        pending.append((number, raw, mnemonic, _split_operands(rest)))

    if len(pending) + 1 > n:
        number, raw = (pending[n - 1][0], pending[n - 1][1]) if len(pending) >= n else (0, "")
        raise AssemblyError(
            number, raw, f"program too long: {len(pending)} instructions + trailing halt > {n} ROM lines"
        )

    instructions = []
    for number, raw, mnemonic, operands in pending:
        kinds = OPERAND_KINDS[mnemonic]
        if len(operands) != len(kinds):
            raise AssemblyError(number, raw, f"'{mnemonic}' takes {len(kinds)} operand(s), got {len(operands)}")
        fields = {"d": 0, "a": 0, "b": 0, "imm": 0}
        for kind, token in zip(kinds, operands, strict=True):
            if kind in "dab":
                reg = parse_register(token, num_registers)
                if reg is None:
                    raise AssemblyError(number, raw, f"operand {token!r} of '{mnemonic}' must be a register")
                if reg >= num_registers:
                    raise AssemblyError(number, raw, f"register {token!r} out of range r0..r{num_registers - 1}")
                fields[kind] = reg
            else:
                value = parse_literal(token)
                if value is None:
                    if parse_register(token, num_registers) is not None:
                        raise AssemblyError(number, raw, f"operand {token!r} of '{mnemonic}' must be an immediate")
                    if token not in labels:
                        raise AssemblyError(number, raw, f"unknown label {token!r}")
                    value = labels[token]
                fields["imm"] = value % n
        if mnemonic == "call":
            fields["d"] = num_registers - 1
        if mnemonic == "ret":
            fields["a"] = num_registers - 1
        instructions.append(Instruction(op=mnemonic, source_line=number, **fields))
    instructions.append(Instruction(op="halt"))
    return Program(tuple(instructions), n, num_registers, labels, functions, source)


def format_instruction(ins: Instruction, num_registers: int) -> str:
    """Assembly text of one instruction (used by the decompiler and error reports)."""

    def reg(i: int) -> str:
        return "ra" if i == num_registers - 1 else ("sp" if i == num_registers - 2 else f"r{i}")

    values = {"d": reg(ins.d), "a": reg(ins.a), "b": reg(ins.b), "k": str(ins.imm), "L": str(ins.imm)}
    operands = ", ".join(values[k] for k in OPERAND_KINDS[ins.op])
    return f"{ins.op} {operands}".strip()
