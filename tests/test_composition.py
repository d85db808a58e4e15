"""main() as real code on Δ (modeling_llama_delta/composition.py): on random mains over random inputs, the chained
reference run, the batched discrete chain, the soft chain (one-hot) and the assembled `.func main` agree."""

from __future__ import annotations

import random
import re

import pytest
import torch
import torch.nn.functional as F

from modeling_llama_delta.assembler import assemble
from modeling_llama_delta.composition import (
    KEEP,
    PREVIOUS,
    PROGRAM_INPUTS,
    Call,
    MainProgram,
    mains_to_tensors,
    run_main_discrete,
    run_main_reference,
    run_main_soft,
    to_assembly,
)
from modeling_llama_delta.discrete import DiscreteMachine
from modeling_llama_delta.library import LIBRARY, PROGRAM_NAMES, assemble_library
from modeling_llama_delta.machine import DeltaMachine
from modeling_llama_delta.reference import run_reference

# Programs that push ra onto a stack in memory: there the chain and the assembled main() differ (module docstring).
STACK_PROGRAMS = ("fib_recursive", "fib_linear")
NUM_PARSED, MAX_INPUTS, K = 4, 3, 3


def test_program_inputs_match_the_library_sources():
    """PROGRAM_INPUTS lists as many registers as each program's `In:` line names (r0, r1, ...; sp is no input)."""
    assert set(PROGRAM_INPUTS) == set(LIBRARY)
    for name, source in LIBRARY.items():
        line = re.search(r"In: (.*?)(?:Out:|$)", source, re.S).group(1)
        registers = sorted({int(r) for r in re.findall(r"\br(\d)\b", line)})
        assert registers == list(range(len(PROGRAM_INPUTS[name]))), (name, line)


def random_main(rng: random.Random, names: list[str], num_parsed: int) -> MainProgram:
    calls = []
    for k in range(rng.randint(1, K)):
        name = rng.choice(names)
        sources = tuple(
            PREVIOUS if k and rng.random() < 0.4 else rng.randrange(num_parsed) for _ in PROGRAM_INPUTS[name]
        )
        calls.append(Call(PROGRAM_NAMES.index(name), sources))
    return MainProgram(tuple(calls))


def random_memory(rng: random.Random, n: int, longest: int) -> list[int]:
    """A zero-terminated string of values 1..n-1; half the time decimal digit characters (add_digits' input)."""
    length = rng.randint(0, longest)
    if rng.random() < 0.5:
        return [rng.randint(48, 57) for _ in range(length)] + [0] + [rng.randint(48, 57) for _ in range(length)] + [0]
    return [rng.randrange(1, n) for _ in range(length)] + [0]


def test_random_mains_discrete_reference_and_assembly_agree():
    n, r, m, steps = 128, 8, 48, 3000
    rng = random.Random(0)
    library = assemble_library(PROGRAM_NAMES, n=n, num_registers=r)
    programs = [library[name] for name in PROGRAM_NAMES]
    names = [name for name in PROGRAM_NAMES if name not in STACK_PROGRAMS]
    mains = [random_main(rng, names, NUM_PARSED) for _ in range(60)]
    parsed = [[rng.randrange(n) if rng.random() < 0.5 else rng.randrange(12) for _ in range(NUM_PARSED)] for _ in mains]
    memories = [random_memory(rng, n, 11) for _ in mains]
    width = max(len(memory) for memory in memories)
    machine = DiscreteMachine(programs, memory_size=m, max_steps=steps)
    program_tensor, source_tensor = mains_to_tensors(mains, K, MAX_INPUTS)
    memory_tensor = torch.tensor([memory + [0] * (width - len(memory)) for memory in memories])
    final = run_main_discrete(machine, program_tensor, source_tensor, torch.tensor(parsed), memory_tensor, steps)
    assert {len(main.calls) for main in mains} == {1, 2, 3}
    for b, (main, values, memory) in enumerate(zip(mains, parsed, memories, strict=True)):
        chained = run_main_reference(main, programs, values, memory, m, max_steps=steps)
        assert chained.halted  # every library program halts on every input here
        assert final.memory[b].tolist() == chained.memory, main
        assert final.registers[b].tolist() == chained.registers, main
        assert bool(final.halted[b]) and int(final.steps[b]) == chained.steps
        text = to_assembly(main, PROGRAM_NAMES, values, LIBRARY, n, r, memory)
        whole = assemble(text, n, r)
        assembled = run_reference(whole, m, memory, max_steps=K * steps + 20)
        assert assembled.halted, text
        assert assembled.memory == chained.memory, text
        assert assembled.registers[: r - 1] == chained.registers[: r - 1], text  # ra: a return address into main


