"""Δ's soft run conserves probability (issue 13, part 1).

Random soft states on the simplex (from nearly one-hot to flat, the counter and h included) run every library
program and random assembly programs (every opcode, loops, call/ret) as one library, for every ALU backend, in
float32: after every one of 1000 steps each register, memory cell and the counter sums to 1 within 1e-5 and h
stays in [0, 1]; gradients through 300 steps are finite. Before the step renormalised its writes, a rounding
error in a row's mass doubled every step (the step is multilinear): float32 states overflowed to inf/NaN within
~40 steps and every 300-step gradient was NaN (`bench/mass_drift.py`).
"""

import random

import pytest
import torch
import torch.nn.functional as F

from modeling_llama_delta.library import MIN_WORD_SIZE, PROGRAM_NAMES, library_source
from modeling_llama_delta.machine import DeltaMachine, DeltaState
from tests.helpers.programs import random_program
from tests.test_machine import BACKENDS

N, REGISTERS, MEMORY = 32, 8, 32
MASS_TOLERANCE = 1e-5


def _programs(seed: int, random_count: int) -> dict[str, str]:
    """Every library program that fits n = 32, then `random_count` random assembly programs (name -> source)."""
    programs = {name: library_source(name) for name in PROGRAM_NAMES if MIN_WORD_SIZE.get(name, 0) <= N}
    rng = random.Random(seed)
    for i in range(random_count):
        programs[f"random{i}"] = random_program(rng, N, REGISTERS, rng.randint(8, N - 2))
    return programs


def _soft_state(batch: int, programs: int, seed: int) -> DeltaState:
    """Random distributions on the simplex, (B, P, ...) float32, h in [0, 0.5). Examples cycle through four kinds:
    nearly one-hot (one-hot · (1 - ε) + ε · a random distribution, ε = 1e-5: the case that overflowed fastest),
    flat, sharp and in between (softmax of normal scores times 0.3, 30, 3)."""
    g = torch.Generator().manual_seed(seed)
    sharpness = torch.tensor([0.0, 0.3, 30.0, 3.0])[torch.arange(batch) % 4]  # (B,); 0: nearly one-hot

    def dist(*rows: int) -> torch.Tensor:
        scores = torch.randn(batch, programs, *rows, N, generator=g, dtype=torch.float64)
        scale = sharpness.double().view(batch, *[1] * (scores.dim() - 1))
        soft = torch.softmax(scores * scale.where(scale > 0, 1.0), -1)
        one_hot = F.one_hot(torch.randint(N, scores.shape[:-1], generator=g), N).double()
        near_one_hot = one_hot * (1 - 1e-5) + 1e-5 * soft
        return near_one_hot.where(scale == 0, soft).float()

    halted = torch.rand(batch, programs, generator=g) * 0.5
    return DeltaState(dist(MEMORY), dist(REGISTERS), dist(), halted)


def _worst_mass_error(state: DeltaState) -> float:
    rows = [state.memory, state.registers, state.counter]
    return max(float((t.double().sum(-1) - 1).abs().max()) if torch.isfinite(t).all() else float("inf") for t in rows)


@pytest.mark.parametrize("alu", BACKENDS)
def test_every_step_keeps_every_distribution_on_the_simplex_in_float32(alu):
    programs = _programs(seed=0, random_count=4)
    machine = DeltaMachine(N, REGISTERS, MEMORY, alu=alu, programs=programs, halt_tolerance=-1.0)  # never stop early
    state = _soft_state(batch=4, programs=len(programs), seed=1)
    assert _worst_mass_error(state) < 1e-6
    with torch.no_grad():
        for step in range(1000):
            state = machine(state, max_steps=1).program_states
            error = _worst_mass_error(state)
            assert error < MASS_TOLERANCE, f"step {step + 1}: a row's mass is off by {error:.3g}"
            halted = state.halted
            assert bool(((halted >= 0) & (halted <= 1 + 1e-6)).all()), f"step {step + 1}: h = {halted}"
            lowest = min(float(t.min()) for t in (state.memory, state.registers, state.counter))
            assert lowest >= -1e-6, f"step {step + 1}: a probability of {lowest:.3g}"  # >= 0 up to rounding
    assert float(state.halted.max()) > 0.99  # the runs went through their programs to the halt


@pytest.mark.parametrize("alu", BACKENDS)
def test_gradients_through_300_soft_steps_are_finite_in_float32(alu):
    programs = _programs(seed=2, random_count=1)
    machine = DeltaMachine(N, REGISTERS, MEMORY, alu=alu, programs=programs, halt_tolerance=-1.0)
    start = _soft_state(batch=2, programs=1, seed=3)  # nearly one-hot and flat inputs
    logits = [t[:, 0].log().clamp_min(-60).requires_grad_() for t in (start.memory, start.registers)]
    # The ISA start (counter at line 0, h = 0), so that the programs run for their full length.
    state = machine.start_state(memory=logits[0].softmax(-1), registers=logits[1][:, : REGISTERS - 2].softmax(-1))
    selection = torch.softmax(torch.randn(2, len(programs), generator=torch.Generator().manual_seed(4)), -1)
    out = machine(state, selection=selection, max_steps=300)
    assert out.steps == 300
    target = torch.randint(N, (2, REGISTERS), generator=torch.Generator().manual_seed(5))
    loss = -out.state.registers.gather(-1, target[..., None]).clamp_min(1e-30).log().sum() - out.state.halted.sum()
    loss.backward()
    for what, logit in zip(("memory", "registers"), logits, strict=True):
        assert torch.isfinite(logit.grad).all(), f"{what}: {int((~torch.isfinite(logit.grad)).sum())} non-finite"
        assert float(logit.grad.abs().sum()) > 0, f"{what}: no gradient"
