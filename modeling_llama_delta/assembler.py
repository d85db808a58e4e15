"""Assembly text -> `Program` (ISA v1.1, see docs/ISA.md).

The first of the one-way layers: assembly text -> Program -> compiled tensors -> machine.
A `Program` is plain Python data; both executors (the reference interpreter and the
differentiable machine) consume it, and it is the only thing they share.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
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
        super().__init__(f"line {line_number}: {reason}: {excerpt(text.strip())}")


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
            raise ValueError(f"unknown entry function {excerpt(str(entry))}; defined: {sorted(self.functions)}")
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


# Assembly text is ASCII outside comments and character literals (ISA.md "Assembly text"); patterns are ASCII-only so
# that a Unicode digit or letter is never read as one.
_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)[ \t]*:[ \t]*", re.ASCII)
_WORD = re.compile(r"([^ \t]*)([ \t]*)(.*)")  # first word, the blanks after it, the rest
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*", re.ASCII)
_REGISTER = re.compile(r"r([0-9]+)", re.ASCII | re.IGNORECASE)
_DECIMAL = re.compile(r"[+-]?([0-9]+)", re.ASCII)
_HEX = re.compile(r"[+-]?0[xX]([0-9a-fA-F]+)", re.ASCII)
_CHAR = re.compile(r"'(\\.|[^'\\])'")
_ESCAPES = {"n": "\n", "t": "\t", "0": "\0", "\\": "\\", "'": "'"}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_COMMENT_STOPS = re.compile(r"[';#]")
_COMMA_STOPS = re.compile(r"[',]")
_NON_ASCII_STOPS = re.compile(r"['\x80-\U0010ffff]")
MAX_DIGITS = 40  # longest number literal (or register index); a longer one is an error, never an int() conversion
_EXCERPT = 60  # longest quoted text in an error message


def excerpt(text: str, limit: int = _EXCERPT) -> str:
    """`repr` of `text` cut to about `limit` characters, so that a huge bad line gives a short message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def split_lines(source: str) -> list[str]:
    """Lines of assembly text: only "\\n", "\\r\\n" and "\\r" end a line (`str.splitlines` would also break on U+2028,
    U+0085, form feed... inside a comment, hiding an instruction there)."""
    return _LINE_BREAK.split(source)


def _check_characters(line: str) -> str | None:
    """Why `line` holds a character the ISA refuses (anything but printable characters and tabs), or None."""
    if line.replace("\t", " ").isprintable():
        return None
    bad = next(ch for ch in line if ch != "\t" and not ch.isprintable())
    name = unicodedata.name(bad, f"category {unicodedata.category(bad)}")
    return (
        f"character U+{ord(bad):04X} ({name}) is not allowed anywhere in assembly text, comments included "
        "(only printable characters and tabs; a line ends at \\n, \\r\\n or \\r)"
    )


def _literal_end(text: str, start: int) -> int:
    """End of the character literal opening at `text[start]` (a "'"); ValueError for a malformed one."""
    m = _CHAR.match(text, start)
    if m is None:
        raise ValueError(f"malformed character literal at {excerpt(text[start : start + 4])}: expected 'c' or '\\e'")
    body = m.group(1)
    if body.startswith("\\") and body[1] not in _ESCAPES:
        defined = " ".join("\\" + e for e in _ESCAPES)
        raise ValueError(f"undefined escape {body!r} in a character literal (defined: {defined})")
    return m.end()


def _scan(text: str, stops: re.Pattern) -> Iterator[int]:
    """Positions of `stops` characters in `text` outside character literals (a literal is checked as it is passed)."""
    position = 0
    while m := stops.search(text, position):
        if m.group() == "'":
            position = _literal_end(text, m.start())
            continue
        yield m.start()
        position = m.end()


def _strip_comment(line: str) -> str:
    """Cut a ';' / '#' comment, but not inside a character literal such as ';' or '\\\\'."""
    return line[: next(_scan(line, _COMMENT_STOPS), len(line))]