def test_the_assembly_names_its_calls_and_values():
    main = MainProgram((Call(PROGRAM_NAMES.index("add"), (0, 1)), Call(PROGRAM_NAMES.index("mul"), (PREVIOUS, 2))))
    text = to_assembly(main, PROGRAM_NAMES, [3, 4, 5], LIBRARY)
    assert ".func main" in text and "call add" in text and "call mul" in text and "const r1, 5" in text
    result = run_reference(assemble(text, 128, 8), 1)
    assert result.halted and result.registers[0] == (3 + 4) * 5
    # sort and reverse both define `test:`; renamed, they assemble together
    both = MainProgram((Call(PROGRAM_NAMES.index("sort")), Call(PROGRAM_NAMES.index("reverse"))))
    text = to_assembly(both, PROGRAM_NAMES, [], LIBRARY, memory=[ord(c) for c in "dacb"] + [0])
    assert "sort.test" in text and "reverse.test" in text
    result = run_reference(assemble(text, 128, 8), 8, [ord(c) for c in "dacb"] + [0], max_steps=2000)
    assert result.memory[:5] == [ord(c) for c in "dcba"] + [0]


@pytest.mark.parametrize(
    ("main", "message"),
    [
        (MainProgram(()), "1..3 calls"),
        (MainProgram((Call(0, (PREVIOUS, 0)),)), "first call"),
        (MainProgram((Call(0, (0, 9)),)), "neither PREVIOUS"),
        (MainProgram((Call(99, (0, 1)),)), "program 99"),
        (MainProgram((Call(0, (0, 1, 2, 3, 0, 1, 2)),)), "inputs"),
    ],
)
def test_bad_mains_are_refused(main, message):
    with pytest.raises(ValueError, match=message):
        main.check(num_programs=len(PROGRAM_NAMES), num_parsed=4, num_registers=8)


def one_hot_inputs(mains, parsed, p: int, n: int):
    """The soft run's inputs for integer mains: one-hot selections (stop after the last call) and sources."""
    programs, sources = mains_to_tensors(mains, K, MAX_INPUTS)
    selections = F.one_hot(torch.where(programs < 0, p, programs), p + 1).float()  # (B, K, P + 1)
    v = NUM_PARSED
    index = torch.where(sources == PREVIOUS, v, torch.where(sources == KEEP, v + 1, sources))
    return selections, F.one_hot(index, v + 2).float(), F.one_hot(torch.tensor(parsed), n).float()


SOFT_NAMES = ["add", "sub", "mul", "max", "min", "strlen", "count", "reverse", "sort"]


def test_soft_chain_equals_the_discrete_chain_on_one_hot_inputs():
    """The soft machine's chain on one-hot mains is the discrete chain exactly: every value one-hot, equal."""
    n, r, m = 32, 8, 10
    rng = random.Random(1)
    library = assemble_library(SOFT_NAMES, n=n, num_registers=r)
    programs = [library[name] for name in SOFT_NAMES]
    soft = DeltaMachine(n, r, m, max_steps=400, programs={name: LIBRARY[name] for name in SOFT_NAMES})
    discrete = DiscreteMachine(programs, memory_size=m, max_steps=400)
    mains = []
    for _ in range(8):
        main = random_main(rng, SOFT_NAMES, NUM_PARSED)
        mains.append(
            MainProgram(tuple(Call(SOFT_NAMES.index(PROGRAM_NAMES[c.program]), c.sources) for c in main.calls))
        )
    parsed = [[rng.randrange(n) for _ in range(NUM_PARSED)] for _ in mains]
    memory = torch.tensor([[rng.randrange(1, n) for _ in range(5)] + [0] for _ in mains])
    selections, sources, parsed_one_hot = one_hot_inputs(mains, parsed, len(SOFT_NAMES), n)
    program_tensor, source_tensor = mains_to_tensors(mains, K, MAX_INPUTS)
    # A call after a stop does not run, on either machine: put one after each one-call main's stop.
    one_call = program_tensor[:, 1] < 0
    assert bool(one_call.any()) and not bool(one_call.all())
    program_tensor[one_call, 2] = SOFT_NAMES.index("reverse")
    selections[one_call, 2] = F.one_hot(torch.tensor(SOFT_NAMES.index("reverse")), len(SOFT_NAMES) + 1).float()
    state = run_main_soft(soft, selections, sources, parsed_one_hot, F.one_hot(memory, n).float())
    exact = run_main_discrete(discrete, program_tensor, source_tensor, torch.tensor(parsed), memory)
    assert bool(exact.halted.all())
    assert state.confidence().min().item() == 1.0 and bool((state.halted == 1).all())
    assert torch.equal(state.memory.argmax(-1), exact.memory)
    assert torch.equal(state.registers.argmax(-1)[:, : r - 1], exact.registers[:, : r - 1])


def test_soft_chain_gives_gradients_to_the_choices_and_the_sources():
    n, r, m = 16, 8, 4
    names = ["add", "mul", "max"]
    soft = DeltaMachine(n, r, m, max_steps=10, programs={name: LIBRARY[name] for name in names})
    torch.manual_seed(0)
    selection_logits = torch.randn(2, K, len(names) + 1, requires_grad=True)
    source_logits = torch.randn(2, K, 2, NUM_PARSED + 2, requires_grad=True)
    parsed = F.one_hot(torch.randint(0, n, (2, NUM_PARSED)), n).float()
    state = run_main_soft(soft, selection_logits.softmax(-1), source_logits.softmax(-1), parsed)
    assert torch.allclose(state.registers.sum(-1), torch.ones(2, r))  # distributions stay distributions
    loss = -state.registers[:, 0, 3].log().sum()
    loss.backward()
    for grad in (selection_logits.grad, source_logits.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
