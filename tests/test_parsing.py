"""The parse-mode registry: one parser class per `delta_parse_mode`, each with its own parameters, forward, sampled
and greedy parses; checkpoint keys as before the registry; a subclass hook replaces a mode's values."""

import pytest
import torch
import torch.nn.functional as F

from modeling_llama_delta import LIBRARY, LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA
from modeling_llama_delta.parsing import (
    PARSE_MODES,
    PARSERS,
    DeltaParser,
    LastTokenParser,
    MixedParser,
    ParsedElements,
    ParsedQuestion,
    SlotParser,
    TokenParser,
    build_parser,
    compact_elements,
    compact_emitted,
)
from tests.helpers.configs import COPYING_SLOTS, TINY_LLAMA

REGISTERS = dict(delta_word_size=16, delta_memory_size=8, delta_max_steps=8, delta_answer_length=2)
STRING = dict(
    delta_word_size=32,
    delta_memory_size=8,
    delta_max_steps=90,
    delta_programs={"sort": LIBRARY["sort"]},
    delta_parse_mode="tokens",
    delta_elements_per_token=2,
    delta_input_cells=5,
    delta_input_registers=1,
    delta_answer_source="memory",
    delta_answer_length=4,
)
# The parser's state-dict keys per mode, as they were before the registry (checkpoints keep loading).
PARSER_KEYS = {
    "last_token": {"norm.weight", "select.weight", "select.bias", "values.weight", "values.bias"},
    "slots": {"norm.weight", "select.weight", "select.bias", "queries", "keys.weight", "values", "values_bias"},
    "tokens": {
        "norm.weight",
        "select.weight",
        "select.bias",
        "values.weight",
        "values.bias",
        "gates.weight",
        "gates.bias",
        "elements.weight",
        "elements.bias",
    },
    "mixed": {
        "norm.weight",
        "select.weight",
        "select.bias",
        "queries",
        "keys.weight",
        "values",
        "values_bias",
        "gates.weight",
        "gates.bias",
        "elements.weight",
        "elements.bias",
    },
}


def config_for(mode: str, **overrides) -> LlamaDeltaConfig:
    delta = (
        {**STRING, "delta_parse_mode": mode} if mode in ("tokens", "mixed") else {**REGISTERS, "delta_parse_mode": mode}
    )
    return LlamaDeltaConfig(**{**TINY_LLAMA, **delta, **overrides})


def test_the_registry_names_every_parse_mode_once():
    assert tuple(PARSERS) == PARSE_MODES == ("last_token", "slots", "tokens", "mixed")
    assert PARSERS == {"last_token": LastTokenParser, "slots": SlotParser, "tokens": TokenParser, "mixed": MixedParser}
    assert all(issubclass(cls, DeltaParser) for cls in PARSERS.values())


@pytest.mark.parametrize("mode", PARSE_MODES)
def test_the_config_builds_its_class_with_the_old_state_dict_keys(mode):
    config = config_for(mode)
    parser = build_parser(config)
    assert type(parser) is PARSERS[mode]
    assert set(parser.state_dict()) == PARSER_KEYS[mode]
    model = LlamaDeltaForAlgorithmicQA(config)
    assert type(model.delta_head.parser) is PARSERS[mode]


@pytest.mark.parametrize("mode", PARSE_MODES)
def test_each_mode_parses_distributions_and_samples_one_hot_parses(mode):
    torch.manual_seed(0)
    config = config_for(mode)
    parser = LlamaDeltaForAlgorithmicQA(config).delta_head.parser  # initialised (`_init_weights`)
    b, t, n, samples = 3, 6, config.delta_word_size, 4
    parsed = parser(torch.randn(b, t, config.hidden_size), torch.ones(b, t, dtype=torch.long))
    assert isinstance(parsed, ParsedElements if mode in ("tokens", "mixed") else ParsedQuestion)
    for values, rows in ((parsed.cells, config.delta_input_cells), (parsed.registers, config.delta_input_registers)):
        assert values.shape == (b, rows, n)
        torch.testing.assert_close(values.sum(-1), torch.ones(b, rows))
    (cells, registers), log_q = parser.sample(parsed, samples)
    assert cells.shape == (b * samples, config.delta_input_cells, n) and log_q.shape == (b, samples)
    assert torch.equal(cells.sum(-1), torch.ones(b * samples, config.delta_input_cells))  # one-hot
    assert torch.equal(registers.max(-1).values, torch.ones_like(registers[..., 0]))
    assert bool((log_q < 0).all())
    greedy_cells, greedy_registers = parser.greedy(parsed)
    assert torch.equal(greedy_registers.argmax(-1), parsed.registers.argmax(-1))
    if mode not in ("tokens", "mixed"):  # `tokens`, `mixed`: the arg-max of the factors, not of the compacted cells
        assert torch.equal(greedy_cells.argmax(-1), parsed.cells.argmax(-1))


