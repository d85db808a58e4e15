"""The differentiable machine Δ against the exact reference interpreter, plus its soft semantics.

Random programs are generated as assembly text (every opcode, labels, loops, calls, reads/writes,
every literal form); on one-hot inputs Δ must reproduce `run_reference` exactly for every ALU backend.
"""

import math
import random
import re

import pytest
import torch
import torch.nn.functional as F

from modeling_llama_delta.alu import ALU_BACKENDS
from modeling_llama_delta.assembler import assemble
from modeling_llama_delta.compiler import rom_probabilities
from modeling_llama_delta.machine import DeltaMachine, DeltaState
from modeling_llama_delta.reference import run_reference
from tests.helpers.programs import random_program

BACKENDS = sorted(ALU_BACKENDS)  # table, structured, circuit: every test below uses n a power of two


def _check_against_reference(machine, programs, memories, registers, max_steps):
    """Run every program on every input (one batched run, programs as a library) and compare."""
    state = machine.initial_state(memories, registers)
    out = machine(state, max_steps=max_steps)
    final = out.program_states  # (B, P, ...)
    values = final.values()
    for p, program in enumerate(programs):
        for b, (memory, regs) in enumerate(zip(memories, registers, strict=True)):
            ref = run_reference(program, machine.memory_size, memory, regs, max_steps=max_steps)
            where = f"program {p}, input {b}:\n{program.source}"
            assert values["memory"][b, p].tolist() == ref.memory, where
            assert values["registers"][b, p].tolist() == ref.registers, where
            assert bool(values["halted"][b, p]) == ref.halted, where
            assert float(final.halted[b, p]) == float(ref.halted), where
    assert float(final.confidence().min()) >= 0.999
    return out


def _random_inputs(rng, n, memory_size, num_registers, batch):
    memories = [[rng.randrange(n) for _ in range(rng.randrange(memory_size + 1))] for _ in range(batch)]
    registers = [[rng.randrange(n) for _ in range(rng.randrange(num_registers - 1))] for _ in range(batch)]
    return memories, registers


def _fourier_variant(sources: list[str], monkeypatch) -> list[str]:
    """The structured ALU's FFT algorithms (add/sub, mul: n is a power of two here) at every word size, on the
    programs with mod turned into div (a program that can select mod takes the n² pass for every pair op)."""
    import modeling_llama_delta.alu as alu_module

    monkeypatch.setattr(alu_module, "FOURIER_MIN_N", 2)
    return [re.sub(r"(?i)\bmod\b", "div", source) for source in sources]  # opcodes are case-insensitive


@pytest.mark.parametrize("alu", [*BACKENDS, "structured-fourier"])
@pytest.mark.parametrize("n,r,m", [(16, 4, 8), (32, 8, 20)])
def test_random_programs_match_reference(alu, n, r, m, monkeypatch):
    rng = random.Random(1234 + n)
    sources = [random_program(rng, n, r, rng.randrange(2, n - 1)) for _ in range(32)]
    fourier = alu == "structured-fourier"
    if fourier:
        sources, alu = _fourier_variant(sources, monkeypatch), "structured"
    programs = [assemble(source, n, r) for source in sources]
    machine = DeltaMachine(n, r, m, alu=alu, programs=programs)
    if fourier:
        assert machine.alu.fourier_ops(machine.alu_ops(machine.rom)) == ("add", "sub", "mul")
    memories, registers = _random_inputs(rng, n, m, r, batch=4)
    _check_against_reference(machine, programs, memories, registers, max_steps=400)


