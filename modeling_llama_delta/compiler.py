"""Neural compilation: `Program` -> one-hot ROM tensors, and (trained) ROM tensors -> assembly text.

The second of the one-way layers: assembly text -> Program -> compiled tensors -> machine.
Every ROM line holds five distributions (paper §3.2, "a particular probabilistic instruction is a
multinomial distribution"): the op (over `OPCODES`), the registers `a`, `b`, `d` (over `R`), and the
immediate (over `n` values). The machine reads them as ONE tensor, the fields concatenated along the
last axis ("rom", `P×n×F`, `F = len(OPCODES) + 3R + n`), so that a single matmul mixes every field of
every line by the counter. Several programs (the library Λ) stack along a leading `P` axis.

Adaptive compilation (Bunel et al. 2016): `rom_logits` turns a compiled ROM into trainable logits
`sharpness * one_hot`; `rom_probabilities` (a softmax per field) recovers a near-one-hot ROM, and
`decompile` turns any ROM back into assembly text by the arg-max of every field.

`compile_library` is the one driver from a library's text to its Programs and ROM: the config's validation, the
machine, weight initialisation and the load-time library check all take its (cached) result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .assembler import OPCODES, OPERAND_KINDS, AssemblyError, Instruction, Program, assemble, format_instruction

FIELDS: tuple[str, ...] = ("op", "a", "b", "d", "imm")
# Ops whose immediate is a ROM line (the decompiler names these with labels).
_LINE_IMMEDIATE_OPS = frozenset(op for op, kinds in OPERAND_KINDS.items() if "L" in kinds)


@dataclass(frozen=True)
class RomLayout:
    """Where each field lives along the last axis of a ROM tensor for word size `n` and `R` registers."""

    n: int
    num_registers: int

    @property
    def sizes(self) -> tuple[int, ...]:
        r = self.num_registers
        return (len(OPCODES), r, r, r, self.n)  # op, a, b, d, imm

    @property
    def width(self) -> int:
        return sum(self.sizes)

    def slice(self, field: str) -> slice:
        start = sum(self.sizes[: FIELDS.index(field)])
        return slice(start, start + self.sizes[FIELDS.index(field)])

    def split(self, rom: Tensor) -> dict[str, Tensor]:
        """Views of each field: (..., F) -> {field: (..., size)}."""
        if rom.shape[-1] != self.width:
            raise ValueError(
                f"ROM last axis is {rom.shape[-1]}; this layout (n={self.n}, R={self.num_registers}) needs {self.width}"
            )
        return dict(zip(FIELDS, rom.split(self.sizes, dim=-1), strict=True))


def _check_compatible(programs: Sequence[Program]) -> tuple[int, int]:
    if not programs:
        raise ValueError("no programs to compile: give at least one")
    n, r = programs[0].n, programs[0].num_registers
    for i, program in enumerate(programs):
        if (program.n, program.num_registers) != (n, r):
            raise ValueError(
                f"programs[{i}] has n={program.n}, num_registers={program.num_registers}; "
                f"programs[0] has n={n}, num_registers={r}: a ROM stack needs one machine shape"
            )
    return n, r


def compile_fields(programs: Program | Sequence[Program]) -> Tensor:
    """Integer ROM of one or several programs: (P, n, 5) long, the `FIELDS` (op index, a, b, d, imm) of every line.

    Lines past a program are `halt` with every field 0 (the zero row). `compile_programs` one-hot encodes it;
    the discrete machine (`discrete.py`) runs it as it is.
    """
    if isinstance(programs, Program):
        programs = [programs]
    n, _ = _check_compatible(programs)
    codes = torch.zeros(len(programs), n, len(FIELDS), dtype=torch.long)
    for p, program in enumerate(programs):
        for line, ins in enumerate(program.instructions):
            codes[p, line] = torch.tensor([OPCODES.index(ins.op), ins.a, ins.b, ins.d, ins.imm])
    return codes


def compile_programs(programs: Program | Sequence[Program], dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot ROM of one or several programs: (P, n, F), exactly n lines each (lines past a program are halt)."""
    if isinstance(programs, Program):
        programs = [programs]
    codes = compile_fields(programs)  # (P, n, 5)
    layout = RomLayout(*_check_compatible(programs))
    onehots = [torch.nn.functional.one_hot(codes[..., f], size) for f, size in enumerate(layout.sizes)]
    return torch.cat(onehots, dim=-1).to(dtype)  # (P, n, F)


@dataclass(frozen=True)
class CompiledLibrary:
    """A library Λ compiled for one machine shape: program names (the selection axis), Programs, one-hot ROM.

    `rom` (P, n, F) float32 may be shared between callers (`compile_library` caches it): read it, never write it;
    a module that holds it as a buffer clones it.
    """

    names: tuple[str, ...]
    programs: tuple[Program, ...]
    rom: Tensor

    @classmethod
    def from_programs(cls, names: Sequence[str], programs: Sequence[Program]) -> CompiledLibrary:
        return cls(tuple(names), tuple(programs), compile_programs(programs))


