"""`LlamaDeltaForAlgorithmicQA` on tiny configs (hidden 32, 2 layers, vocab 100, n = 16): shapes, loss, gradients, the
frozen library ROM and its checks, save/load, ALU swaps, `solve`, and exactness against the reference interpreter."""

import math
import random
import re
import tempfile

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from modeling_llama_delta import LIBRARY, LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA, assemble, run_reference
from modeling_llama_delta.compiler import compile_programs
from modeling_llama_delta.modeling_llama_delta import ANSWER_EPS, format_answer, score_function_loss
from modeling_llama_delta.parsing import (
    PARSE_MODES,
    ParsedElements,
    ParsedQuestion,
    SlotParser,
    TokenParser,
    compact_elements,
)
from tests.helpers.configs import COPYING_SLOTS, TINY_LLAMA

# Arithmetic library (the default Λ): two parsed registers, answer r0 and r1.
REGISTER_DELTA = dict(delta_word_size=16, delta_memory_size=8, delta_max_steps=8, delta_answer_length=2)
# String library: a zero-terminated string of length <= 4 parsed into m[0..4], answer m[0..3] (sort needs 20 lines).
MEMORY_DELTA = dict(
    delta_word_size=32,
    delta_memory_size=8,
    delta_max_steps=90,  # step_bound("sort", 4) = 86
    delta_programs={name: LIBRARY[name] for name in ("reverse", "sort")},
    delta_input_cells=5,
    delta_input_registers=0,
    delta_answer_source="memory",
    delta_answer_length=4,
)
BIG_LOGIT = 1e4  # softmax of a logit gap this large is exactly one-hot in float32


def tiny_config(delta: dict = REGISTER_DELTA, **overrides) -> LlamaDeltaConfig:
    return LlamaDeltaConfig(**{**TINY_LLAMA, **delta, **overrides})


def tiny_model(config: LlamaDeltaConfig, seed: int = 0) -> LlamaDeltaForAlgorithmicQA:
    torch.manual_seed(seed)
    return LlamaDeltaForAlgorithmicQA(config).eval()


def same_buffers(left: torch.nn.Module, right: torch.nn.Module) -> None:
    """Every buffer, persistent or not, with the same name, dtype and value."""
    left_buffers, right_buffers = dict(left.named_buffers()), dict(right.named_buffers())
    assert left_buffers.keys() == right_buffers.keys()
    for name, buffer in left_buffers.items():
        assert buffer.dtype == right_buffers[name].dtype and torch.equal(buffer, right_buffers[name]), name


def fresh_rom(config: LlamaDeltaConfig) -> torch.Tensor:
    """(P, n, F) the library compiled straight from the config's sources, independently of the model."""
    n, registers = config.delta_word_size, config.delta_num_registers
    return compile_programs([assemble(source, n, registers) for source in config.delta_programs.values()])


def force_parse(model: LlamaDeltaForAlgorithmicQA, cells: list[int], registers: list[int], program: str) -> None:
    """Set the parser's weights so that ANY input parses to these one-hot cells/registers and this program."""
    parser, config = model.delta_head.parser, model.config
    n, names = config.delta_word_size, list(config.delta_programs)
    target = F.one_hot(torch.tensor(cells + registers, dtype=torch.long), n).float() * BIG_LOGIT  # (C + Rin, n)
    with torch.no_grad():
        if isinstance(parser, SlotParser):
            parser.values.zero_()
            parser.values_bias.copy_(target)
        else:
            parser.values.weight.zero_()
            parser.values.bias.copy_(target.flatten())
        parser.select.weight.zero_()
        parser.select.bias.copy_(F.one_hot(torch.tensor(names.index(program)), len(names)).float() * BIG_LOGIT)


def reference_answer(config: LlamaDeltaConfig, program: str, cells: list[int], registers: list[int]) -> list[int]:
    compiled = assemble(config.delta_programs[program], config.delta_word_size, config.delta_num_registers)
    result = run_reference(
        compiled, config.delta_memory_size, memory=cells, registers=registers, max_steps=config.delta_max_steps
    )
    assert result.halted, f"{program} did not halt within {config.delta_max_steps} steps"
    source = result.registers if config.delta_answer_source == "registers" else result.memory
    return source[: config.delta_answer_length]


