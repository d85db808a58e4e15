"""ISA v1 assembler and reference interpreter: one table of cases, plus every error path."""

import pytest

from modeling_llama_delta.assembler import OPERAND_KINDS, AssemblyError, assemble, format_instruction
from modeling_llama_delta.reference import binary_op, run_reference

N, R = 16, 4

# (name, source, memory, registers, entry, expected registers or memory check, expected steps)
CASES = [
    ("const", "const r0, 5", [], [], None, {"r": [5, 0, 0, 1]}, 2),
    ("negative literal wraps", "const r0, -1", [], [], None, {"r": [15, 0, 0, 1]}, 2),
    ("hex and char", "const r0, 0x0f\nconst r1, 'A'", [], [], None, {"r": [15, 65 % N, 0, 2]}, 3),
    ("mov inc dec", "mov r1, r0\ninc r2, r0\ndec r0, r0", [], [0], None, {"r": [15, 0, 1, 3]}, 4),
    ("add wraps", "add r0, r0, r1", [], [9, 8], None, {"r": [1, 8, 0, 1]}, 2),
    ("div by zero", "div r2, r0, r1\nmod r1, r0, r1", [], [7, 0], None, {"r": [7, 0, 0, 2]}, 3),
    ("eq lt", "eq r2, r0, r1\nlt r0, r0, r1", [], [3, 4], None, {"r": [1, 4, 0, 2]}, 3),
    ("read write", "read r1, r0\nwrite r0, r0", [5, 6], [1], None, {"m": [5, 1, 0, 0]}, 3),
    ("write past memory is ignored", "write r0, r1", [], [9, 3], None, {"m": [0, 0, 0, 0]}, 2),
    ("read past memory gives 0", "read r1, r0", [], [9, 3], None, {"r": [9, 0, 0, 1]}, 2),
    ("jez taken", "jez r0, end\nconst r1, 1\nend: halt", [], [], None, {"r": [0, 0, 0, 3]}, 2),
    ("jnz loop", "loop: dec r0, r0\njnz r0, loop", [], [3], None, {"r": [0, 0, 0, 2]}, 7),
    ("call ret", "call f\nhalt\n.func f\nconst r0, 9\nret", [], [], None, {"r": [9, 0, 0, 1]}, 4),
    ("entry ret halts", "const r0, 1\nhalt\n.func g\nconst r1, 7\nret", [], [], "g", {"r": [0, 7, 0, 4]}, 3),
    ("ra and sp aliases", "mov sp, ra", [], [], None, {"r": [0, 0, 1, 1]}, 2),
    ("label as immediate", "const r0, end\nend: halt", [], [], None, {"r": [1, 0, 0, 2]}, 2),
]


@pytest.mark.parametrize("name,source,memory,registers,entry,expected,steps", CASES, ids=[c[0] for c in CASES])
def test_reference_cases(name, source, memory, registers, entry, expected, steps):
    program = assemble(source, N, R)
    result = run_reference(program, 4, memory, registers, entry=entry, max_steps=100)
    assert result.halted
    assert result.steps == steps
    if "r" in expected:
        assert result.registers == expected["r"]
    if "m" in expected:
        assert result.memory == expected["m"]


def test_max_steps_stops_an_infinite_loop():
    result = run_reference(assemble("loop: jmp loop", N, R), 4, max_steps=50, record_trace=True)
    assert not result.halted and result.steps == 50 and set(result.trace) == {0}


def test_binary_op_definitions():
    expected = {"add": 2, "sub": 4, "mul": 5, "div": 2, "mod": 1, "min": 3, "max": 7, "eq": 0, "lt": 0}
    assert {op: binary_op(op, 7, 3, 8) for op in expected} == expected


ERRORS = [
    ("frob r0", "unknown mnemonic"),
    ("add r0, r1", "takes 3 operand"),
    ("add r0, r1, 5", "must be a register"),
    ("const 5, r0", "must be a register"),
    ("const r0, r1", "must be an immediate"),
    ("jmp nowhere", "unknown label"),
    ("x: halt\nx: halt", "duplicate label"),
    ("mov r4, r0", "out of range"),
    (".func", "'.func' takes one function name"),
    (".data 3", "unknown directive"),
    ("\n".join(["inc r0, r0"] * N), "program too long"),
]


@pytest.mark.parametrize("source,reason", ERRORS)
def test_errors_name_the_line_and_text(source, reason):
    with pytest.raises(AssemblyError) as info:
        assemble(source, N, R)
    message = str(info.value)
    assert reason in message
    assert f"line {info.value.line_number}:" in message and info.value.line_number >= 1
    assert info.value.text.strip() in message


def test_comments_and_char_literals_with_separators():
    program = assemble("const r0, ';' ; a comment\nconst r1, ',' # another", 128, R)
    assert [i.imm for i in program.instructions[:2]] == [ord(";"), ord(",")]


def test_program_of_exactly_n_lines_fits():
    program = assemble("\n".join(["inc r0, r0"] * (N - 1)), N, R)
    assert len(program.instructions) == N and program.instructions[-1].op == "halt"


def test_bad_start_values_are_refused():
    program = assemble("halt", N, R)
    with pytest.raises(ValueError, match=r"memory\[1\] = 16 is not an integer in 0..15"):
        run_reference(program, 4, memory=[0, 16])
    with pytest.raises(ValueError, match="5 register values given"):
        run_reference(program, 4, registers=[0] * 5)
    with pytest.raises(ValueError, match="unknown entry function 'f'"):
        run_reference(program, 4, entry="f")
    with pytest.raises(ValueError, match="memory_size = 17"):
        run_reference(program, 17)


def test_format_instruction_round_trips():
    lines = [
        f"{op} " + ", ".join({"d": "r1", "a": "r2", "b": "sp", "k": "3", "L": "0"}[k] for k in kinds)
        for op, kinds in OPERAND_KINDS.items()
        if op not in ("call", "ret")
    ]
    program = assemble("\n".join(lines), 64, R)
    text = "\n".join(format_instruction(i, R) for i in program.instructions[:-1])
    assert assemble(text, 64, R).instructions == program.instructions
