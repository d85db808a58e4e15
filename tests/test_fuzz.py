"""Fuzzing every text / field input (hypothesis): each gives the reference's result or an error naming where.

- Assembly text: generated valid programs, written with random spelling (case, blanks, tabs, literal forms, labels,
  comments of any printable text), assemble to the instructions they were generated from and run the same on the
  reference after a decompile round trip; a comment of arbitrary text appended to a line changes nothing or is an
  error naming that line; mutated and random text assembles or raises `AssemblyError` naming a line that exists.
- Configs: random `delta_*` field dicts build a config or raise ValueError naming a field, never another error.
- Conformance cases: random case objects and lines each get one JSON answer: results (soft = reference) or an error
  that names the case's field, source line or input line.
"""

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeling_llama_delta import LlamaDeltaConfig
from modeling_llama_delta.assembler import OPERAND_KINDS, AssemblyError, Instruction, assemble, format_instruction
from modeling_llama_delta.conformance import CASE_FIELDS, run_case, run_cases
from modeling_llama_delta.library import LIBRARY
from modeling_llama_delta.reference import run_reference
from tests.helpers.configs import TINY_LLAMA

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None)
FUZZ_SLOWER = settings(FUZZ, max_examples=30, suppress_health_check=[HealthCheck.too_slow])
MNEMONICS = tuple(OPERAND_KINDS)
# Printable comment text, with the characters the assembler treats specially inside a comment.
COMMENT_TEXT = st.text(
    st.one_of(st.characters(codec="utf-8").filter(str.isprintable), st.sampled_from(";#',\\:\t١２é")), max_size=12
)


def line_count(source: str) -> int:
    return len(re.split(r"\r\n|\r|\n", source))


@st.composite
def programs(draw):
    """(source text, n, registers, expected instructions) for a random valid program, spelled at random."""
    n = draw(st.sampled_from([8, 16, 64, 128]))
    registers = draw(st.integers(2, 8))
    length = draw(st.integers(0, min(n - 1, 12)))
    label_lines = sorted(draw(st.sets(st.integers(0, length), max_size=3)))
    labels = {f"L{line}_{i}": line for i, line in enumerate(label_lines)}

    def register(index: int) -> str:
        spellings = [f"r{index}", f"R{index}", f"r0{index}"]
        spellings += ["ra", "RA"] if index == registers - 1 else []
        spellings += ["sp", "Sp"] if index == registers - 2 else []
        return draw(st.sampled_from(spellings))

    def immediate() -> tuple[str, int]:
        if labels and draw(st.booleans()):
            name = draw(st.sampled_from(sorted(labels)))
            return name, labels[name] % n
        value = draw(st.integers(-300, 300))
        forms = [str(value), f"+{value}" if value >= 0 else str(value)]
        forms.append(f"0x{value:x}" if value >= 0 else f"-0X{-value:X}")
        if 32 <= value < 127 and chr(value) not in "'\\":
            forms.append(f"'{chr(value)}'")
        forms += [text for text, code in {"'\\n'": 10, "'\\t'": 9, "'\\\\'": 92, "'\\''": 39}.items() if code == value]
        return draw(st.sampled_from(forms)), value % n

    blank = st.sampled_from([" ", "\t", "  ", " \t"])
    lines, expected = [], []
    for line in range(length):
        op = draw(st.sampled_from(MNEMONICS))
        fields, spelled = {"d": 0, "a": 0, "b": 0, "imm": 0}, []
        for kind in OPERAND_KINDS[op]:
            if kind in "dab":
                fields[kind] = draw(st.integers(0, registers - 1))
                spelled.append(register(fields[kind]))
            else:
                text, fields["imm"] = immediate()
                spelled.append(text)
        if op == "call":
            fields["d"] = registers - 1
        if op == "ret":
            fields["a"] = registers - 1
        expected.append(Instruction(op=op, source_line=0, **fields))
        here = "".join(f"{name}:{draw(blank)}" for name, at in labels.items() if at == line)
        mnemonic = draw(st.sampled_from([op, op.upper()]))
        operands = ("," + draw(blank)).join(spelled)
        comment = f"{draw(blank)}{draw(st.sampled_from(';#'))}{draw(COMMENT_TEXT)}" if draw(st.booleans()) else ""
        lines.append(f"{draw(blank)}{here}{mnemonic}{draw(blank) if operands else ''}{operands}{comment}")
    tail = "".join(f"{name}:" for name, at in labels.items() if at == length)
    lines.append(tail)
    source = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    expected.append(Instruction(op="halt"))
    return source, n, registers, expected