def exact_answer_logits(answers: list[list[int]], n: int) -> torch.Tensor:
    """(B, K, n) what `answer_logits` is when Δ's answer is exactly one-hot."""
    return torch.log(F.one_hot(torch.tensor(answers), n).float() + ANSWER_EPS)


class LlamaDeltaModelTester:
    """Tiny configs and inputs (transformers' ModelTester pattern)."""

    batch_size, seq_length = 3, 7

    def get_config(self, delta: dict = REGISTER_DELTA, **overrides) -> LlamaDeltaConfig:
        return tiny_config(delta, **overrides)

    def prepare_inputs(self, config: LlamaDeltaConfig, with_labels: bool = True) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(1)
        b, t, k = self.batch_size, self.seq_length, config.delta_answer_length
        input_ids = torch.randint(0, config.vocab_size, (b, t), generator=generator)
        attention_mask = torch.ones(b, t, dtype=torch.long)
        attention_mask[1, -2:] = 0  # one right-padded row
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if with_labels:
            labels = torch.randint(0, config.delta_word_size, (b, k), generator=generator)
            labels[0, 1:] = -100  # a shorter answer
            inputs["labels"] = labels
        return inputs


@pytest.fixture
def tester() -> LlamaDeltaModelTester:
    return LlamaDeltaModelTester()


def test_forward_shapes_and_loss_only_with_labels(tester):
    config = tester.get_config()
    model = tiny_model(config)
    inputs = tester.prepare_inputs(config)
    b, k, n, p = tester.batch_size, config.delta_answer_length, config.delta_word_size, 7
    with torch.no_grad():
        without = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        out = model(**inputs)
    assert without.loss is None
    assert out.answer_logits.shape == (b, k, n)
    assert out.selection.shape == (b, p)
    assert out.halt_probability.shape == (b,)
    assert out.parsed_registers.shape == (b, config.delta_input_registers, n)
    assert out.parsed_memory.shape == (b, 0, n)
    torch.testing.assert_close(out.answer_logits, without.answer_logits, rtol=0, atol=0)
    torch.testing.assert_close(out.selection.sum(-1), torch.ones(b))
    torch.testing.assert_close(out.answer_logits.exp().sum(-1), torch.ones(b, k), atol=1e-4, rtol=0)
    # The loss is the mean negative log-likelihood over the answer elements that are not -100.
    labels = inputs["labels"]
    valid = labels != -100
    picked = out.answer_logits.gather(-1, labels.clamp(min=0)[..., None])[..., 0]  # (B, K)
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, -picked[valid].mean())


@pytest.mark.parametrize("delta", [REGISTER_DELTA, MEMORY_DELTA], ids=["registers", "memory"])
def test_gradients_reach_backbone_parser_and_parsed_state(tester, delta):
    config = tester.get_config(delta)
    model = tiny_model(config).train()
    inputs = tester.prepare_inputs(config)
    embeds = model.model.embed_tokens(inputs.pop("input_ids"))  # (B, T, H)
    embeds.retain_grad()
    out = model(inputs_embeds=embeds, **inputs)
    parsed = out.parsed_registers if config.delta_input_registers else out.parsed_memory
    parsed.retain_grad()
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for name, parameter in model.named_parameters():
        used = not name.startswith(("model.layers.1.", "model.norm."))
        if used:  # delta_feature_layer = -2: the head reads the output of layer 0
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            if name.startswith(("model.layers.0.", "delta_head.parser.values", "delta_head.parser.select")):
                assert parameter.grad.abs().sum().item() > 0, name
        else:
            assert parameter.grad is None, name
    assert embeds.grad.abs().sum().item() > 0
    assert parsed.grad.abs().sum().item() > 0