@pytest.mark.parametrize("alu", [*BACKENDS, "structured-fourier"])
def test_1000_step_runs_stay_exact_in_float32(alu, monkeypatch):
    """Nested loops (about 1000 steps) and a never-halting loop: exact after 1000 float32 steps."""
    n, r, m = 16, 4, 8
    nested = """
        const r0, 15
    outer:
        const r1, 15
    inner:
        add r2, r2, r1
        write r1, r2
        dec r1, r1
        jnz r1, inner
        call bump
        dec r0, r0
        jnz r0, outer
        halt
    bump:
        read r3, r0
        mul r3, r3, r2
        ret
    """
    forever = "loop: inc r0, r0\nmod r1, r0, r2\nwrite r1, r0\njmp loop"
    sources = [nested, forever]
    if alu == "structured-fourier":
        sources, alu = _fourier_variant(sources, monkeypatch), "structured"
    programs = [assemble(source, n, r) for source in sources]
    machine = DeltaMachine(n, r, m, alu=alu, programs=programs)
    assert machine.rom_distribution().dtype == torch.float32
    out = _check_against_reference(machine, programs, [[1, 2, 3], [5]], [[0, 0, 7], [3, 1, 5]], max_steps=1000)
    assert out.steps == 1000
    assert run_reference(programs[0], m, max_steps=2000).steps > 900
    assert float(out.program_states.confidence().min()) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("alu", BACKENDS)
def test_random_programs_match_reference_big_sweep(alu):
    rng = random.Random(99)
    for n, r, m in ((16, 4, 16), (32, 8, 12), (64, 8, 32)):
        sources = [random_program(rng, n, r, rng.randrange(1, min(n - 1, 40))) for _ in range(100)]
        programs = [assemble(source, n, r) for source in sources]
        machine = DeltaMachine(n, r, m, alu=alu, programs=programs)
        memories, registers = _random_inputs(rng, n, m, r, batch=5)
        _check_against_reference(machine, programs, memories, registers, max_steps=1000)


def test_early_stop_counts_the_reference_steps_and_trace_follows_the_lines():
    n, r = 16, 4
    program = assemble("loop: dec r0, r0\njnz r0, loop\ncall f\nhalt\nf: ret", n, r)
    machine = DeltaMachine(n, r, 4, programs=[program])
    out = machine(machine.initial_state(registers=[[3]]), max_steps=500, return_trace=True)
    ref = run_reference(program, 4, registers=[3], max_steps=500, record_trace=True)
    assert out.steps == ref.steps == 9  # 3 loop rounds of 2, call, ret, halt
    lines = out.trace.counter[:, 0, 0].argmax(-1).tolist()  # (T+1,) line before each step, then the last
    assert lines[:-1] == ref.trace
    assert out.trace.halted[:, 0, 0].tolist() == [0.0] * ref.steps + [1.0]
    assert out.trace.registers.shape == (ref.steps + 1, 1, 1, r, n)


def test_initial_state_follows_the_isa_start_values():
    n, r, m = 16, 4, 4
    first = assemble("nop_free: halt\n.func g\nret", n, r)
    second = assemble("const r0, 1\nconst r1, 2\nhalt", n, r)
    machine = DeltaMachine(n, r, m, programs=[first, second])
    state = machine.initial_state(memory=[[1, 2], []], registers=[[5], [6, 7, 8, 9]])
    values = state.values()
    assert values["memory"].tolist() == [[[1, 2, 0, 0]] * 2, [[0, 0, 0, 0]] * 2]
    # ra (r3) = each program's trailing halt unless given
    assert values["registers"].tolist() == [[[5, 0, 0, 2], [5, 0, 0, 3]], [[6, 7, 8, 9], [6, 7, 8, 9]]]
    assert values["counter"].tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="unknown entry"):
        machine.initial_state(entry="g")  # the second program has no `g`
    assert DeltaMachine(n, r, m, programs=[first]).initial_state(entry="g").values()["counter"].tolist() == [[1]]
    with pytest.raises(ValueError, match="memory"):
        machine.initial_state(memory=[[16]])
    with pytest.raises(ValueError, match="register values"):
        machine.initial_state(registers=[[1, 2, 3, 4, 5]])


