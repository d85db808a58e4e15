"""`LlamaDeltaForComposedQA`: the soft chain trains every choice; evaluation runs the decoded main() exactly, and
`explain` prints assembly whose reference run gives the model's answer."""

from __future__ import annotations

import pytest
import torch

from modeling_llama_delta import LlamaDeltaConfig
from modeling_llama_delta.assembler import assemble
from modeling_llama_delta.composition import PREVIOUS, run_main_reference
from modeling_llama_delta.library import LIBRARY, assemble_library
from modeling_llama_delta.modeling_composition import LlamaDeltaForComposedQA
from modeling_llama_delta.reference import run_reference
from tests.helpers.configs import TINY_LLAMA

NAMES = ("add", "max", "mul", "sub")
N = 128
QUESTIONS = [
    "Add 3 and 4, then multiply the result by 5.",
    "What is max(9, 2) - 7? Work modulo 128.",
    "Add 100 and 27, multiply by 3, then subtract 1.",
    "What is 6 * 7 + 8?",
]


@pytest.fixture(scope="module")
def tokenizer():
    from llama_delta.tokenizer import load_llama3_tokenizer

    return load_llama3_tokenizer()


def composed_model(tokenizer, seed: int = 0) -> LlamaDeltaForComposedQA:
    from llama_delta.task_settings import numeral_token_values

    torch.manual_seed(seed)
    config = LlamaDeltaConfig(
        **{**TINY_LLAMA, "vocab_size": len(tokenizer)},
        delta_programs={name: LIBRARY[name] for name in NAMES},
        delta_word_size=N,
        delta_num_registers=8,
        delta_memory_size=1,
        delta_max_steps=3,
        delta_parse_mode="slots",
        delta_input_cells=0,
        delta_input_registers=4,
        delta_answer_source="registers",
        delta_answer_length=1,
        delta_token_values=numeral_token_values(tokenizer, N),
    )
    return LlamaDeltaForComposedQA(config)


def test_soft_chain_trains_every_choice(tokenizer):
    model = composed_model(tokenizer).train()
    batch = tokenizer(QUESTIONS, return_tensors="pt", padding=True)
    out = model(batch["input_ids"], batch["attention_mask"], labels=torch.tensor([[35], [2], [124], [50]]))
    assert torch.isfinite(out.loss)
    assert out.selections.shape == (4, 3, len(NAMES) + 1) and out.sources.shape == (4, 3, 2, 5)
    assert bool((out.selections[:, 0, -1] == 0).all()) and bool((out.sources[:, 0, :, -1] == 0).all())
    out.loss.backward()
    head = model.delta_head
    for name, parameter in [("queries", head.call_queries), ("choose", head.choose.weight)]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert head.source.weight.grad.abs().sum() > 0 and head.parser.values.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_answers_and_explain_are_the_decoded_main_run(tokenizer, seed):
    """Whatever an (untrained) model decides, its answer is the reference chain of the main() it decodes, and the
    explained assembly, assembled and run, gives that answer."""
    model = composed_model(tokenizer, seed)
    library = assemble_library(NAMES, n=N, num_registers=8)
    programs = [library[name] for name in NAMES]
    answers = model.solve(QUESTIONS, tokenizer)
    for question, decoded, answer in zip(QUESTIONS, model.decode(QUESTIONS, tokenizer), answers, strict=True):
        chained = run_main_reference(decoded.main, programs, decoded.parsed_values, memory_size=1)
        assert answer == str(chained.registers[0])
        text = model.explain(question, tokenizer)
        assert f";; answer: {answer}" in text and ".func main" in text
        assembled = run_reference(assemble(text, N, 8), 1, max_steps=100)
        assert assembled.halted and assembled.registers[0] == int(answer)


def test_a_forced_main_is_run_as_decoded(tokenizer):
    """Biases that force add(v0, v1), then mul(previous, v2), then stop: the answer is (v0 + v1) * v2 of the
    parsed values, and the decoded main() says so."""
    model = composed_model(tokenizer)
    head = model.delta_head
    with torch.no_grad():
        head.choose.weight.zero_()
        head.source.weight.zero_()
        head.choose.bias.copy_(torch.tensor([50.0, 0, 0, 0, 0]))  # add, max, mul, sub, stop
        head.source.bias.copy_(torch.tensor([50.0, 0, 0, 0, 0, 0, 50.0, 0, 0, 0]))  # r0 <- v0, r1 <- v1
    # The three calls share the biases; the second call's own: mul, r0 <- previous, r1 <- v2; the third stops.
    original = head.forward

    def forced(*args):
        parsed, selections, sources = original(*args)
        selections = selections.clone()
        sources = sources.clone()
        selections[:, 1] = torch.tensor([0.0, 0, 1, 0, 0])
        selections[:, 2] = torch.tensor([0.0, 0, 0, 0, 1])
        sources[:, 1, 0] = torch.tensor([0.0, 0, 0, 0, 1])
        sources[:, 1, 1] = torch.tensor([0.0, 0, 1, 0, 0])
        return parsed, selections, sources

    head.forward = forced
    decoded = model.decode(QUESTIONS, tokenizer)
    answers = model.solve(QUESTIONS, tokenizer)
    for main, answer in zip(decoded, answers, strict=True):
        assert [(call.program, call.sources) for call in main.main.calls] == [(0, (0, 1)), (2, (PREVIOUS, 2))]
        v = main.parsed_values
        assert answer == str((v[0] + v[1]) * v[2] % N)