def test_rom_is_a_persistent_frozen_buffer(tester):
    config = tester.get_config()
    model = tiny_model(config).train()
    machine = model.delta_head.machine
    assert "delta_head.machine.rom" in model.state_dict()
    assert "delta_head.machine.rom" not in dict(model.named_parameters())
    assert not machine.rom.requires_grad
    before = machine.rom.clone()
    torch.testing.assert_close(before, fresh_rom(config), rtol=0, atol=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    inputs = tester.prepare_inputs(config)
    for _ in range(3):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    assert machine.rom.grad is None
    assert torch.equal(machine.rom, before)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        assert torch.equal(load_file(f"{folder}/model.safetensors")["delta_head.machine.rom"], before)


def test_save_load_round_trip(tester):
    config = tester.get_config()
    model = tiny_model(config)
    inputs = tester.prepare_inputs(config)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = LlamaDeltaForAlgorithmicQA.from_pretrained(folder).eval()
    assert loaded.config.to_dict()["delta_programs"] == config.delta_programs
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    same_buffers(loaded, model)
    with torch.no_grad():
        expected, got = model(**inputs), loaded(**inputs)
    for field in ("loss", "answer_logits", "selection", "halt_probability", "parsed_registers"):
        torch.testing.assert_close(getattr(got, field), getattr(expected, field), rtol=0, atol=0)


def test_missing_rom_is_rebuilt_from_the_sources(tester):
    config = tester.get_config()
    model = tiny_model(config)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        weights = load_file(f"{folder}/model.safetensors")
        del weights["delta_head.machine.rom"]
        save_file(weights, f"{folder}/model.safetensors", metadata={"format": "pt"})
        loaded = LlamaDeltaForAlgorithmicQA.from_pretrained(folder)
    torch.testing.assert_close(loaded.delta_head.machine.rom, fresh_rom(config), rtol=0, atol=0)
    same_buffers(loaded, model)


def test_tampered_rom_is_refused(tester):
    config = tester.get_config()
    model = tiny_model(config)
    names = list(config.delta_programs)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        weights = load_file(f"{folder}/model.safetensors")
        rom = weights["delta_head.machine.rom"]
        rom[names.index("mul"), 0] = rom[names.index("add"), 0]  # mul's first line now adds
        save_file(weights, f"{folder}/model.safetensors", metadata={"format": "pt"})
        with pytest.raises(ValueError, match=r"'mul'.*lines \[0\]"):
            LlamaDeltaForAlgorithmicQA.from_pretrained(folder)


def test_source_that_does_not_assemble_is_refused(tester):
    config = tester.get_config()
    broken = config.delta_programs["add"].replace("add r0, r0, r1", "add r0, r0, r1\n    bogus r1")
    line = broken.splitlines().index("    bogus r1") + 1
    # In a checkpoint's config.json ...
    model = tiny_model(config)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        saved = LlamaDeltaConfig.from_pretrained(folder)
        saved.delta_programs = {**saved.delta_programs, "add": broken}
        saved.to_json_file(f"{folder}/config.json")
        with pytest.raises(ValueError, match=rf"'add'.*line {line}\b.*bogus"):
            LlamaDeltaForAlgorithmicQA.from_pretrained(folder)
    # ... and in a config edited after the model was built.
    model.config.delta_programs = {**config.delta_programs, "add": broken}
    with pytest.raises(ValueError, match=rf"'add'.*line {line}\b.*bogus"):
        model.verify_library()


def test_from_pretrained_overrides_are_validated(tester):
    # from_pretrained sets keyword overrides on the config after it was built (and validated)
    config = tester.get_config()
    with tempfile.TemporaryDirectory() as folder:
        tiny_model(config).save_pretrained(folder)
        with pytest.raises(ValueError, match=r"delta_answer_length = 50 is out of range: allowed 1\.\.8"):
            LlamaDeltaForAlgorithmicQA.from_pretrained(folder, delta_answer_length=50)
        with pytest.raises(ValueError, match=r"delta_parse_mode = 'bogus' is not one of last_token"):
            LlamaDeltaForAlgorithmicQA.from_pretrained(folder, delta_parse_mode="bogus")


def test_alu_swap_after_loading_gives_the_same_one_hot_outputs(tester):
    config = tester.get_config()
    model = tiny_model(config)
    force_parse(model, [], [13, 6], "mul")
    inputs = tester.prepare_inputs(config, with_labels=False)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = LlamaDeltaForAlgorithmicQA.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = loaded(**inputs).answer_logits
        for alu in ("table", "circuit", "structured"):
            loaded.delta_head.machine.set_alu(alu)
            torch.testing.assert_close(loaded(**inputs).answer_logits, expected, rtol=0, atol=0, msg=alu)
    answer = reference_answer(config, "mul", [], [13, 6])
    torch.testing.assert_close(expected, exact_answer_logits([answer] * len(expected), 16), rtol=0, atol=0)


def test_accepts_loss_kwargs_is_false():
    # Trainer would otherwise rescale the loss by gradient-accumulation steps (13.78 vs 3.47 at accumulation 4).
    assert LlamaDeltaForAlgorithmicQA.accepts_loss_kwargs is False


def test_from_pretrained_with_loading_info(tester):
    config = tester.get_config()
    with tempfile.TemporaryDirectory() as folder:
        tiny_model(config).save_pretrained(folder)
        model, info = LlamaDeltaForAlgorithmicQA.from_pretrained(folder, output_loading_info=True)
    assert isinstance(model, LlamaDeltaForAlgorithmicQA)
    assert info["missing_keys"] == set()


def test_bfloat16_backbone_keeps_delta_in_float32(tester):
    config = tester.get_config()
    inputs = tester.prepare_inputs(config)
    with tempfile.TemporaryDirectory() as folder:
        tiny_model(config).save_pretrained(folder)
        model = LlamaDeltaForAlgorithmicQA.from_pretrained(folder, dtype=torch.bfloat16)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    for name, tensor in [*model.delta_head.named_parameters(), *model.delta_head.named_buffers()]:
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32, name
    with torch.no_grad():
        out = model(**inputs)
    assert out.answer_logits.dtype == torch.float32
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("mode", PARSE_MODES)
def test_every_parse_mode_runs_and_trains(mode):
    config = tiny_config(MEMORY_DELTA, delta_parse_mode=mode)
    model = tiny_model(config).train()
    inputs = LlamaDeltaModelTester().prepare_inputs(config)
    out = model(**inputs)
    assert out.parsed_memory.shape == (3, config.delta_input_cells, config.delta_word_size)
    torch.testing.assert_close(out.parsed_memory.sum(-1), torch.ones(3, config.delta_input_cells))
    out.loss.backward()
    parser = [p for name, p in model.named_parameters() if name.startswith("delta_head.parser.") and p.numel()]
    grads = [p.grad for p in parser]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0


# Config validation: (overrides, substrings the error must contain: the field, the value, the allowed range).
BAD_CONFIGS = [
    (dict(delta_word_size=1), ["delta_word_size", "1", "2..4096"]),
    (dict(delta_word_size=5000), ["delta_word_size", "5000", "2..4096"]),
    (dict(delta_word_size="16"), ["delta_word_size", "'16'", "integer"]),
    (dict(delta_word_size=True), ["delta_word_size", "True", "integer"]),
    (dict(delta_num_registers=1), ["delta_num_registers", "1", "2..256"]),
    (dict(delta_memory_size=0), ["delta_memory_size", "0", "1..16"]),
    (dict(delta_memory_size=17), ["delta_memory_size", "17", "1..16"]),
    (dict(delta_max_steps=0), ["delta_max_steps", "0", "1..1000000"]),
    (dict(delta_alu="gpu"), ["delta_alu", "'gpu'", "table, structured, circuit"]),
    (dict(delta_alu="circuit", delta_word_size=12), ["delta_alu", "circuit", "power of two", "12"]),
    (dict(delta_feature_layer=3), ["delta_feature_layer", "3", "-3..2"]),
    (dict(delta_feature_layer=-4), ["delta_feature_layer", "-4", "-3..2"]),
    (dict(delta_parse_mode="attention"), ["delta_parse_mode", "'attention'", "last_token, slots"]),
    (dict(delta_elements_per_token=0), ["delta_elements_per_token", "0", "1..64"]),
    (dict(delta_input_cells=9), ["delta_input_cells", "9", "0..8"]),
    (dict(delta_input_registers=7), ["delta_input_registers", "7", "0..6"]),
    (dict(delta_answer_source="stack"), ["delta_answer_source", "'stack'", "registers, memory"]),
    (dict(delta_answer_length=0), ["delta_answer_length", "0", "1..8"]),
    (dict(delta_answer_length=9), ["delta_answer_length", "9", "1..8"]),
    (dict(delta_answer_format="hex"), ["delta_answer_format", "'hex'", "integers, string, digits"]),
    (dict(delta_checkpoint_steps=9), ["delta_checkpoint_steps", "9", "0..8"]),
    (dict(delta_programs={}), ["delta_programs", "empty"]),
    (dict(delta_programs={"foo": ".func foo\n    add r0, r0, r1\n    bogus r1\n    ret\n"}), ["'foo'", "line 3"]),
    (dict(delta_programs={"foo": ".func bar\n    ret\n"}), ["'foo'", ".func foo"]),
]


@pytest.mark.parametrize("overrides, fragments", BAD_CONFIGS, ids=lambda x: str(x)[:60] if isinstance(x, dict) else "")
def test_config_validation_names_field_value_and_range(overrides, fragments):
    with pytest.raises(ValueError) as error:
        LlamaDeltaConfig(**{**TINY_LLAMA, **REGISTER_DELTA, **overrides})
    for fragment in fragments:
        assert fragment in str(error.value), (fragment, str(error.value))


@pytest.mark.parametrize("mode", ["last_token", "slots"])
@pytest.mark.parametrize(
    "delta, program, cells, registers",
    [
        (REGISTER_DELTA, "sub", [], [3, 11]),
        (REGISTER_DELTA, "div", [], [15, 4]),
        (MEMORY_DELTA, "sort", [9, 2, 14, 2, 0], []),
        (MEMORY_DELTA, "reverse", [1, 5, 7, 0, 0], []),
    ],
)
def test_one_hot_parse_is_exact(mode, delta, program, cells, registers):
    """Parser weights forced to one-hot values: the model's answer IS the reference interpreter's."""
    config = tiny_config(delta, delta_parse_mode=mode)
    model = tiny_model(config)
    force_parse(model, cells, registers, program)
    inputs = LlamaDeltaModelTester().prepare_inputs(config, with_labels=False)
    with torch.no_grad():
        out = model(**inputs)
    answer = reference_answer(config, program, cells, registers)
    torch.testing.assert_close(
        out.answer_logits, exact_answer_logits([answer] * 3, config.delta_word_size), rtol=0, atol=0
    )
    torch.testing.assert_close(out.halt_probability, torch.ones(3), rtol=0, atol=0)


@pytest.mark.parametrize("delta", [REGISTER_DELTA, MEMORY_DELTA], ids=["registers", "memory"])
def test_batched_one_hot_parses_match_the_reference(delta, monkeypatch):
    """A different program and input per example in one batch (the parser's output replaced by one-hot values)."""
    config = tiny_config(delta)
    model = tiny_model(config)
    names, n, rng = list(config.delta_programs), config.delta_word_size, random.Random(0)
    examples = []
    for _ in range(8):
        if config.delta_input_cells:
            text = [rng.randrange(1, n) for _ in range(rng.randrange(0, 5))]
            cells, registers = text + [0] * (config.delta_input_cells - len(text)), []
        else:
            cells, registers = [], [rng.randrange(n), rng.randrange(n)]
        examples.append((rng.choice(names), cells, registers))

    def one_hot(rows: list[list[int]], width: int) -> torch.Tensor:
        return F.one_hot(torch.tensor(rows, dtype=torch.long).view(len(rows), width), n).float()

    parsed = ParsedQuestion(
        one_hot([cells for _, cells, _ in examples], config.delta_input_cells),
        one_hot([registers for _, _, registers in examples], config.delta_input_registers),
        F.one_hot(torch.tensor([names.index(name) for name, _, _ in examples]), len(names)).float(),
    )
    monkeypatch.setattr(model.delta_head.parser, "forward", lambda hidden, attention_mask, input_ids=None: parsed)
    with torch.no_grad():
        out = model(input_ids=torch.randint(0, 100, (8, 5)))
    answers = [reference_answer(config, *example) for example in examples]
    torch.testing.assert_close(out.answer_logits, exact_answer_logits(answers, n), rtol=0, atol=0)


@pytest.fixture(scope="module")
def llama3_tokenizer():
    from llama_delta.tokenizer import load_llama3_tokenizer

    return load_llama3_tokenizer()


@pytest.fixture(scope="module")
def llama3_vocab_model(llama3_tokenizer):
    return tiny_model(tiny_config(REGISTER_DELTA, vocab_size=len(llama3_tokenizer), delta_answer_length=1))


QUESTIONS = ["What is 7 plus 5?", "What is 12 minus 3?", "What is the maximum of 2 and 9?", "What is 3 * 4?", "0"]


def test_solve_returns_strings_batched(llama3_vocab_model, llama3_tokenizer):
    llama3_vocab_model.train()
    answers = llama3_vocab_model.solve(QUESTIONS, llama3_tokenizer, batch_size=2)
    assert llama3_vocab_model.training  # solve runs in eval mode and restores the mode it found
    assert len(answers) == len(QUESTIONS) and all(isinstance(answer, str) for answer in answers)
    assert all(0 <= int(answer) < 16 for answer in answers)
    llama3_vocab_model.eval()
    assert answers == [llama3_vocab_model.solve(question, llama3_tokenizer)[0] for question in QUESTIONS]


def test_format_answer():
    assert format_answer([3, 1, 2], "integers") == "3 1 2"
    assert format_answer([97, 98, 0, 99], "string") == "ab"
    assert format_answer([97, 98], "string") == "ab"
    assert format_answer([48, 49, 50, 51, 52, 0, 57], "digits") == "1234"  # the carry digit '0' in front
    assert format_answer([48, 48], "digits") == "0" and format_answer([49, 48], "digits") == "10"


def test_solve_writes_the_exact_answer(llama3_tokenizer):
    model = tiny_model(tiny_config(REGISTER_DELTA, vocab_size=len(llama3_tokenizer), delta_answer_length=1))
    force_parse(model, [], [7, 5], "add")
    assert model.solve(["What is 7 plus 5?", "and again"], llama3_tokenizer) == ["12", "12"]
    string_model = tiny_model(tiny_config(MEMORY_DELTA, vocab_size=len(llama3_tokenizer), delta_answer_format="string"))
    force_parse(string_model, [9, 2, 14, 0, 0], [], "sort")
    assert string_model.solve("Sort it", llama3_tokenizer) == [chr(2) + chr(9) + chr(14)]


def test_solve_refuses_what_it_cannot_represent(llama3_vocab_model, llama3_tokenizer):
    with pytest.raises(ValueError, match=r"question 1 has \d+ tokens; the model's context is 64"):
        llama3_vocab_model.solve(["What is 1 plus 1?", "What is " + "1 plus " * 40 + "1?"], llama3_tokenizer)
    with pytest.raises(ValueError, match=r"question 0 mentions 16, outside 0..15"):
        llama3_vocab_model.solve("What is 16 plus 3?", llama3_tokenizer)
    for empty in ("", "  \n"):
        with pytest.raises(ValueError, match="question 1 is empty"):
            llama3_vocab_model.solve(["What is 1 plus 1?", empty], llama3_tokenizer)
    for question in ("What is 3 plus 16 (mod 15)?", "What is 5 mod 16?", "What is 5 modulo 16?"):
        with pytest.raises(ValueError, match=r"question 0 mentions 16, outside 0..15"):
            llama3_vocab_model.solve(question, llama3_tokenizer)
    # The question's own modulus, n, is no input: not refused (the arithmetic data's "(mod 16)" suffixes).
    for question in ("What is 3 plus 4 (mod 16)?", "3 plus 4. Answer modulo 16.", "3 plus 4, mod-16"):
        assert len(llama3_vocab_model.solve(question, llama3_tokenizer)) == 1


def test_straight_through_runs_delta_on_the_arg_max_and_passes_gradients():
    from modeling_llama_delta.modeling_llama_delta import straight_through_one_hot

    logits = torch.randn(3, 4, 16, requires_grad=True)
    probabilities = logits.softmax(-1)
    hard = straight_through_one_hot(probabilities)
    assert torch.equal(hard.detach(), torch.nn.functional.one_hot(probabilities.argmax(-1), 16).float())
    weights = torch.randn(3, 4, 16)
    through = torch.autograd.grad((hard * weights).sum(), logits, retain_graph=True)[0]
    expected = torch.autograd.grad((probabilities * weights).sum(), logits)[0]
    assert torch.allclose(through, expected) and through.abs().sum() > 0


def test_slots_copy_the_value_of_the_attended_token():
    from modeling_llama_delta.parsing import copy_token_values

    token_values = torch.tensor([[-1, 7, -1, 3]])  # (B, T): tokens 1 and 3 spell 7 and 3
    attention = torch.tensor([[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0, 0]]])
    classified = torch.full((1, 4, 16), 1 / 16)
    values = copy_token_values(attention, token_values, classified)  # (1, 4, 16)
    assert values[0, 0, 7] == 1 and values[0, 1, 3] == 1  # sharp attention on a numeral: an exact copy
    assert torch.equal(values[0, 2], classified[0, 2])  # on a word: the slot's own classifier
    assert torch.isclose(values[0, 3, 7], torch.tensor(0.5 + 0.5 / 16))
    assert torch.allclose(values.sum(-1), torch.ones(1, 4))