def test_start_state_takes_soft_values_and_keeps_isa_defaults():
    n, r, m = 8, 4, 4
    machine = DeltaMachine(n, r, m, programs=[assemble("halt", n, r), assemble("inc r0, r0\nhalt", n, r)])
    registers = torch.softmax(torch.randn(3, 2, n), -1)  # r0, r1 given
    memory = torch.softmax(torch.randn(3, 1, n), -1)
    state = machine.start_state(memory, registers)
    assert state.registers.shape == (3, 2, r, n) and state.memory.shape == (3, 2, m, n)
    assert torch.equal(state.registers[:, 1, :2], registers)
    assert state.registers[0, :, r - 1].argmax(-1).tolist() == [1, 2]  # ra: the appended trailing halts
    assert torch.equal(state.memory[:, 0, 0], memory[:, 0]) and float(state.memory[:, :, 1:, 0].min()) == 1.0
    with pytest.raises(ValueError, match="registers must be"):
        machine.start_state(registers=torch.zeros(3, r + 1, n))


def _soft_machine(n=8, r=3, m=3, sharpness=2.0, dtype=torch.float64, alu="structured"):
    """Two programs as soft logits: with a low sharpness every line mixes every op."""
    sources = [
        "loop: add r0, r0, r1\nwrite r0, r1\nread r1, r0\njez r1, loop\ncall f\nf: mul r1, r0, r1\nret",
        "inc r0, r0\ndiv r1, r1, r0\nmod r0, r0, r1\njnz r0, 0\nmax r1, r0, r0\neq r0, r1, r0\nret",
    ]
    if n < 8:
        sources = ["write r0, r1\nadd r0, r0, r1\nret", "mul r1, r0, r1\njez r1, 0\nret"]
    programs = [assemble(source, n, r) for source in sources]
    machine = DeltaMachine(n, r, m, alu=alu, programs=programs, trainable_programs=True, sharpness=sharpness)
    return machine.to(dtype)


def _soft_state(b, p, r, m, n, dtype, seed=0, halted=0.3):
    g = torch.Generator().manual_seed(seed)

    def dist(*shape):
        return torch.softmax(torch.randn(*shape, n, generator=g, dtype=dtype) * 2, -1)

    return DeltaState(dist(b, p, m), dist(b, p, r), dist(b, p), torch.rand(b, p, generator=g, dtype=dtype) * halted)


@pytest.mark.parametrize("alu", ["structured", "table", pytest.param("circuit", marks=pytest.mark.slow)])
def test_gradients_reach_state_and_program_logits(alu):
    """gradcheck in float64 through 5 steps of a soft machine (every op mixed into every line) with two
    programs mixed by a selection: gradients reach memory, registers, counter, h and the ROM logits."""
    machine = _soft_machine(n=4, r=2, m=2, alu=alu)
    n, r, m = machine.n, machine.num_registers, machine.memory_size
    state = _soft_state(2, 2, r, m, n, torch.float64)
    selection = torch.softmax(torch.randn(2, 2, dtype=torch.float64), -1)
    logits = machine.rom_logits.detach().clone()
    del machine.rom_logits

    def run(memory, registers, counter, halted, rom_logits):
        machine.rom_logits = rom_logits  # a plain tensor stands in for the parameter
        out = machine(DeltaState(memory, registers, counter, halted), selection=selection, max_steps=5).state
        return out.memory, out.registers, out.counter, out.halted

    inputs = [t.clone().requires_grad_() for t in (state.memory, state.registers, state.counter, state.halted, logits)]
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6)


def test_soft_runs_keep_every_distribution_normalised_and_finite():
    machine = _soft_machine(n=16, r=4, m=6, sharpness=1.5)
    n, r, m = machine.n, machine.num_registers, machine.memory_size
    state = _soft_state(3, 2, r, m, n, torch.float64, halted=0.0)
    state = DeltaState(*(t.requires_grad_() for t in (state.memory, state.registers, state.counter, state.halted)))
    out = machine(state, max_steps=300)
    final = out.program_states
    for t in (final.memory.detach(), final.registers.detach(), final.counter.detach()):
        assert torch.isfinite(t).all()
        assert float((t.sum(-1) - 1).abs().max()) < 1e-9
        assert float(t.min()) > -1e-12
    halted = final.halted.detach()
    assert out.steps == 300 and float(halted.min()) > 0 and float(halted.max()) <= 1
    (final.memory.square().sum() + final.halted.sum()).backward()
    for t in (state.memory, state.registers, state.counter, machine.rom_logits):
        assert t.grad is not None and torch.isfinite(t.grad).all() and float(t.grad.abs().sum()) > 0