def _check_ascii(code: str) -> None:
    """Refuse non-ASCII characters outside character literals (a fullwidth or Arabic-Indic digit is no digit)."""
    if code.isascii():
        return
    for position in _scan(code, _NON_ASCII_STOPS):
        bad = code[position]
        raise ValueError(
            f"character U+{ord(bad):04X} ({unicodedata.name(bad, '?')}) outside a comment or character literal: "
            "instructions, names and numbers are ASCII"
        )


def _split_operands(text: str) -> list[str]:
    """Split on commas outside character literals ("const r0, ','")."""
    parts, begin = [], 0
    for position in _scan(text, _COMMA_STOPS):
        parts.append(text[begin:position].strip())
        begin = position + 1
    parts.append(text[begin:].strip())
    return [] if parts == [""] else parts


def _checked_int(digits: str, base: int, token: str) -> int:
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"number {excerpt(token)} has {len(digits)} digits; at most {MAX_DIGITS}")
    return int(digits, base)


def parse_register(token: str, num_registers: int) -> int | None:
    """Register index for `r3`, `ra`, `sp` (case-insensitive); None if it is not a register name."""
    t = token.lower()
    if t == "ra":
        return num_registers - 1
    if t == "sp":
        return num_registers - 2
    m = _REGISTER.fullmatch(t)
    return None if m is None else _checked_int(m.group(1), 10, token)


def parse_literal(token: str) -> int | None:
    """Integer value of a decimal, 0x hex or 'c' literal (not reduced); None if not a literal.

    ValueError for a number of more than `MAX_DIGITS` digits or an undefined escape.
    """
    m = _DECIMAL.fullmatch(token)
    if m:
        return (-1 if token.startswith("-") else 1) * _checked_int(m.group(1), 10, token)
    m = _HEX.fullmatch(token)
    if m:
        return (-1 if token.startswith("-") else 1) * _checked_int(m.group(1), 16, token)
    if token.startswith("'") and _literal_end(token, 0) == len(token):
        body = token[1:-1]
        return ord(_ESCAPES[body[1]] if body.startswith("\\") else body)
    return None


def _is_reserved(name: str, num_registers: int) -> bool:
    return parse_register(name, num_registers) is not None or name.lower() in OPERAND_KINDS


def assemble(source: str, n: int, num_registers: int) -> Program:
    """Assemble ISA text for a machine of word size `n` with `num_registers` registers.

    Two passes: the first collects labels and instruction lines, the second resolves operands.
    Every mistake is an `AssemblyError` naming the 1-based line (lines end at "\\n", "\\r\\n" or "\\r").
    """
    if not isinstance(source, str):
        raise TypeError(f"assembly source must be a str, got {type(source).__name__}")
    if n < 2:
        raise ValueError(f"word size n = {n} is not allowed: n >= 2")
    if num_registers < 2:
        raise ValueError(f"num_registers = {num_registers} is not allowed: at least 2 (ra and sp)")

    labels: dict[str, int] = {}
    functions: dict[str, int] = {}
    pending: list[tuple[int, str, str, list[str]]] = []  # (line number, raw text, mnemonic, operands)
    for number, raw in enumerate(split_lines(source), start=1):
        problem = _check_characters(raw)
        if problem:
            raise AssemblyError(number, raw, problem)
        try:
            text = _strip_comment(raw).strip()
            _check_ascii(text)
            _collect_line(number, raw, text, labels, functions, pending, num_registers)
        except ValueError as error:
            raise AssemblyError(number, raw, str(error)) from None

    if len(pending) + 1 > n:
        number, raw = (pending[n - 1][0], pending[n - 1][1]) if len(pending) >= n else (0, "")
        raise AssemblyError(
            number, raw, f"program too long: {len(pending)} instructions + trailing halt > {n} ROM lines"
        )

    instructions = []
    for number, raw, mnemonic, operands in pending:
        try:
            instructions.append(_resolve(number, mnemonic, operands, labels, n, num_registers))
        except ValueError as error:
            raise AssemblyError(number, raw, str(error)) from None
    instructions.append(Instruction(op="halt"))
    return Program(tuple(instructions), n, num_registers, labels, functions, source)