def test_slots_read_adjacent_value_tokens_as_one_numeral():
    from modeling_llama_delta.parsing import numeral_values

    # "Add 1 2 5 and 9 7 ." digit by digit, then "12" "3" (Llama 3 style chunks), then 2 0 0 (>= n = 128)
    token_values = torch.tensor([[-1, 1, 2, 5, -1, 9, 7, -1, 12, 3, -1, 2, 0, 0]])
    expected = torch.tensor([[-1, -1, -1, 125, -1, -1, 97, -1, -1, 123, -1, -1, -1, -1]])
    assert torch.equal(numeral_values(token_values, 128), expected)
    assert torch.equal(numeral_values(torch.tensor([[0, -1, 7]]), 16), torch.tensor([[0, -1, 7]]))
    random = torch.randint(-1, 10, (64, 12))  # digits and words; against Python's reading of the digit runs
    for row, read in zip(random.tolist(), numeral_values(random, 1000).tolist(), strict=True):
        text = "".join(str(v) if v >= 0 else " " for v in row)
        ends = {m.end() - 1: int(m.group()) for m in re.finditer(r"\d+", text)}
        assert read == [ends[t] if t in ends and ends[t] < 1000 else -1 for t in range(len(row))]


def test_token_values_are_validated():
    with pytest.raises(ValueError, match="needs delta_parse_mode 'slots' or 'tokens'"):
        LlamaDeltaConfig(**TINY_LLAMA, delta_token_values={"5": 1})
    with pytest.raises(ValueError, match=r"delta_token_values\['5'\] = 99: 99 is not a value in 0..15"):
        LlamaDeltaConfig(
            **TINY_LLAMA,
            delta_word_size=16,
            delta_memory_size=8,
            delta_parse_mode="slots",
            delta_token_values={"5": 99},
        )
    with pytest.raises(ValueError, match="key '500' is not a token id"):
        LlamaDeltaConfig(**TINY_LLAMA, delta_parse_mode="slots", delta_token_values={"500": 1})
    with pytest.raises(ValueError, match=r"spells 3 values; allowed 1..2"):
        LlamaDeltaConfig(
            **TINY_LLAMA,
            delta_parse_mode="tokens",
            delta_input_cells=4,
            delta_elements_per_token=2,
            delta_token_values={"5": [1, 2, 3]},
        )
    with pytest.raises(ValueError, match="delta_parse_samples = 1 is out of range: allowed 2..256"):
        LlamaDeltaConfig(**TINY_LLAMA, delta_parse_samples=1)


