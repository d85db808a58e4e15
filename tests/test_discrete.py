"""The discrete machine (`discrete.py`) against the reference interpreter and the soft machine on one-hot inputs, and
its use in the model: sampled and greedy parses, evaluation and `solve` give what the soft machine gives."""

import random

import pytest
import torch
import torch.nn.functional as F

import modeling_llama_delta.modeling_llama_delta as modeling
from llama_delta.build import build_delta_model
from llama_delta.task_settings import delta_settings, load_task_data
from llama_delta.tokenizer import load_llama3_tokenizer
from modeling_llama_delta import LIBRARY, LlamaDeltaConfig, LlamaDeltaForAlgorithmicQA, assemble, run_reference
from modeling_llama_delta.assembler import OPCODES
from modeling_llama_delta.discrete import DiscreteMachine, one_hot_values
from modeling_llama_delta.library import assemble_library
from modeling_llama_delta.machine import DeltaMachine
from tests.helpers.configs import TINY_LLAMA
from tests.helpers.programs import random_program
from tests.test_machine import BACKENDS

SAMPLE_PROGRAM = modeling.sample_program  # the unpatched function (a test records its draws through a wrapper)


def check_every_pair(programs, memory_size, memory, registers, max_steps, alu):
    """Run every program on every input: discrete (one batched run, each example its own program), reference and
    soft (the programs as a library). memory (I, km), registers (I, kr) long. Returns the discrete steps run."""
    inputs, p = memory.shape[0], len(programs)
    discrete = DiscreteMachine(programs, memory_size)
    program = torch.arange(p).repeat_interleave(inputs)  # (P·I,): program-major pairs in one batch
    start = discrete.start_state(program, memory.repeat(p, 1), registers.repeat(p, 1))
    final, steps = discrete.run(start, max_steps=max_steps)
    soft = DeltaMachine(programs[0].n, programs[0].num_registers, memory_size, alu=alu, programs=programs)
    n = soft.n
    out = soft(soft.start_state(F.one_hot(memory, n).float(), F.one_hot(registers, n).float()), max_steps=max_steps)
    # The soft states (I, P, ...) as the discrete batch's order (P·I, ...): identical one-hot tensors.
    soft_states = out.program_states.map(lambda t: t.transpose(0, 1).flatten(0, 1))
    one_hot = final.one_hot(n)
    for name in ("memory", "registers", "counter", "halted"):
        assert torch.equal(getattr(one_hot, name), getattr(soft_states, name)), name
    assert steps == out.steps
    for i in range(p * inputs):
        program_index, example = divmod(i, inputs)
        ref = run_reference(
            programs[program_index], memory_size, memory[example].tolist(), registers[example].tolist(),
            max_steps=max_steps,
        )  # fmt: skip
        where = f"program {program_index}, input {example}:\n{programs[program_index].source}"
        assert final.memory[i].tolist() == ref.memory, where
        assert final.registers[i].tolist() == ref.registers, where
        assert (bool(final.halted[i]), int(final.steps[i])) == (ref.halted, ref.steps), where
    return steps


@pytest.mark.parametrize("alu", BACKENDS)
@pytest.mark.parametrize("n,r,m", [(16, 4, 8), (32, 8, 20)])
def test_random_programs_match_reference_and_soft_machine(alu, n, r, m):
    """Random programs (every opcode, loops, call/ret, stray jumps) for up to 1000 steps; some never halt."""
    rng = random.Random(4321 + n)
    programs = [assemble(random_program(rng, n, r, rng.randrange(2, n - 1)), n, r) for _ in range(24)]
    generator = torch.Generator().manual_seed(n)
    memory = torch.randint(0, n, (3, rng.randrange(m + 1)), generator=generator)
    registers = torch.randint(0, n, (3, rng.randrange(r - 1)), generator=generator)
    ops = {ins.op for program in programs for ins in program.instructions}
    assert ops == set(OPCODES)  # every opcode is exercised
    assert check_every_pair(programs, m, memory, registers, max_steps=1000, alu=alu) == 1000


@pytest.mark.parametrize("alu", BACKENDS)
def test_every_library_program_matches_reference_and_soft_machine(alu):
    n, r, m = 64, 8, 16  # n >= 58: parity and add_digits read digit characters
    programs = list(assemble_library(n=n, num_registers=r).values())
    generator = torch.Generator().manual_seed(0)
    memory = torch.randint(1, 20, (4, 8), generator=generator)
    memory[:, 5:] = 0  # zero-terminated strings of length 5 (and arrays/digits for the others)
    registers = torch.tensor([[5, 3, 0, 0, 0, 0, 4], [7, 0, 0, 0, 0, 0, 0], [2, 9, 0, 0, 0, 0, 1], [0] * 7])  # sp: r6
    check_every_pair(programs, m, memory, registers, max_steps=700, alu=alu)