def test_halting_accumulates_and_freezes_the_halted_share():
    """h_{t+1} = h_t + (1 - h_t) p_halt, and state_{t+1} = h_t state_t + (1 - h_t) step(state_t)."""
    machine = _soft_machine(n=8, r=3, m=3, sharpness=1.0)
    n, r, m = machine.n, machine.num_registers, machine.memory_size
    state = _soft_state(2, 2, r, m, n, torch.float64, halted=0.9)
    rom = rom_probabilities(machine.rom_logits, machine.layout).detach()  # (P, n, F)
    out = machine(state, max_steps=1).program_states
    p_halt = torch.einsum("bpn,pn->bp", state.counter, rom[:, :, 0])  # op field 0 is `halt`
    assert torch.allclose(out.halted, state.halted + (1 - state.halted) * p_halt, atol=1e-12)
    unhalted = machine(
        DeltaState(state.memory, state.registers, state.counter, torch.zeros_like(state.halted)), max_steps=1
    ).program_states
    h = state.halted[..., None, None]
    assert torch.allclose(out.memory, h * state.memory + (1 - h) * unhalted.memory, atol=1e-12)
    assert torch.allclose(out.counter, h[..., 0] * state.counter + (1 - h[..., 0]) * unhalted.counter, atol=1e-12)
    done = DeltaState(state.memory, state.registers, state.counter, torch.ones_like(state.halted))
    assert machine(done, max_steps=5).steps == 0  # nothing left to run
    machine.halt_tolerance = -1.0  # never stop early: the fully halted state must not change
    frozen = machine(done, max_steps=5)
    assert frozen.steps == 5
    for name in ("memory", "registers", "counter", "halted"):  # up to the rows' renormalisation (mass 1 ± rounding)
        assert torch.allclose(getattr(frozen.program_states, name), getattr(done, name), rtol=0, atol=1e-15)


def test_library_selection_mixes_program_results():
    n, r, m = 16, 4, 4
    programs = [assemble(f".func {op}\n{op} r0, r0, r1\nret", n, r) for op in ("add", "mul", "sub")]
    machine = DeltaMachine(n, r, m, programs=programs)
    state = machine.initial_state(registers=[[3, 5], [7, 2]])
    selection = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.0, 0.8]])
    out = machine(state, selection=selection)
    assert out.state.registers.shape == (2, r, n)
    assert out.state.values()["registers"][0, 0] == 15  # 3 * 5
    mixed = out.state.registers[1, 0]  # 0.2 of 7 + 2, 0.8 of 7 - 2
    assert float(mixed[9]) == pytest.approx(0.2) and float(mixed[5]) == pytest.approx(0.8)
    assert machine.program_names == ["add", "mul", "sub"]


def test_checkpointing_gives_the_same_values_and_gradients():
    results = []
    for checkpoint_steps in (0, 4):
        machine = _soft_machine(n=8, r=3, m=3, sharpness=3.0)
        machine.checkpoint_steps = checkpoint_steps
        state = _soft_state(2, 2, 3, 3, 8, torch.float64, halted=0.0)
        memory = state.memory.clone().requires_grad_()
        out = machine(DeltaState(memory, state.registers, state.counter, state.halted), max_steps=10)
        out.program_states.registers.square().sum().backward()
        results.append((out.program_states.registers.detach(), memory.grad, machine.rom_logits.grad))
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_frozen_rom_runs_only_the_alu_ops_it_selects_with_the_same_values_and_gradients():
    """`alu_ops`: a frozen ROM's unused ops are skipped, exactly (values and state gradients identical to
    computing all nine); trainable logits keep every op."""
    n, r, m = 16, 4, 4
    source = "loop: add r0, r0, r1\nwrite r0, r1\nread r1, r0\nlt r2, r1, r0\njnz r2, loop\nmin r1, r1, r0\nret"
    machine = DeltaMachine(n, r, m, programs=[assemble(source, n, r)]).to(torch.float64)
    assert machine.alu_ops(machine.rom) == ("add", "min", "lt")
    state = _soft_state(2, 1, r, m, n, torch.float64, halted=0.2)
    results = []
    for skip in (True, False):
        if not skip:
            machine.alu_ops = lambda rom: None  # every op, as before op subsets existed
        inputs = [t.clone().requires_grad_() for t in (state.memory, state.registers, state.counter, state.halted)]
        out = machine(DeltaState(*inputs), max_steps=12).program_states
        (out.memory.square().sum() + out.registers.square().sum() + out.halted.sum()).backward()
        results.append([out.memory, out.registers, out.counter, out.halted] + [t.grad for t in inputs])
    for skipped, full in zip(*results, strict=True):
        assert torch.equal(skipped, full)
    trainable = _soft_machine(n=8)
    assert trainable.alu_ops(trainable.rom_distribution()) is None
    with torch.no_grad():  # logits without gradient: a softmax gives every op a nonzero probability anyway
        assert trainable.alu_ops(trainable.rom_distribution()) is None