def test_copying_slots_train_and_survive_save_and_load(tmp_path):
    config = LlamaDeltaConfig(**TINY_LLAMA, **COPYING_SLOTS, delta_max_steps=4)
    model = LlamaDeltaForAlgorithmicQA(config)
    ids = torch.tensor([[3, 17, 4, 12, 5]])
    out = model(ids, labels=torch.tensor([[9]]))
    out.loss.backward()
    assert model.delta_head.parser.queries.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    loaded = LlamaDeltaForAlgorithmicQA.from_pretrained(tmp_path)
    assert torch.equal(loaded.delta_head.parser.token_values, model.delta_head.parser.token_values)
    assert torch.allclose(loaded(ids).answer_logits, model(ids).answer_logits)


# --- spelled tokens and sampled parses (`delta_token_values` under `tokens`, `delta_parse_samples`)
SPELLED = {str(token): [token % 26 + 1] * (1 + token % 2) for token in range(10, 60)}  # tokens 10..59 spell values


def spelled_config(**overrides) -> LlamaDeltaConfig:
    return tiny_config(
        MEMORY_DELTA,
        delta_parse_mode="tokens",
        delta_elements_per_token=2,
        delta_input_registers=1,
        delta_token_values=SPELLED,
        delta_input_cells=8,
        **overrides,
    )