def test_start_state_follows_the_isa_and_checks_its_input():
    programs = [assemble(".func f\nhalt", 16, 4), assemble("inc r0, r0\n.func f\nhalt", 16, 4)]
    discrete = DiscreteMachine(programs, memory_size=4)
    start = discrete.start_state(torch.tensor([0, 1]), registers=torch.tensor([[3], [5]]))
    assert start.registers.tolist() == [[3, 0, 0, 1], [5, 0, 0, 2]]  # ra = each program's trailing halt line
    assert start.counter.tolist() == [0, 0] and start.memory.tolist() == [[0] * 4] * 2
    assert discrete.start_state(torch.tensor([1, 0]), entry="f").counter.tolist() == [1, 0]
    with pytest.raises(ValueError, match="program 0 has no entry function 'g'"):
        discrete.start_state(torch.tensor([1]), entry="g")
    with pytest.raises(ValueError, match=r"program must be \(B,\) long indices in 0..1"):
        discrete.start_state(torch.tensor([2]))
    with pytest.raises(ValueError, match=r"memory must be \(B=1, k <= 4\) values"):
        discrete.start_state(torch.tensor([0]), memory=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="registers values must be in 0..15"):
        discrete.start_state(torch.tensor([0]), registers=torch.tensor([[16]]))
    with pytest.raises(ValueError, match="memory_size = 17 is out of range 1..16"):
        DiscreteMachine(programs, memory_size=17)


def test_one_hot_values_only_for_exactly_one_hot_distributions():
    one_hot = F.one_hot(torch.tensor([[2, 0, 1]]), 4).float()
    assert one_hot_values(one_hot).tolist() == [[2, 0, 1]]
    assert one_hot_values(one_hot * (1 - 1e-7) + 1e-7 / 4) is None  # close is not exact
    assert one_hot_values(one_hot * 2) is None
    assert one_hot_values(one_hot.clone().requires_grad_()) is None  # a gradient is asked of the run


# --- the model: sampled and greedy parses run on the discrete machine
@pytest.fixture(scope="module")
def sort_model_and_data(tmp_path_factory):
    """A random-init minimal Llama + Δ holding `reverse` and `sort`, as train_sft builds it, and sort data."""
    cache = tmp_path_factory.mktemp("data")
    tokenizer = load_llama3_tokenizer()
    data = load_task_data("sort", cache_dir=str(cache), lengths=[4, 5], ood_lengths=[6], dataset_size=24, ood_size=24)
    settings = delta_settings("sort", data, tokenizer, programs=("reverse", "sort"), parse_samples=4)
    torch.manual_seed(0)
    backbone = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    # Room for every token's element: the random gates emit words too, which fixed cells would refuse.
    cells = {"delta_memory_size": 32, "delta_input_cells": 32, "delta_answer_length": 32}
    cells["delta_min_answer_probability"] = 0.0  # random gates are unsure: answer anyway, to compare the machines
    model = build_delta_model(
        None, backbone_kwargs={**backbone, "num_key_value_heads": 1}, **settings.delta_config | cells
    )
    torch.nn.init.normal_(model.delta_head.parser.gates.weight, std=0.5)  # gates on and off: parses of every kind
    model.eval()
    with torch.no_grad():  # shift the selection's bias so that each program is the arg-max for about half the questions
        questions = [question for split in data.values() for question in split["question"]]
        selection = model(**tokenizer(questions, return_tensors="pt", padding=True)).selection  # (N, 2)
        model.delta_head.parser.select.bias[1] += (selection[:, 0] / selection[:, 1]).log().median()
    return model, data, tokenizer


def test_solve_gives_the_soft_machines_answers_on_every_test_split(sort_model_and_data):
    model, data, tokenizer = sort_model_and_data
    head = model.delta_head
    for name in ("test", "ood_length_6"):
        questions = list(data[name]["question"])
        head.discrete_runs = False
        soft = model.solve(questions, tokenizer, batch_size=8, refuse=False)
        head.discrete_runs = True
        discrete = model.solve(questions, tokenizer, batch_size=8, refuse=False)
        # The soft machine runs the data's step budget, and refuses the parses (words emitted too) that do not halt
        # within it; the discrete run, sized per question, answers them too. Where both answer, they agree.
        answered = [i for i, answer in enumerate(soft) if answer is not None]
        assert [discrete[i] for i in answered] == [soft[i] for i in answered], name
        assert None not in discrete, name
        assert len({soft[i] for i in answered}) > 1  # the parses differ: the comparison is not between constants
        with torch.no_grad():
            batch = tokenizer(questions, return_tensors="pt", padding=True)
            picked = model(**batch).selection.argmax(-1)
        assert set(picked.tolist()) == {0, 1}, name  # both programs ran


