"""Random ISA v1 programs as assembly text: every opcode, labels, loops, calls, reads/writes, every literal form."""

import random

from modeling_llama_delta.assembler import OPCODES, OPERAND_KINDS


def _literal(rng: random.Random, value: int) -> str:
    """An immediate in one of the ISA's literal forms (reduced mod n by the assembler)."""
    form = rng.randrange(4)
    if form == 1:
        return str(value - rng.choice([0, 1, 2]) * 256)  # negative or multiple wraps
    if form == 2:
        return hex(value)
    if form == 3 and 33 <= value < 127 and chr(value) not in "'\\;#,":
        return f"'{chr(value)}'"
    return str(value)


_CONTROL_OPS = ("halt", "jmp", "jez", "jnz", "call", "ret")
_DATA_OPS = tuple(op for op in OPCODES if op not in _CONTROL_OPS)


def random_program(rng: random.Random, n: int, num_registers: int, length: int) -> str:
    """Random ISA v1 assembly of at most `length` instructions (< n), as text.

    A main part of blocks (any single instruction, including jumps to labels and stray ret/halt;
    counted loops; calls to functions), a `halt`, then the functions, each ending in `ret`. Registers
    appear as rN, RN, sp and ra; immediates in every literal form.
    """
    lines: list[str] = []
    functions: list[list[str]] = []
    count = 0  # instructions emitted

    def register() -> str:
        index = rng.randrange(num_registers)
        if index == num_registers - 1 and rng.random() < 0.5:
            return "ra"
        if index == num_registers - 2 and rng.random() < 0.5:
            return "sp"
        return rng.choice([f"r{index}", f"R{index}"])

    def instruction(op: str, target: str | None = None) -> str:
        operands = []
        for kind in OPERAND_KINDS[op]:
            if kind in "dab":
                operands.append(register())
            elif kind == "L":
                operands.append(target if target is not None else str(rng.randrange(n)))
            else:
                operands.append(_literal(rng, rng.randrange(n)))
        mnemonic = op.upper() if rng.random() < 0.1 else op
        return f"    {mnemonic} {', '.join(operands)}".rstrip()

    def data_instructions(k: int) -> list[str]:
        return [instruction(rng.choice(_DATA_OPS)) for _ in range(k)]

    labels: list[str] = []
    while count < length - 1:
        kind = rng.random()
        room = length - 1 - count
        if kind < 0.25 and room >= 4:  # counted loop: const c, k / body / dec c / jnz c
            body = data_instructions(rng.randint(1, min(3, room - 3)))
            counter = f"r{rng.randrange(num_registers - 2)}"
            label = f"loop{len(labels)}"
            labels.append(label)
            lines += [
                f"    const {counter}, {rng.randint(1, 4)}",
                f"{label}:",
                *body,
                f"    dec {counter}, {counter}",
                f"    jnz {counter}, {label}",
            ]
            count += len(body) + 3
        elif kind < 0.4 and room >= 4:  # call a function defined after the main part
            body = data_instructions(rng.randint(1, min(2, room - 3)))
            name = f"f{len(functions)}"
            functions.append([f"{name}:", *body, "    ret"])
            lines.append(instruction("call", name))
            count += len(body) + 2
        else:  # any instruction; jumps go to a known label or a random line
            op = rng.choice(_DATA_OPS) if rng.random() < 0.85 else rng.choice(_CONTROL_OPS)
            target = rng.choice(labels) if labels and rng.random() < 0.7 else None
            lines.append(instruction(op, target))
            count += 1
        if rng.random() < 0.2:
            label = f"here{len(labels)}"
            labels.append(label)
            lines.append(f"{label}:  ; a label alone on its line")
    lines.append("    halt")
    for function in functions:
        lines += function
    return "\n".join(lines)