def without_lines(instructions) -> list[tuple]:
    return [(i.op, i.d, i.a, i.b, i.imm) for i in instructions]


@FUZZ
@given(programs(), st.integers(0, 2**31))
def test_generated_programs_assemble_as_generated_and_round_trip(generated, seed):
    source, n, registers, expected = generated
    program = assemble(source, n, registers)
    assert without_lines(program.instructions) == without_lines(expected)
    decompiled = "\n".join(format_instruction(ins, registers) for ins in program.instructions[:-1])
    again = assemble(decompiled, n, registers)
    assert without_lines(again.instructions) == without_lines(program.instructions)
    start = [(seed >> (4 * i)) % n for i in range(registers - 1)]
    first, second = (run_reference(p, min(n, 8), [seed % n], start, max_steps=40) for p in (program, again))
    assert (first.memory, first.registers, first.halted, first.steps) == (
        second.memory,
        second.registers,
        second.halted,
        second.steps,
    )


@FUZZ
@given(programs(), st.integers(0, 100), st.text(st.characters(exclude_characters="\r\n"), max_size=16))
def test_a_comment_never_changes_the_program(generated, where, text):
    """Arbitrary text after ';' on a line: the same instructions, or an error naming that very line."""
    source, n, registers, _ = generated
    lines = re.split(r"\r\n|\r|\n", source)
    target = where % len(lines)
    lines[target] += " ;" + text
    try:
        program = assemble("\n".join(lines), n, registers)
    except AssemblyError as error:
        assert error.line_number == target + 1, (error, target)
        return
    assert without_lines(program.instructions) == without_lines(assemble(source, n, registers).instructions)


TRICKY = st.sampled_from(list("\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\u202e\u200b\xa0\t \r\n;#',\\:.-+0179xXrRa١２²"))
MUTATION = st.tuples(st.integers(0, 10_000), st.sampled_from(["insert", "delete", "replace"]), TRICKY)


def check_assembles_or_names_a_line(source: str, n: int, registers: int) -> None:
    try:
        program = assemble(source, n, registers)
    except AssemblyError as error:
        assert 1 <= error.line_number <= line_count(source), (error, source)
        assert str(error).startswith(f"line {error.line_number}: ")
        assert len(str(error)) < 600
        return
    result = run_reference(program, min(n, 8), max_steps=30)  # the reference runs whatever assembled
    assert result.steps <= 30 and len(result.registers) == registers