def compile_library(sources: Mapping[str, str], n: int, num_registers: int) -> CompiledLibrary:
    """Text -> Program -> ROM for a library (name -> ISA v1 source), in the mapping's order.

    Cached on the sources and the machine shape, so that a config's library is assembled and compiled once however
    many places (validation, the machine, `_init_weights`, `verify_library`) ask for it. Errors name the program,
    the line and the text.
    """
    return _compile_library(tuple(sources.items()), n, num_registers)


@lru_cache(maxsize=16)
def _compile_library(sources: tuple[tuple[str, str], ...], n: int, num_registers: int) -> CompiledLibrary:
    if not sources:
        raise ValueError("delta_programs is empty: the library needs at least one program")
    programs = []
    for name, source in sources:
        try:
            program = assemble(source, n, num_registers)
        except AssemblyError as error:
            raise ValueError(f"delta_programs[{name!r}] does not assemble: {error}") from error
        programs.append(program)
    with torch.device("cpu"):  # a cached value: never a meta tensor, even inside `from_pretrained`'s meta context
        return CompiledLibrary.from_programs([name for name, _ in sources], programs)


def rom_logits(rom: Tensor, sharpness: float = 10.0) -> Tensor:
    """Trainable logits for a compiled ROM: `sharpness * rom` (softmax per field recovers a near-one-hot ROM).

    With sharpness s, each field's top probability is 1 / (1 + (size-1) e^-s), e.g. 0.994 for s = 10 and
    n = 128 immediates; raise s for programs that must run exactly for long.
    """
    return sharpness * rom


def rom_probabilities(logits: Tensor, layout: RomLayout) -> Tensor:
    """A softmax per field: (..., F) logits -> (..., F) distributions (each field sums to 1)."""
    return torch.cat([part.softmax(dim=-1) for part in layout.split(logits).values()], dim=-1)


def decode_rom(rom: Tensor, num_registers: int) -> list[list[Instruction]]:
    """Arg-max instruction of every line: (P, n, F) or (n, F) ROM -> P lists of n instructions.

    Fields an op does not use are set to 0 and `call`/`ret` to `ra` (the assembler's normal form), so a
    decoded program compares equal to the assembled one line by line.
    """
    rom = rom if rom.dim() == 3 else rom[None]
    layout = RomLayout(rom.shape[1], num_registers)
    codes = {field: part.argmax(dim=-1).tolist() for field, part in layout.split(rom.detach()).items()}
    decoded = []
    for p in range(rom.shape[0]):
        lines = []
        for line in range(layout.n):
            op = OPCODES[codes["op"][p][line]]
            kinds = OPERAND_KINDS[op]
            fields = {f: codes[f][p][line] if f in kinds else 0 for f in ("a", "b", "d")}
            imm = codes["imm"][p][line] if ("k" in kinds or "L" in kinds) else 0
            if op == "call":
                fields["d"] = num_registers - 1
            if op == "ret":
                fields["a"] = num_registers - 1
            lines.append(Instruction(op=op, imm=imm, **fields))
        decoded.append(lines)
    return decoded


def decompile(
    rom: Tensor,
    num_registers: int,
    functions: Mapping[str, int] | None = None,
    num_lines: int | None = None,
) -> str:
    """Assembly text of ONE program's ROM ((n, F) distributions or logits; the arg-max of every field).

    Lines after the last non-`halt` line are left out (the assembler appends halts), unless `num_lines`
    asks for exactly that many lines. Jump/call targets get labels `L<line>`; `functions` (name -> line)
    become `.func` entries. Each line ends with a `; line` comment. `assemble(decompile(rom), n, R)`
    compiles back to the arg-max ROM (`call`/`ret` use `ra`, as the ISA fixes).
    """
    if rom.dim() != 2:
        raise ValueError(f"decompile takes one program's ROM (n, F); got shape {tuple(rom.shape)}")
    lines = decode_rom(rom, num_registers)[0]
    n = len(lines)
    functions = dict(functions or {})
    if num_lines is None:
        num_lines = max((i + 1 for i, ins in enumerate(lines) if ins.op != "halt"), default=0)
        num_lines = max([num_lines, *functions.values()])  # a `.func` entry needs its line in the text
    if not 0 <= num_lines <= n - 1:
        raise ValueError(f"num_lines = {num_lines} is out of range 0..{n - 1} (the assembler appends a halt)")
    # A label can name a line of the text or the line right after it (the appended halt).
    targets = {ins.imm for ins in lines[:num_lines] if ins.op in _LINE_IMMEDIATE_OPS and ins.imm <= num_lines}
    names = {line: f"L{line}" for line in sorted(targets)}
    names.update({line: name for name, line in functions.items()})

    text = []
    for line in range(num_lines + 1):
        for name, at in functions.items():
            if at == line:
                text.append(f".func {name}")
        if line in names and names[line] not in functions:
            text.append(f"{names[line]}:")
        if line == num_lines:
            break
        ins = lines[line]
        body = format_instruction(ins, num_registers)
        if ins.op in _LINE_IMMEDIATE_OPS and ins.imm in names:
            body = body[: body.rfind(str(ins.imm))] + names[ins.imm]  # the target is the last operand
        text.append(f"    {body:<28}; {line}")
    return "\n".join(text) + "\n"