def test_frozen_rom_reads_its_distinct_lines_only_with_the_same_values_and_gradients():
    """`rom_lines`: the halt lines past a frozen ROM's programs are read as one line (their counter mass summed);
    values and gradients equal reading all n lines, gradcheck passes through the summed lines, and a trainable
    ROM keeps every line."""
    n, r, m = 16, 4, 4
    sources = ["loop: add r0, r0, r1\nwrite r0, r1\njnz r0, loop\nret", "sub r1, r1, r0\nret"]
    machine = DeltaMachine(n, r, m, programs=[assemble(s, n, r) for s in sources]).to(torch.float64)
    lines = machine.rom_lines(machine.rom)
    assert lines < n and (machine.rom[:, lines - 1 :] == machine.rom[:, -1:]).all()
    assert not (machine.rom[:, lines - 2] == machine.rom[:, -1]).all()
    state = _soft_state(3, 2, r, m, n, torch.float64, halted=0.2)
    results = []
    for reduced in (True, False):
        if not reduced:
            machine.rom_lines = lambda rom: rom.shape[1]
        inputs = [t.clone().requires_grad_() for t in (state.memory, state.registers, state.counter, state.halted)]
        out = machine(DeltaState(*inputs), max_steps=12).program_states
        (out.memory.square().sum() + out.registers.square().sum() + out.counter[..., -3:].sum()).backward()
        results.append([out.memory, out.registers, out.counter, out.halted] + [t.grad for t in inputs])
    for reduced, full in zip(*results, strict=True):
        assert torch.allclose(reduced, full, atol=1e-12)
    del machine.rom_lines

    def run(counter, registers):
        out = machine(DeltaState(state.memory, registers, counter, state.halted), max_steps=4).program_states
        return out.counter, out.registers

    inputs = [state.counter.clone().requires_grad_(), state.registers.clone().requires_grad_()]
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-6)
    trainable = _soft_machine(n=8)
    assert trainable.rom_lines(trainable.rom_distribution()) == 8


def test_alu_swaps_on_a_trained_machine():
    machine = DeltaMachine(
        16, 4, 4, programs=[assemble("mul r0, r0, r1\nmod r0, r0, r2", 16, 4)], trainable_programs=True, sharpness=30.0
    )
    state = machine.initial_state(registers=[[6, 7, 4]])
    answers = []
    for alu in BACKENDS:
        machine.set_alu(alu)
        answers.append(machine(state).state.values()["registers"][0, 0].item())
    assert answers == [42 % 16 % 4] * len(BACKENDS)
    with pytest.raises(ValueError, match="unknown ALU backend"):
        machine.set_alu("abacus")