def test_spelled_tokens_emit_exactly_their_values_and_nothing_else():
    config = spelled_config()
    model = tiny_model(config)
    parser = model.delta_head.parser
    torch.nn.init.constant_(parser.gates.bias, BIG_LOGIT)  # every gate open: the parse is the spelled values
    torch.nn.init.zeros_(parser.gates.weight)
    input_ids = torch.tensor([[3, 11, 12, 70, 13]])  # 3 and 70 spell nothing
    parsed = parser(model.model(input_ids).last_hidden_state, None, input_ids)
    expected = [12, 12, 13, 14, 14, 0, 0, 0]  # 11 -> [12, 12], 12 -> [13], 13 -> [14, 14], then empty cells
    assert parsed.cells.argmax(-1).tolist() == [expected]
    torch.testing.assert_close(parsed.cells.max(-1).values, torch.ones(1, 8))
    assert parsed.gates.view(5, 2)[[0, 3]].eq(0).all() and parsed.gates.view(5, 2)[2, 1] == 0  # nothing spelled
    with pytest.raises(ValueError, match="pass input_ids"):
        parser(model.model(input_ids).last_hidden_state, None)


def test_sampled_parses_are_exact_compactions_with_their_log_probability():
    torch.manual_seed(0)
    n, samples = 8, 64
    gates = torch.tensor([[0.5, 0.9, 0.0, 0.2]], requires_grad=True)  # (B=1, E=4); element 2 spelled nothing
    elements = F.one_hot(torch.tensor([[3, 5, 1, 7]]), n).float()  # (1, 4, n)
    registers = torch.full((1, 1, n), 1 / n)
    parsed = ParsedElements(compact_elements(gates, elements, 4), registers, torch.ones(1, 1), gates, elements)
    (cells, drawn_registers), log_q = TokenParser.sample(parsed, samples)
    assert cells.shape == (samples, 4, n) and drawn_registers.shape == (samples, 1, n) and log_q.shape == (1, samples)
    assert torch.equal(cells.max(-1).values, torch.ones(samples, 4))  # one-hot
    for cell_row, lq in zip(cells.argmax(-1).tolist(), log_q[0].tolist(), strict=True):
        emitted = [v for v in cell_row if v]
        assert emitted == [v for v in (3, 5, 7) if v in emitted] and 1 not in emitted  # order kept, off never on
        q = {3: 0.5, 5: 0.9, 7: 0.2}
        exploring = {v: 0.05 + 0.9 * p for v, p in q.items()}
        expected = sum(math.log(p if v in emitted else 1 - p) for v, p in exploring.items()) + math.log(1 / n)
        assert lq == pytest.approx(expected, abs=1e-5)
    log_q.sum().backward()
    assert gates.grad[0, 2] == 0 and gates.grad[0, [0, 1, 3]].ne(0).all()