def test_token_parses_are_sampled_by_their_factors():
    """Under `tokens` the greedy parse compacts the elements whose gate is above 1/2, so a cell never repeats an
    element; the arg-max of the soft cells would (a cell whose mass is split picks either neighbour)."""
    n = 8
    gates = torch.tensor([[0.9, 0.2, 0.6]])  # (B=1, E=3)
    elements = F.one_hot(torch.tensor([[3, 5, 7]]), n).float()  # (1, 3, n)
    parsed = ParsedElements(torch.zeros(1, 3, n), torch.full((1, 1, n), 1 / n), torch.ones(1, 1), gates, elements)
    cells, _ = TokenParser.greedy(parsed)
    assert cells.argmax(-1).tolist() == [[3, 7, 0]]


def test_a_subclass_hook_replaces_the_slot_values():
    """What experiments/numeral_pointer.py does: a `SlotParser` subclass whose value slots copy the attended token's
    lexicon value; swapped into a model with the same weights."""

    class PointerParser(SlotParser):
        def slot_values(self, attention, read, input_ids):
            spelled = F.one_hot((input_ids % self.n), self.n).float()  # (B, T, n): token id mod n
            return torch.einsum("bst,btn->bsn", attention, spelled)  # (B, S, n)

    config = config_for("slots")
    model = LlamaDeltaForAlgorithmicQA(config).eval()
    pointer = PointerParser(config)
    pointer.load_state_dict(model.delta_head.parser.state_dict())
    model.delta_head.parser = pointer
    with torch.no_grad():
        pointer.queries.zero_()  # uniform attention: every slot's value is the mean of the tokens' values
    input_ids = torch.tensor([[3, 3, 19, 19]])  # 19 mod 16 = 3: every token spells 3
    out = model(input_ids=input_ids)
    assert out.parsed_registers.argmax(-1).tolist() == [[3, 3]]
    torch.testing.assert_close(out.parsed_registers.max(-1).values, torch.ones(1, 2))


def test_copying_is_refused_where_the_mode_copies_nothing():
    with pytest.raises(ValueError, match="delta_token_values needs delta_parse_mode 'slots' or 'tokens'"):
        LlamaDeltaConfig(**TINY_LLAMA, **{**COPYING_SLOTS, "delta_parse_mode": "last_token"})
    with pytest.raises(ValueError, match=r"delta_input_cells = 0 is out of range: allowed 1\.\.8"):
        config_for("tokens", delta_input_cells=0)


@pytest.mark.parametrize("num_cells", [1, 5, 12])
def test_hard_compaction_equals_the_soft_one_on_hard_gates(num_cells):
    """Sampled and greedy parses compact 0/1 gates in one scatter; it must equal the per-position pass exactly,
    with elements past the last cell dropped and empty cells holding 0 (one-hot and soft values alike)."""
    generator = torch.Generator().manual_seed(num_cells)
    gates = torch.rand(6, 10, generator=generator) < 0.6  # (B, S)
    gates[0] = False  # nothing emitted
    gates[1] = True  # more elements than cells where num_cells < 10
    one_hot = F.one_hot(torch.randint(0, 7, (6, 10), generator=generator), 7).float()  # (B, S, n)
    soft = torch.rand(6, 10, 7, generator=generator, dtype=torch.float64).softmax(-1)
    for values in (one_hot, soft):
        expected = compact_elements(gates.to(values), values, num_cells)
        assert torch.allclose(compact_emitted(gates, values, num_cells), expected, atol=1e-12, rtol=0)
    assert torch.equal(compact_emitted(gates, one_hot, num_cells), compact_elements(gates.float(), one_hot, num_cells))
