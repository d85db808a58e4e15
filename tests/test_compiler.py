"""Compiler: Program -> one-hot ROM; logits for adaptive compilation; decompile back to assembly."""

import random

import pytest
import torch

from modeling_llama_delta.assembler import OPCODES, assemble
from modeling_llama_delta.compiler import (
    FIELDS,
    RomLayout,
    compile_programs,
    decode_rom,
    decompile,
    rom_logits,
    rom_probabilities,
)
from tests.helpers.programs import random_program

N, R = 16, 4
SOURCE = """
.func main
    const r0, 'A'
loop:
    add r1, r1, r0
    jnz r1, loop
    call helper
    halt
helper:
    write sp, ra
    ret
"""


def test_compile_is_one_hot_with_halt_padding():
    program = assemble(SOURCE, N, R)
    rom = compile_programs(program)  # (1, n, F)
    layout = RomLayout(N, R)
    assert rom.shape == (1, N, len(OPCODES) + 3 * R + N) and layout.width == rom.shape[-1]
    fields = layout.split(rom[0])
    for name, size in zip(FIELDS, layout.sizes, strict=True):
        assert fields[name].shape == (N, size)
        assert torch.equal(fields[name].sum(-1), torch.ones(N))  # exactly one-hot
    ops = [OPCODES[i] for i in fields["op"].argmax(-1).tolist()]
    assert ops[: len(program.instructions)] == [ins.op for ins in program.instructions]
    assert ops[len(program.instructions) :] == ["halt"] * (N - len(program.instructions))
    assert fields["imm"][0].argmax() == ord("A") % N and fields["imm"][2].argmax() == 1  # const 'A', jnz loop
    assert fields["d"][3].argmax() == R - 1 and fields["a"][6].argmax() == R - 1  # call writes ra, ret reads ra


def test_programs_stack_and_must_share_a_machine_shape():
    programs = [assemble("halt", N, R), assemble(SOURCE, N, R)]
    rom = compile_programs(programs, dtype=torch.float64)
    assert rom.shape[:2] == (2, N) and rom.dtype == torch.float64
    assert torch.equal(rom[1], compile_programs(programs[1], dtype=torch.float64)[0])
    with pytest.raises(ValueError, match="one machine shape"):
        compile_programs([assemble("halt", N, R), assemble("halt", 32, R)])
    with pytest.raises(ValueError, match="at least one"):
        compile_programs([])


def test_logits_recover_a_near_one_hot_rom():
    rom = compile_programs(assemble(SOURCE, N, R))
    layout = RomLayout(N, R)
    probabilities = rom_probabilities(rom_logits(rom, sharpness=12.0), layout)
    for (name, soft), hard in zip(layout.split(probabilities).items(), layout.split(rom).values(), strict=True):
        assert torch.allclose(soft.sum(-1), torch.ones_like(soft[..., 0])), name
        assert torch.equal(soft.argmax(-1), hard.argmax(-1)), name
        assert float(soft.max(-1).values.min()) > 0.99, name


@pytest.mark.parametrize("seed", range(8))
def test_decompile_reassembles_to_the_same_rom(seed):
    rng = random.Random(seed)
    n, r = (16, 4) if seed % 2 else (64, 8)
    program = assemble(random_program(rng, n, r, rng.randrange(2, n - 1)), n, r)
    rom = compile_programs(program)[0]
    noisy = rom_logits(rom, 5.0) + 0.4 * torch.randn(rom.shape, generator=torch.Generator().manual_seed(seed))
    text = decompile(noisy, r)  # a "trained" program: logits whose arg-max is the program
    again = compile_programs(assemble(text, n, r))[0]
    assert torch.equal(again, rom), text
    assert decode_rom(noisy, r)[0][: len(program.instructions) - 1] == [
        ins.__class__(ins.op, ins.d, ins.a, ins.b, ins.imm) for ins in program.instructions[:-1]
    ]


def test_decompile_names_targets_functions_and_lines():
    program = assemble(SOURCE, N, R)
    text = decompile(compile_programs(program)[0], R, functions=program.functions)
    assert ".func main" in text and "jnz r1, L1" in text and "call L5" in text and "L1:" in text
    assert "write sp, ra" in text and "; 6" in text
    assert compile_programs(assemble(text, N, R)).equal(compile_programs(program))
    full = decompile(compile_programs(program)[0], R, num_lines=N - 1)  # every line, trailing halts too
    assert len([line for line in full.splitlines() if line.startswith("    ")]) == N - 1
    with pytest.raises(ValueError, match="num_lines"):
        decompile(compile_programs(program)[0], R, num_lines=N)
    with pytest.raises(ValueError, match="one program"):
        decompile(compile_programs(program), R)


def test_compile_library_is_the_one_driver_assembling_each_config_once(monkeypatch, tmp_path):
    """Text -> Program -> ROM happens once per library: the config's validation, the machine, weight initialisation,
    a save/load round trip and `verify_library` all take the cached result."""
    from modeling_llama_delta import compiler
    from modeling_llama_delta.configuration_llama_delta import LlamaDeltaConfig
    from modeling_llama_delta.library import LIBRARY
    from modeling_llama_delta.modeling_llama_delta import LlamaDeltaForAlgorithmicQA
    from tests.helpers.configs import TINY_LLAMA

    assembled = []

    def counting_assemble(source, n, num_registers):
        assembled.append(source)
        return assemble(source, n, num_registers)

    monkeypatch.setattr(compiler, "assemble", counting_assemble)
    compiler._compile_library.cache_clear()
    programs = {name: LIBRARY[name] for name in ("add", "sort")}
    config = LlamaDeltaConfig(**TINY_LLAMA, delta_word_size=32, delta_memory_size=8, delta_programs=programs)
    model = LlamaDeltaForAlgorithmicQA(config)
    model.save_pretrained(tmp_path)
    loaded = LlamaDeltaForAlgorithmicQA.from_pretrained(tmp_path)
    loaded.verify_library()
    assert sorted(assembled) == sorted(programs.values())  # each source assembled exactly once
    library = compiler.compile_library(config.delta_programs, 32, config.delta_num_registers)
    assert library.names == ("add", "sort") and torch.equal(library.rom, compile_programs(list(library.programs)))
    assert torch.equal(loaded.delta_head.machine.rom, library.rom)
    assert loaded.delta_head.machine.rom.data_ptr() != library.rom.data_ptr()  # the machine holds its own copy


def test_compile_library_errors_name_the_program_and_line():
    from modeling_llama_delta.compiler import compile_library

    with pytest.raises(ValueError, match=r"delta_programs\['broken'\] does not assemble: line 2\b.*bogus"):
        compile_library({"fine": "halt", "broken": ".func broken\n    bogus r1"}, N, R)
    with pytest.raises(ValueError, match="delta_programs is empty"):
        compile_library({}, N, R)