def _collect_line(
    number: int,
    raw: str,
    text: str,
    labels: dict[str, int],
    functions: dict[str, int],
    pending: list[tuple[int, str, str, list[str]]],
    num_registers: int,
) -> None:
    """First pass over one comment-free line: a `.func`, labels, then at most one instruction."""
    head, _, name = _WORD.fullmatch(text).groups()
    if head.lower() == ".func":
        if not _NAME.fullmatch(name):
            raise ValueError(f"'.func' takes one function name, got {excerpt(name)}")
        if parse_register(name, num_registers) is not None:
            raise ValueError(f"function name {name!r} is a register name (a call cannot name it)")
        if name in labels:
            raise ValueError(f"duplicate label {name!r}")
        labels[name] = functions[name] = len(pending)
        return
    position = 0  # labels are consumed by position, so that many labels on one line cost linear time
    while m := _LABEL.match(text, position):
        name = m.group(1)
        if _is_reserved(name, num_registers):
            raise ValueError(f"label {name!r} is a register or mnemonic name")
        if name in labels:
            raise ValueError(f"duplicate label {name!r}")
        labels[name] = len(pending)
        position = m.end()
    text = text[position:]
    if not text:
        return
    mnemonic, _, rest = _WORD.fullmatch(text).groups()
    if mnemonic.startswith("."):
        raise ValueError(f"unknown directive {excerpt(mnemonic)}")
    if mnemonic.lower() not in OPERAND_KINDS:
        raise ValueError(f"unknown mnemonic {excerpt(mnemonic)}")
    pending.append((number, raw, mnemonic.lower(), _split_operands(rest)))


def _resolve(
    number: int, mnemonic: str, operands: list[str], labels: dict[str, int], n: int, num_registers: int
) -> Instruction:
    """Second pass over one instruction: operands to register indices and an immediate reduced mod n."""
    kinds = OPERAND_KINDS[mnemonic]
    if len(operands) != len(kinds):
        raise ValueError(f"'{mnemonic}' takes {len(kinds)} operand(s), got {len(operands)}")
    fields = {"d": 0, "a": 0, "b": 0, "imm": 0}
    for kind, token in zip(kinds, operands, strict=True):
        if kind in "dab":
            reg = parse_register(token, num_registers)
            if reg is None:
                raise ValueError(f"operand {excerpt(token)} of '{mnemonic}' must be a register")
            if reg >= num_registers:
                raise ValueError(f"register {excerpt(token)} out of range r0..r{num_registers - 1}")
            fields[kind] = reg
        else:
            value = parse_literal(token)
            if value is None:
                if parse_register(token, num_registers) is not None:
                    raise ValueError(f"operand {token!r} of '{mnemonic}' must be an immediate")
                if token not in labels:
                    raise ValueError(f"unknown label {excerpt(token)}")
                value = labels[token]
            fields["imm"] = value % n
    if mnemonic == "call":
        fields["d"] = num_registers - 1
    if mnemonic == "ret":
        fields["a"] = num_registers - 1
    return Instruction(op=mnemonic, source_line=number, **fields)


def format_instruction(ins: Instruction, num_registers: int) -> str:
    """Assembly text of one instruction (used by the decompiler and error reports)."""

    def reg(i: int) -> str:
        return "ra" if i == num_registers - 1 else ("sp" if i == num_registers - 2 else f"r{i}")

    values = {"d": reg(ins.d), "a": reg(ins.a), "b": reg(ins.b), "k": str(ins.imm), "L": str(ins.imm)}
    operands = ", ".join(values[k] for k in OPERAND_KINDS[ins.op])
    return f"{ins.op} {operands}".strip()
