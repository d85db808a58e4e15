"""Bad input gets a clear error naming the line / field / case (issue 15's findings, one regression test each)."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_llama_delta import LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA
from modeling_llama_delta.assembler import MAX_DIGITS, AssemblyError, assemble
from modeling_llama_delta.conformance import run_case, run_cases
from modeling_llama_delta.library import LIBRARY
from tests.helpers.configs import TINY_LLAMA

N, R = 128, 8


def assembly_error(source: str, n: int = N, registers: int = R) -> AssemblyError:
    with pytest.raises(AssemblyError) as info:
        assemble(source, n, registers)
    assert str(info.value).startswith(f"line {info.value.line_number}: ")
    return info.value


# Characters that some reader takes as a line break, or that hide text: never allowed, not even in a comment.
HIDING = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x00", "\u202e", "\u200b", "\ufeff"]


@pytest.mark.parametrize("character", HIDING, ids=[f"U+{ord(c):04X}" for c in HIDING])
def test_no_instruction_hides_in_a_comment(character):
    source = f".func f\n const r0, 1 ; note{character}const r0, 7\n ret"
    error = assembly_error(source)
    assert error.line_number == 2 and f"U+{ord(character):04X}" in str(error)


def test_only_newline_crlf_and_cr_end_a_line():
    program = assemble("const r0, 1\r\nconst r1, 2\rconst r2, 3\n\nconst r3, 4\n", N, R)
    assert [ins.source_line for ins in program.instructions[:-1]] == [1, 2, 3, 5]
    assert assembly_error("halt\r\nhalt\rhalt\nfrob r0").line_number == 4


@pytest.mark.parametrize("source", ["const r0, ١٢", "mov r١, r0", "const r0, １２", "const r0, ²", "jmp lóop"])
def test_non_ascii_digits_and_names_are_refused(source):
    error = assembly_error(f"halt\n{source}")
    assert error.line_number == 2 and "outside a comment or character literal" in str(error)


def test_unicode_in_comments_and_character_literals_is_fine():
    program = assemble("const r0, 'é' ; ≥ ١٢ — fine here\nconst r1, ';'", 256, R)
    assert [ins.imm for ins in program.instructions[:2]] == [ord("é"), ord(";")]


def test_escapes_are_the_defined_ones_only():
    escapes = {"'\\n'": 10, "'\\t'": 9, "'\\0'": 0, "'\\\\'": 92, "'\\''": 39}
    program = assemble("\n".join(f"const r0, {text}" for text in escapes), N, R)
    assert [ins.imm for ins in program.instructions[:-1]] == list(escapes.values())
    for bad in ("'\\q'", "'\\x'", "'\\1'"):
        assert "undefined escape" in str(assembly_error(f"const r0, {bad}"))
    for bad in ("''", "'ab'", "'", "'a"):
        assert "malformed character literal" in str(assembly_error(f"const r0, {bad}"))


def test_backslash_literal_before_a_comment():
    assert assemble("const r0, '\\\\' ; a backslash", N, R).instructions[0].imm == 92
    assert assemble("const r0, '\\'' # a quote", N, R).instructions[0].imm == 39


def test_tab_is_a_blank():
    tabbed = assemble("add\tr0,\tr0,r1\nloop:\tjmp\tloop", N, R).instructions
    spaced = assemble("add r0, r0, r1\nloop: jmp loop", N, R).instructions
    assert [(i.op, i.d, i.a, i.b, i.imm) for i in tabbed] == [(i.op, i.d, i.a, i.b, i.imm) for i in spaced]


@pytest.mark.parametrize("name", ["r1", "R3", "sp", "RA", "r99"])
def test_func_may_not_be_named_like_a_register(name):
    assert "register name" in str(assembly_error(f"halt\n.func {name}\nret"))


def test_func_may_be_named_like_a_mnemonic_but_labels_may_not():
    program = assemble("call add\nhalt\n.func add\nadd r0, r0, r1\nret", N, R)
    assert program.functions == {"add": 2} and program.instructions[0].imm == 2
    assert "register or mnemonic" in str(assembly_error("add: halt"))
    assert "unknown directive '.funcx'" in str(assembly_error(".funcx f"))


def test_many_labels_on_one_line():
    # 128k labels: quadratic slicing took > 30 s; timing lives in bench/bench_assembler.py, this checks the result.
    count = 128_000
    program = assemble("".join(f"l{i}:" for i in range(count)) + " halt", N, R)
    assert len(program.labels) == count and set(program.labels.values()) == {0}


def test_long_numbers_are_an_error_naming_the_line():
    assert assemble(f"const r0, {'0' * (MAX_DIGITS - 1)}7", N, R).instructions[0].imm == 7
    for token in ("9" * 5000, "-" + "9" * (MAX_DIGITS + 1), "0x" + "f" * 5000):
        error = assembly_error(f"halt\nconst r0, {token}")
        assert error.line_number == 2 and f"at most {MAX_DIGITS}" in str(error)
    assert f"at most {MAX_DIGITS}" in str(assembly_error(f"mov r{'1' * 5000}, r0"))


def test_error_messages_quote_a_short_excerpt():
    for source in ("x" * 1_000_000, "const r0, " + "y" * 1_000_000, "frob " + "z" * 1_000_000):
        message = str(assembly_error(source))
        assert len(message) < 400 and "(1000" in message  # the excerpt says how long the text was


def test_a_source_that_is_not_text():
    with pytest.raises(TypeError, match="assembly source must be a str, got int"):
        assemble(123, N, R)


# ---- config ----


def config(**overrides) -> LlamaDeltaConfig:
    return LlamaDeltaConfig(**TINY_LLAMA, **overrides)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(delta_wordsize=16), "unknown config field delta_wordsize (did you mean delta_word_size?)"),
        (dict(delta_alu_backend="table"), "unknown config field delta_alu_backend (did you mean delta_alu?)"),
        (dict(delta_straight_through="no"), "delta_straight_through = 'no' must be a bool"),
        (dict(delta_max_steps=2.5), "delta_max_steps = 2.5 must be an integer"),
        (dict(delta_alu=3), "delta_alu = 3 must be a string"),
        (dict(delta_programs=["add"]), "delta_programs must be a dict of program name -> assembly source, got list"),
        (dict(delta_programs={"add": 3}), "delta_programs['add']: names and sources must be strings"),
        (dict(delta_programs={}), "delta_programs is empty"),
        (dict(delta_token_values=[1], delta_parse_mode="slots"), "delta_token_values must be a dict"),
        (dict(dtype="float7"), "dtype = 'float7' is not a torch dtype name"),
        (dict(delta_token_values={"١": 1}, delta_parse_mode="slots"), "delta_token_values key '١' is not a token id"),
        (dict(torch_dtype="float7"), "torch_dtype = 'float7' is not a torch dtype name"),
        (
            dict(delta_num_registers=6, delta_programs={"sort": LIBRARY["sort"]}),
            "delta_programs['sort']: library program 'sort' needs num_registers >= 8",
        ),
        (dict(delta_programs={"add": ".func add\nadd r0, r0, r1 ; x\u2028ret"}), "delta_programs['add'] does not"),
    ],
)
def test_config_refuses_naming_the_field(overrides, message):
    with pytest.raises(ValueError) as info:
        config(**overrides)
    assert message in str(info.value)


def test_legitimate_configs_still_load(tmp_path):
    saved = config(delta_word_size=16, delta_memory_size=8, dtype="bfloat16")
    # Keys transformers itself writes (architectures, auto_map, transformers_version...) round-trip.
    reloaded = LlamaDeltaConfig.from_dict({**saved.to_dict(), "architectures": ["LlamaDeltaForAlgorithmicQA"]})
    assert reloaded.delta_word_size == 16 and reloaded.dtype == torch.bfloat16
    saved.save_pretrained(tmp_path)
    assert LlamaDeltaConfig.from_pretrained(tmp_path, delta_max_steps=5).delta_max_steps == 5


def test_new_fields_join_the_registry():
    class WithSharpness(LlamaDeltaConfig):
        delta_sharpness: float = 1.0

    assert "delta_sharpness" in WithSharpness.delta_fields()
    assert WithSharpness(**TINY_LLAMA, delta_sharpness=2).delta_sharpness == 2
    with pytest.raises(ValueError, match="delta_sharpness = 'x' must be a finite number"):
        WithSharpness(**TINY_LLAMA, delta_sharpness="x")
    with pytest.raises(ValueError, match=r"did you mean delta_sharpness\?"):
        WithSharpness(**TINY_LLAMA, delta_sharpnes=2.0)


# ---- conformance ----

GOOD = {"id": "ok", "source": "const r0, 3\nret", "n": 8, "num_registers": 4, "memory_size": 4, "max_steps": 20}
BAD_CASES = [
    ("[1, 2]", "input line 1: a case must be a JSON object, got list"),
    ('"halt"', "input line 2: a case must be a JSON object, got str"),
    (json.dumps({**GOOD, "source": 123}), "field 'source' = 123 must be a string"),
    (json.dumps({**GOOD, "source": None}), "field 'source' = null must be a string"),
    (json.dumps({**GOOD, "max_steps": None}), "field 'max_steps' = null must be an integer in 0..1000000"),
    (json.dumps({**GOOD, "max_steps": 2.5}), "field 'max_steps' = 2.5 must be an integer in 0..1000000"),
    (json.dumps({**GOOD, "n": 2**20}), "field 'n' = 1048576 must be an integer in 2..4096"),
    (json.dumps({**GOOD, "n": True}), "field 'n' = true must be an integer in 2..4096"),
    (json.dumps({**GOOD, "memory": {"0": 1}}), "field 'memory' = {\"0\": 1} must be a list of integers"),
    (json.dumps({**GOOD, "entry": 5}), "field 'entry' = 5 must be a string"),
    (json.dumps({**GOOD, "max_step": 5}), "unknown field 'max_step' (did you mean 'max_steps'?)"),
    (json.dumps({**GOOD, "registers": [1.5]}), "registers[0] = 1.5 is not an integer in 0..7"),
    (json.dumps({key: value for key, value in GOOD.items() if key != "n"}), "missing field 'n'"),
    (json.dumps({**GOOD, "source": "halt\nconst r0, ٣"}), "line 2: character U+0663"),
    ("[" * 100_000, "input line 15: not JSON"),
]


def test_every_malformed_case_is_answered_and_the_run_goes_on():
    lines = [line for line, _ in BAD_CASES] + [json.dumps(GOOD)]
    answers = list(run_cases(lines))
    assert len(answers) == len(lines)
    for answer, (_, message) in zip(answers, BAD_CASES, strict=False):
        assert answer["error"] is not None and message in answer["error"], (answer, message)
        assert "reference" not in answer
    assert answers[-1]["error"] is None and answers[-1]["reference"]["registers"][0] == 3
    assert answers[-1]["soft"]["registers"] == answers[-1]["reference"]["registers"]
    assert answers[2]["id"] == "ok"  # a bad field keeps the case's id
    assert run_case([1, 2]) == {"id": None, "error": "a case must be a JSON object, got list"}


# ---- loading ----


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, value):
    LlamaDeltaForAlgorithmicQA(config(delta_word_size=16, delta_memory_size=8)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    name = next(key for key in weights if key.startswith("delta_head.") and key.endswith(".weight"))
    weights[name].view(-1)[3] = value
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"checkpoint tensor '{name}' holds 1 non-finite value"):
        LlamaDeltaForAlgorithmicQA.from_pretrained(tmp_path)


def test_keyword_overrides_at_load_are_checked(tmp_path):
    LlamaDeltaForAlgorithmicQA(config(delta_word_size=16, delta_memory_size=8)).save_pretrained(tmp_path)
    assert LlamaDeltaForAlgorithmicQA.from_pretrained(tmp_path, delta_max_steps=3).config.delta_max_steps == 3
    with pytest.raises(ValueError, match="delta_straight_through = 'no' must be a bool"):
        LlamaDeltaForAlgorithmicQA.from_pretrained(tmp_path, delta_straight_through="no")