def test_sampled_runs_equal_the_soft_machine_and_the_program_gets_a_score_function_gradient(
    sort_model_and_data, monkeypatch
):
    model, data, tokenizer = sort_model_and_data
    model.train()
    head, select = model.delta_head, model.delta_head.parser.select
    batch = tokenizer(list(data["train"]["question"][:6]), return_tensors="pt", padding=True)
    answers = list(data["train"]["answer_ids"][:6])
    width = model.config.delta_answer_length
    labels = torch.tensor([row + [-100] * (width - len(row)) for row in answers])
    drawn = []
    monkeypatch.setattr(modeling, "sample_program", lambda *a: drawn.append(SAMPLE_PROGRAM(*a)) or drawn[-1])
    runs = {}
    for discrete in (True, False):
        head.discrete_runs = discrete
        model.zero_grad()
        torch.manual_seed(1)
        out = model(**batch, labels=labels)
        out.loss.backward(retain_graph=True)  # the expected gradient below reads the graph again
        runs[discrete] = out.sample_loss.detach(), select.weight.grad.clone(), out
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=0, atol=0)  # the same sampled runs
    torch.testing.assert_close(runs[True][1], runs[False][1])
    # The selection's gradient is the score-function term of the sampled programs: mean(advantage · d log q).
    program, _ = drawn[-1]
    out = runs[False][2]
    samples = out.sample_loss.shape[1]
    loss = out.sample_loss.detach()
    advantage = loss - (loss.sum(1, keepdim=True) - loss) / (samples - 1)  # (B, S) leave-one-out
    log_q = torch.log(out.selection.gather(1, program.view(-1, samples)))  # (B, S)
    (expected,) = torch.autograd.grad((advantage * log_q).mean(), select.weight)
    assert expected.abs().sum() > 0
    torch.testing.assert_close(runs[True][1], expected)
    model.eval()


def test_sampled_program_is_drawn_from_the_selection():
    torch.manual_seed(0)
    selection = torch.tensor([[0.2, 0.8], [1.0, 0.0]], requires_grad=True)
    program, log_q = modeling.sample_program(selection, 2000)
    assert program.shape == (4000,) and log_q.shape == (2, 2000)
    share = program.view(2, -1).float().mean(1)
    assert abs(float(share[0]) - 0.8) < 0.03 and float(share[1]) == 0.0
    torch.testing.assert_close(log_q, torch.log(selection.gather(1, program.view(2, -1))))


def test_a_trace_or_a_soft_parse_runs_the_soft_machine():
    config = LlamaDeltaConfig(
        **TINY_LLAMA,
        delta_word_size=32,
        delta_memory_size=8,
        delta_max_steps=90,
        delta_programs={"sort": LIBRARY["sort"]},
        delta_input_cells=5,
        delta_input_registers=0,
        delta_answer_source="memory",
        delta_answer_length=4,
        delta_parse_samples=4,
        delta_size_per_question=False,  # both runs at the config's sizes: the same computation
    )
    torch.manual_seed(0)
    model = LlamaDeltaForAlgorithmicQA(config).eval()
    head, calls = model.delta_head, []
    model.delta_head.discrete_machine = lambda size=None: (
        calls.append(1) or DiscreteMachine(head.machine.programs, size or 8)
    )
    input_ids = torch.tensor([[3, 11, 12, 70, 13]])
    with torch.no_grad():
        traced = model(input_ids=input_ids, return_delta_trace=True)
        plain = model(input_ids=input_ids)
    assert traced.delta_trace is not None and len(calls) == 1  # the traced run was soft, the plain one discrete
    assert torch.equal(traced.answer_logits, plain.answer_logits)
    cells = F.one_hot(torch.tensor([[3, 1, 2, 0, 0]]), 32).float()
    program, registers = torch.tensor([0]), cells.new_zeros(1, 0, 32)
    assert model.delta_head._run_discrete((cells, registers), program).memory.argmax(-1)[0, :3].tolist() == [1, 2, 3]
    assert model.delta_head._run_discrete((cells * 0.9 + 0.1 / 32, registers), program) is None  # not one-hot: soft