@FUZZ
@given(programs(), st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_programs_assemble_or_name_a_line(generated, mutations):
    source, n, registers, _ = generated
    for position, kind, character in mutations:
        at = position % (len(source) + 1)
        if kind == "insert":
            source = source[:at] + character + source[at:]
        elif kind == "delete":
            source = source[:at] + source[at + 1 :]
        else:
            source = source[:at] + character + source[at + 1 :]
    check_assembles_or_names_a_line(source, n, registers)


@FUZZ
@given(st.text(st.one_of(st.characters(), TRICKY), max_size=80), st.integers(2, 64), st.integers(2, 8))
def test_random_text_assembles_or_names_a_line(source, n, registers):
    check_assembles_or_names_a_line(source, n, registers)


# ---- configs ----

DELTA_FIELDS = sorted(LlamaDeltaConfig.delta_fields())
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.integers(-3, 300),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.sampled_from(["table", "structured", "circuit", "slots", "tokens", "memory", "digits", "no", "float7"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=6,
)
FIELD_NAMES = st.one_of(
    st.sampled_from(DELTA_FIELDS),
    st.sampled_from(["delta_wordsize", "delta_alu_backend", "delta_program"]),
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).map(lambda s: "delta_" + s),
)
PROGRAM_DICTS = st.dictionaries(
    st.one_of(st.sampled_from(sorted(LIBRARY)), st.text(max_size=5), st.integers(0, 3)),
    st.one_of(st.sampled_from(sorted(LIBRARY.values())), JSON_VALUES),
    max_size=3,
)


@FUZZ_SLOWER
@given(
    st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=4),
    st.one_of(st.none(), PROGRAM_DICTS, JSON_VALUES),
    st.sampled_from([None, "float32", "bfloat16", "float7", "auto", ""]),
)
def test_random_configs_build_or_name_the_field(fields, programs_value, dtype):
    if programs_value is not None:
        fields["delta_programs"] = programs_value
    if dtype is not None:
        fields["dtype"] = dtype
    try:
        LlamaDeltaConfig(**TINY_LLAMA, **fields)
    except ValueError as error:
        mentioned = set(re.findall(r"\b(delta_\w+|dtype)\b", str(error)))
        assert mentioned & (set(fields) | set(DELTA_FIELDS)), error


# ---- conformance cases ----

SMALL_SOURCES = st.one_of(
    programs().map(lambda generated: generated[0]),
    st.sampled_from(["halt", "const r0, 3\nret", "loop: jmp loop", "add r0, r0, r1\nfrob", ".func g\nret"]),
)
CASE_VALUES = {
    "id": st.one_of(st.text(max_size=4), st.integers(), st.none()),
    "source": st.one_of(SMALL_SOURCES, JSON_VALUES),
    "n": st.one_of(st.sampled_from([8, 16]), JSON_VALUES),
    "num_registers": st.one_of(st.integers(2, 8), JSON_VALUES),
    "memory_size": st.one_of(st.integers(1, 8), JSON_VALUES),
    "memory": st.one_of(st.lists(st.integers(0, 7), max_size=4), JSON_VALUES),
    "registers": st.one_of(st.lists(st.integers(0, 7), max_size=4), JSON_VALUES),
    "entry": st.one_of(st.none(), st.just("g"), JSON_VALUES),
    "max_steps": st.one_of(st.integers(0, 40), JSON_VALUES),
}
CASES = st.fixed_dictionaries(
    {},
    optional={**CASE_VALUES, "max_step": JSON_VALUES, "memory_sizes": JSON_VALUES},
)
MACHINES: dict = {}  # Δ machines shared across examples, as run_cases shares them across lines


def check_answer(answer: dict, case) -> None:
    json.dumps(answer)  # every answer is a JSON line
    assert set(answer) >= {"id", "error"}
    if answer["error"] is not None:
        assert isinstance(answer["error"], str) and "reference" not in answer
        places = ["line ", "field '", "a case must be", "memory", "registers", "entry", "values given"]
        assert any(place in answer["error"] for place in places), answer["error"]
        return
    assert isinstance(case, dict)
    reference, soft = answer["reference"], answer["soft"]
    assert (soft["memory"], soft["registers"], soft["halted"]) == (
        reference["memory"],
        reference["registers"],
        reference["halted"],
    )


@FUZZ_SLOWER
@given(CASES)
def test_random_cases_get_a_result_or_an_error_naming_the_field(case):
    check_answer(run_case(case, machines=MACHINES), case)


@FUZZ
@given(st.lists(st.one_of(CASES.map(json.dumps), st.text(max_size=12), JSON_VALUES.map(json.dumps)), max_size=5))
def test_every_input_line_gets_one_answer(lines):
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    answers = list(run_cases(lines))
    assert len(answers) == sum(1 for line in lines if line.strip())
    for answer in answers:
        check_answer(answer, None if answer["error"] else {})


def test_case_fields_are_the_documented_ones():
    assert set(CASE_FIELDS) == set(CASE_VALUES)