@pytest.mark.parametrize("sharpness,bound", [(None, 3e-6), (4.0, 3e-6)])
def test_float32_drift_from_float64_is_bounded(sharpness, bound):
    """Soft inputs, 100 steps: measured max |float32 - float64| 2.6e-7 with a compiled ROM and 2.8e-7 with a soft
    ROM (sharpness 4); 1.8e-4 and 1.5e-2 before the step renormalised its rows (rounding errors of the rows' masses
    doubled every step). One-hot inputs stay exact (test_1000_step_runs_stay_exact_in_float32)."""
    source = """
    loop:
        add r2, r0, r1
        mul r3, r2, r0
        write r1, r3
        read r4, r1
        lt r5, r4, r3
        inc r1, r1
        jnz r5, loop
        div r0, r3, r1
        mod r1, r4, r0
        jez r1, loop
        call f
        halt
    f:  sub r2, r2, r1
        ret
    """
    n, r, m = 16, 8, 8
    program = assemble(source, n, r)
    g = torch.Generator().manual_seed(0)
    memory = torch.softmax(torch.randn(4, m, n, generator=g, dtype=torch.float64) * 2, -1)
    registers = torch.softmax(torch.randn(4, 3, n, generator=g, dtype=torch.float64) * 2, -1)
    runs = {}
    for dtype in (torch.float32, torch.float64):
        machine = DeltaMachine(
            n, r, m, programs=[program], trainable_programs=sharpness is not None, sharpness=sharpness or 1.0
        ).to(dtype)
        with torch.no_grad():
            runs[dtype] = machine(
                machine.start_state(memory.to(dtype), registers.to(dtype)), max_steps=100, return_trace=True
            )
    single, double = runs[torch.float32], runs[torch.float64]
    drift = max(
        float((single.trace.counter.double() - double.trace.counter).abs().max()),
        float((single.trace.registers.double() - double.trace.registers).abs().max()),
        float((single.program_states.memory.double() - double.program_states.memory).abs().max()),
    )
    assert 0 < drift < bound


def test_machine_checks_its_arguments():
    with pytest.raises(ValueError, match="memory_size"):
        DeltaMachine(8, 4, 9)
    with pytest.raises(ValueError, match="num_registers"):
        DeltaMachine(8, 1, 4)
    machine = DeltaMachine(8, 4, 4)
    with pytest.raises(RuntimeError, match="no programs"):
        machine.rom_distribution()
    with pytest.raises(ValueError, match="assembled for n=16"):
        machine.set_programs([assemble("halt", 16, 4)])
    machine.set_programs({"two": "const r0, 2"})
    with pytest.raises(ValueError, match="does not fit"):
        machine(DeltaState(torch.zeros(1, 3, 8), torch.zeros(1, 4, 8), torch.zeros(1, 8), torch.zeros(1)))


def test_gradients_stay_finite_and_exact_past_float32_range(monkeypatch):
    """fib_linear at depth 28 (299 steps): the counter's gradient grows with the steps (what the rest of the run would
    do from a line it is not on; ~2^71 after 139 steps since the step renormalises its rows, 2^139 before) past
    float32's 3.4e38, and meets exact zeros, because the control flow does not depend on x0 and x1. Saturated,
    float32 gives float64's gradient; without the saturation it is NaN."""
    from modeling_llama_delta import machine as machine_module
    from modeling_llama_delta.library import LIBRARY, memory_needed, step_bound

    n, depth = 32, 28
    torch.manual_seed(0)
    logits64 = torch.randn(2, 2, n, dtype=torch.float64)
    direction = torch.randn_like(logits64)

    def directional_gradient(dtype):
        logits = logits64.to(dtype).clone().requires_grad_()
        registers = torch.cat([logits.softmax(-1), F.one_hot(torch.full((2, 1), depth), n).to(dtype)], dim=1)
        machine = DeltaMachine(n, 8, memory_needed("fib_linear", depth), programs={"fib_linear": LIBRARY["fib_linear"]})
        machine = machine.to(dtype)
        run = machine(machine.start_state(registers=registers), max_steps=step_bound("fib_linear", depth))
        run.state.registers[:, 0, 3].log().sum().backward()
        return float((logits.grad.double() * direction).sum())

    exact = directional_gradient(torch.float64)
    assert math.isfinite(exact) and abs(exact) > 1e-3
    assert directional_gradient(torch.float32) == pytest.approx(exact, rel=1e-4)
    monkeypatch.setattr(machine_module, "GRADIENT_HEADROOM", 1.0)  # the limit becomes finfo.max: no saturation
    assert math.isnan(directional_gradient(torch.float32))