def test_score_function_loss_value_and_gradient():
    # Two examples x three samples, K = 2 answer elements over n = 4; the second answer element of example 1 is
    # padding. Exact runs: one-hot answers (probability 1 or ~0 on the label).
    right, wrong = torch.log(torch.tensor([1.0, 1e-6, 1e-6, 1e-6])), torch.log(torch.tensor([1e-6, 1.0, 1e-6, 1e-6]))
    answer_logits = torch.stack(
        [torch.stack([torch.stack([right, right]), torch.stack([right, wrong]), torch.stack([wrong, wrong])])] * 2
    )  # (2, 3, 2, 4)
    labels = torch.tensor([[0, 0], [0, -100]])
    log_q = torch.zeros(2, 3, requires_grad=True)
    loss, per_sample = score_function_loss(answer_logits, labels, log_q)
    big = -math.log(1e-6)
    torch.testing.assert_close(per_sample, torch.tensor([[0, big / 2, big], [0, 0, big]]))
    torch.testing.assert_close(loss, per_sample.mean())
    loss.backward()
    baseline = (per_sample.sum(1, keepdim=True) - per_sample) / 2
    torch.testing.assert_close(log_q.grad, (per_sample - baseline) / 6)  # advantage / (B·S)


def test_sampled_parses_train_and_evaluate_on_the_arg_max():
    config = spelled_config(delta_parse_samples=4)
    model = tiny_model(config).train()
    torch.manual_seed(0)
    # Tokens 11, 12, 13 spell [12, 12], [13], [14, 14]: sorted, the answer starts 12 12 13 14.
    inputs = {"input_ids": torch.tensor([[3, 11, 12, 70, 13]] * 3), "labels": torch.tensor([[12, 12, 13, 14]] * 3)}
    out = model(**inputs)
    assert out.sample_loss.shape == (3, 4) and torch.isfinite(out.loss)
    assert out.sample_loss.std() > 0  # the samples differ, so the advantages do
    out.loss.backward()
    assert model.delta_head.parser.gates.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        first, second = model(**inputs), model(**inputs)
    assert first.sample_loss is None and torch.equal(first.answer_logits, second.answer_logits)  # deterministic
    assert torch.equal(first.answer_logits.exp().max(-1).values.round(), torch.ones(3, 4))  # Δ ran a one-hot parse
