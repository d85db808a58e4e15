"""The adaptive library (`delta_trainable_programs`): a tiny model whose ROM is trainable trains a step, saves and
reloads identically, and exports its programs as assembly that re-assembles; the default library stays frozen.
Also the step budget (`resize_delta`): the config and every Δ change together, so the saved config is what runs."""

import json

import pytest
import torch

from llama_delta.export import DECOMPILED_DIR, write_decompiled_programs
from modeling_llama_delta import LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA, assemble
from modeling_llama_delta.compiler import compile_programs, decode_rom
from tests.helpers.configs import TINY_LLAMA

DELTA = dict(delta_word_size=16, delta_memory_size=8, delta_max_steps=8, delta_answer_length=2)


def tiny_model(**overrides) -> LlamaDeltaForAlgorithmicQA:
    torch.manual_seed(0)
    return LlamaDeltaForAlgorithmicQA(LlamaDeltaConfig(**TINY_LLAMA, **DELTA, **overrides))


def batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "input_ids": torch.randint(0, 100, (4, 6), generator=generator),
        "labels": torch.randint(0, 16, (4, 2), generator=generator),
    }


def test_the_library_is_frozen_by_default():
    model = tiny_model()
    machine = model.delta_head.machine
    assert not hasattr(machine, "rom_logits") and "delta_head.machine.rom" in model.state_dict()
    assert not any(name.startswith("delta_head.machine") for name, _ in model.named_parameters())


def test_a_trainable_library_trains_saves_reloads_and_decompiles(tmp_path):
    model = tiny_model(delta_trainable_programs=True, delta_program_sharpness=6.0).train()
    machine, config = model.delta_head.machine, model.config
    compiled = compile_programs(machine.programs)  # (P, n, F) the library's one-hot ROM
    assert not hasattr(machine, "rom") and torch.equal(machine.rom_logits.detach(), 6.0 * compiled)

    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(**batch()).loss.backward()
    assert machine.rom_logits.grad.abs().sum() > 0  # the answer's gradient reaches the programs
    optimizer.step()
    assert not torch.equal(machine.rom_logits.detach(), 6.0 * compiled)

    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["delta_trainable_programs"] is True and saved["delta_program_sharpness"] == 6.0
    loaded = LlamaDeltaForAlgorithmicQA.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(loaded.delta_head.machine.rom_logits, machine.rom_logits)
    model.eval()
    with torch.no_grad():
        inputs = {"input_ids": batch()["input_ids"]}
        assert torch.equal(loaded(**inputs).answer_logits, model(**inputs).answer_logits)

    written = write_decompiled_programs(loaded, tmp_path / DECOMPILED_DIR)
    assert sorted(path.stem for path in written) == sorted(config.delta_programs)
    rom = machine.rom_distribution().detach()  # (P, n, F)
    for index, name in enumerate(machine.program_names):
        text = (tmp_path / DECOMPILED_DIR / f"{name}.asm").read_text()
        program = assemble(text, config.delta_word_size, config.delta_num_registers)
        assert name in program.functions

        # The file is the trained ROM's arg-max program, line for line (the lines after it are halts).
        def fields(instructions):
            return [(ins.op, ins.d, ins.a, ins.b, ins.imm) for ins in instructions]

        decoded = decode_rom(rom[index], config.delta_num_registers)[0]
        assert fields(program.instructions) == fields(decoded[: len(program.instructions)])
        assert {ins.op for ins in decoded[len(program.instructions) :]} <= {"halt"}


def test_the_export_writes_decompiled_programs_only_for_a_trainable_library(tmp_path):
    from llama_delta.export import export_for_hub
    from tests.test_export import char_tokenizer

    frozen = export_for_hub(tiny_model().eval(), char_tokenizer(), tmp_path / "frozen")
    assert not (frozen / DECOMPILED_DIR).exists()
    trainable = export_for_hub(
        tiny_model(delta_trainable_programs=True).eval(), char_tokenizer(), tmp_path / "adaptive"
    )
    files = sorted(path.name for path in (trainable / DECOMPILED_DIR).iterdir())
    assert files == sorted(f"{name}.asm" for name in LlamaDeltaConfig(**TINY_LLAMA, **DELTA).delta_programs)
    # Untrained, the sharp logits decompile to the library itself.
    text = (trainable / DECOMPILED_DIR / "mul.asm").read_text()
    assert "mul r0, r0, r1" in text and ".func mul" in text


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("delta_program_sharpness", 0.0, "delta_program_sharpness = 0.0 must be a finite number > 0"),
        ("delta_program_sharpness", float("inf"), "delta_program_sharpness = inf must be a finite number"),
        ("delta_trainable_programs", "yes", r"delta_trainable_programs = 'yes' must be a bool \(true or false\)"),
    ],
)
def test_bad_trainable_library_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        LlamaDeltaConfig(**TINY_LLAMA, **DELTA, **{field: value})


def test_resize_delta_changes_the_config_and_every_machine_together(tmp_path):
    model = tiny_model(delta_checkpoint_steps=6)
    model.resize_delta(max_steps=20)
    assert model.config.delta_max_steps == 20 and model.delta_head.machine.max_steps == 20
    assert model.config.delta_checkpoint_steps == 6
    model.resize_delta(max_steps=4)  # a checkpoint block longer than the run shrinks to it (the config allows no more)
    assert (model.config.delta_max_steps, model.config.delta_checkpoint_steps) == (4, 4)
    assert (model.delta_head.machine.max_steps, model.delta_head.machine.checkpoint_steps) == (4, 4)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["delta_max_steps"] == 4  # what runs is what is saved
    assert LlamaDeltaForAlgorithmicQA.from_pretrained(tmp_path).delta_head.machine.max_steps == 4
    with pytest.raises(ValueError, match=r"delta_max_steps = 0 is out of range: allowed 1\.\.1000000"):
        model.resize_delta(max_steps=0)
    assert (model.config.delta_max_steps, model.delta_head.machine.max_steps) == (4, 4)  # unchanged on refusal


def test_resize_delta_reaches_both_heads_of_a_peft_model():
    peft = pytest.importorskip("peft")
    model = tiny_model()
    wrapped = peft.get_peft_model(
        model, peft.LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["delta_head"])
    )
    wrapped.resize_delta(max_steps=13)
    machines = [m for m in wrapped.modules() if type(m).__name__ == "DeltaMachine"]
    assert len(machines) == 2 and all(m.max_steps == 13 for m in machines)
    assert model.config.delta_max_steps == 13
