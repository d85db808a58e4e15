"""The differentiable register machine Δ (paper §3.2, eqs. 2-7; ISA.md "Soft semantics").

State, batch first: memory (B, M, n), registers (B, R, n), the instruction counter (B, n) (a
distribution over the n ROM lines) and the halting probability h (B,). One step:

1. mix every field of every ROM line by the counter: ONE matmul over the concatenated ROM (P, n, F) (with
   a frozen ROM, over its first L lines only: the halt lines past the programs' ends are one line);
2. read both operand registers (eq. 2 on registers): ONE bmm;
3. run every op: the ALU gives all nine binary results at once; inc/dec/mov/const/read/call are
   rolls, copies and one memory read (eq. 2);
4. mix the results of the register-writing ops by the op distribution (eq. 7), and write them to
   register d scaled by the probability that the op writes a register (eq. 5 within eq. 4's mixture);
   write b to memory cell a with the probability of `write` (eqs. 3-4);
5. move the counter: eq. 6 generalised to the ISA's control ops (next line, jmp/jez/jnz/call to the
   immediate, ret to the value of register a, halt stays);
6. h_{t+1} = h_t + (1 - h_t) p_halt, and the halted share of the state stops changing;
7. every written row (register, memory cell, counter) is divided by its mass. On the simplex that mass is 1 in
   exact arithmetic, but the step is multilinear (a row's mass is the product of its inputs' masses, the
   counter's squared), so without it a rounding error doubles every step and float32 overflows within ~40.

(6) is implemented by running the step with op distribution (1 - h) p + h e_halt: the step is linear in
the op distribution and `halt` changes nothing, so this IS h·state + (1 - h)·step(state), and its halt
weight is h_{t+1}. Internally the state is packed into one tensor (B, R + M + 1, n) (registers,
memory, counter) so that all writes are one erase-and-add (`baddbmm`).

Speed: a step is three autograd nodes, `_StepRead` (1-2), the ALU, `_StepUpdate` (3-6), the first and
last with backward passes written by hand (fewer, larger ops than autograd's per-op graph; checked by
gradcheck). `checkpoint_steps` recomputes blocks of steps in the backward pass instead of keeping each
step's activations (on CPU this is also often faster: fresh memory is expensive to touch).
With a frozen ROM the ALU computes only the binary ops the ROM can select (`DeltaMachine.alu_ops`; exact:
the others have probability exactly 0), e.g. no n² work at all for the library's `sort`.

Library Λ: P programs run on every example (batch P·B inside, program-major); the final states are
mixed by selection probabilities (B, P).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .alu import BINARY_OPS, DEFAULT_ALU, build_alu
from .assembler import OPCODES, Program, initial_memory
from .compiler import CompiledLibrary, RomLayout, compile_library, decompile, rom_logits, rom_probabilities

_OP = {name: i for i, name in enumerate(OPCODES)}
# Where each op sends the counter: 0 next line (every op not listed), 1 the immediate, 2 the value of
# register a, 3 stay. jez/jnz are listed by where they go when a != 0; the step then moves P(a = 0) of
# their mass (jez: next line -> immediate, jnz: immediate -> next line).
_CONTROL = {"halt": 3, "jmp": 1, "jez": 0, "jnz": 1, "call": 1, "ret": 2}
# A step mixes every op's result in ONE bmm: coefficients (6, 14) per example @ the source rows (14, n).
# Sources: the immediate, operands a and b, the counter c, the nine ALU results, the loaded memory cell.
_IMM, _A, _B, _C, _ALU, _LOADED = 0, 1, 2, 3, 4, 4 + len(BINARY_OPS)
SOURCES = _LOADED + 1
# Mixed rows: the register value, the new counter, b (memory's value), then the parts a step shifts by a
# roll after mixing (the rolls are linear, so one roll of each mixed part replaces one per source):
# register +1 (inc a, call's c + 1), counter +1 (next line), register -1 (dec a).
_WRITTEN, _COUNTER, _STORED, _WRITTEN_UP, _COUNTER_UP, _WRITTEN_DOWN = range(6)
MIXED = 6
# Beyond the mixing coefficients, each example's coefficient row holds P(the op writes a register),
# P(write) and P(halt): `coefficients = op @ mixing` gives all of them at once.
_P_REGISTER, _P_WRITE, _P_HALT = MIXED * SOURCES, MIXED * SOURCES + 1, MIXED * SOURCES + 2
COEFFICIENTS = MIXED * SOURCES + 3
# The backward saturates the state's gradient at finfo.max / GRADIENT_HEADROOM (3.4e30 in float32). Gradients with
# respect to the counter grow with the steps (what the rest of the run would do from a line it is not on; in the
# mean field a stray share of the counter runs the likely line's jump targets too, so it can double per step), and a
# program whose control flow does not depend on trainable inputs multiplies them by exact zeros: in long runs
# float32 overflows to inf and inf * 0 poisons every gradient with NaN (fib_linear at depth 28, 299 steps). Saturating
# leaves 1e8 of range for one step's sums and changes nothing a gradient below the limit carries (float64: 1.8e300).
GRADIENT_HEADROOM = 1e8


def _coefficient(row: int, source: int) -> int:
    """Column of mixed row `row`'s weight on source `source` in an example's coefficient row."""
    return row * SOURCES + source


def _mixing_tensors() -> tuple[Tensor, Tensor, Tensor]:
    """(O, W) op -> coefficients, (W,) the constant part (b is always stored), (W,) the jez/jnz shift.

    The coefficients are linear in the op distribution except the conditional jumps, which move
    (P(jez) - P(jnz)) · P(a = 0) of mass from the next line to the immediate: `shift` times that.
    """
    mixing = torch.zeros(len(OPCODES), COEFFICIENTS)
    register_results = {"const": (_WRITTEN, _IMM), "mov": (_WRITTEN, _A), "inc": (_WRITTEN_UP, _A)}
    register_results |= {"dec": (_WRITTEN_DOWN, _A), "read": (_WRITTEN, _LOADED), "call": (_WRITTEN_UP, _C)}
    register_results |= {op: (_WRITTEN, _ALU + i) for i, op in enumerate(BINARY_OPS)}
    for op, (row, source) in register_results.items():
        mixing[_OP[op], _coefficient(row, source)] = 1
        mixing[_OP[op], _P_REGISTER] = 1
    targets = [(_COUNTER_UP, _C), (_COUNTER, _IMM), (_COUNTER, _A), (_COUNTER, _C)]  # next, imm, a, stay
    for op in OPCODES:
        mixing[_OP[op], _coefficient(*targets[_CONTROL.get(op, 0)])] = 1
    mixing[_OP["write"], _P_WRITE] = 1
    mixing[_OP["halt"], _P_HALT] = 1
    bias = torch.zeros(COEFFICIENTS)
    bias[_coefficient(_STORED, _B)] = 1
    shift = torch.zeros(COEFFICIENTS)
    shift[_coefficient(_COUNTER_UP, _C)], shift[_coefficient(_COUNTER, _IMM)] = -1, 1
    return mixing, bias, shift


@dataclass
class DeltaState:
    """Distributions over values for every cell, register and the counter; h = P(halted).

    Shapes (*batch, M, n), (*batch, R, n), (*batch, n), (*batch,): a machine run takes batch (B,) or
    (B, P) (one state per library program) and returns (B, P) states per program.
    """

    memory: Tensor
    registers: Tensor
    counter: Tensor
    halted: Tensor

    def values(self) -> dict[str, Tensor]:
        """Arg-max values: memory (*batch, M), registers (*batch, R), counter (*batch,) long; halted = h >= 0.5."""
        return {
            "memory": self.memory.argmax(-1),
            "registers": self.registers.argmax(-1),
            "counter": self.counter.argmax(-1),
            "halted": self.halted >= 0.5,
        }

    def confidence(self) -> Tensor:
        """(*batch,) the smallest top probability over every memory cell and register."""
        top = torch.cat([self.memory, self.registers], dim=-2).max(-1).values  # (*batch, M + R)
        return top.min(-1).values

    def map(self, fn) -> DeltaState:
        return DeltaState(fn(self.memory), fn(self.registers), fn(self.counter), fn(self.halted))


@dataclass
class DeltaTrace:
    """Per-step record of a run (for plots): counter (T, B, P, n), registers (T, B, P, R, n), halted (T, B, P).

    Row t is the state after t steps (row 0 the initial state).
    """

    counter: Tensor
    registers: Tensor
    halted: Tensor


@dataclass
class DeltaOutput:
    """`program_states` (B, P, ...) per program; `state` (B, ...) mixed by the selection (or the only
    program's state when P = 1, else None); `steps` executed (a run stops once every example halted)."""

    state: DeltaState | None
    program_states: DeltaState
    steps: int
    trace: DeltaTrace | None = None


@dataclass(frozen=True)
class _StepConstants:
    """Fixed sizes and tensors of a step (built in `DeltaMachine.__init__`, moved with the module)."""

    num_registers: int
    memory_size: int
    mixing: Tensor  # (O, W) op -> coefficient row (`_mixing_tensors`)
    mixing_bias: Tensor  # (W,) b is stored whatever the op (scaled by P(write) at the write)
    jump_shift: Tensor  # (W,) moves P(a = 0) of jez/jnz mass from the next line to the immediate
    jump_sign: Tensor  # (O,) +1 for jez, -1 for jnz
    halt_onehot: Tensor  # (O,)
    blocks: Tensor  # (K, 3) which mixed value (register value, counter, b) each packed row takes
    # Scratch tensors of the backward passes, reused step after step (fresh memory is slow to touch on
    # CPU); one dict per run, and a run's backward nodes execute one at a time.
    workspace: dict[str, Tensor] = field(default_factory=dict)

    def scratch(self, name: str, like: Tensor) -> Tensor:
        """A tensor shaped like `like` kept for the run (its contents are overwritten by each user)."""
        buffer = self.workspace.get(name)
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype:
            buffer = self.workspace[name] = torch.empty_like(like)
        return buffer


def _sources(state: Tensor, operands: Tensor, imm: Tensor, alu_results: Tensor, r: int, m: int) -> Tensor:
    """The rows every op's result is mixed from (`SOURCES` order): (PB, 14, n).

    imm, a, b, the counter, the nine ALU results, and m[a] (eq. 2 on memory; a cell >= M reads 0).
    """
    a = operands[:, 0]  # (PB, n)
    loaded = torch.bmm(a[:, None, :m], state[:, r : r + m])  # (PB, 1, M) @ (PB, M, n) -> (PB, 1, n)
    if m < a.shape[-1]:
        loaded[:, 0, 0] += a[:, m:].sum(-1)
    return torch.cat([imm[:, None], operands, state[:, -1:], alu_results, loaded], dim=1)


def _line_mass(counter: Tensor, lines: int) -> Tensor:
    """(..., n) -> (..., L): the counter's mass on lines 0..L-2, and on line L-1 or after (where every line is
    the same, `DeltaMachine.rom_lines`). On a one-hot counter the sum adds zeros to at most one 1: exact."""
    if lines == counter.shape[-1]:
        return counter
    return torch.cat([counter[..., : lines - 1], counter[..., lines - 1 :].sum(-1, keepdim=True)], dim=-1)


class _StepRead(torch.autograd.Function):
    """Steps 1-2 of a machine step as one autograd node: the current line's fields and the operand values.

    fields (PB, F) = counter @ rom (every field of every line mixed by the counter, eq. 6's c over ROM
    lines; `rom` (P, L, F) holds the first L lines, the last standing for every line after it, see
    `DeltaMachine.rom_lines`); operands (PB, 2, n) = the a/b register selections @ registers (eq. 2). The
    state also passes through (a view) to `_StepUpdate`, its only reader: the backward then adds this node's
    few rows into `_StepUpdate`'s state gradient in place, instead of a zero-filled state-sized gradient
    that autograd would add to it (two fresh state-sized tensors per step; fresh memory is slow to touch on
    CPU).
    """

    @staticmethod
    def forward(ctx, state, rom, k: _StepConstants):
        pb, _, n = state.shape
        p, r, ops = rom.shape[0], k.num_registers, k.mixing.shape[0]
        counter = _line_mass(state[:, -1].reshape(p, pb // p, n), rom.shape[1])  # (P, B, L), program-major
        fields = torch.bmm(counter, rom).view(pb, -1)  # (P, B, L) @ (P, L, F) -> (PB, F)
        select = fields[:, ops : ops + 2 * r].reshape(pb, 2, r)  # (PB, 2, R): registers a and b
        operands = torch.bmm(select, state[:, :r])  # (PB, 2, R) @ (PB, R, n) -> (PB, 2, n)
        ctx.save_for_backward(state, rom, select)
        ctx.constants = k
        return fields, operands, state.view_as(state)

    @staticmethod
    def backward(ctx, g_fields, g_operands, g_state):
        state, rom, select = ctx.saved_tensors
        k = ctx.constants
        pb, _, n = state.shape
        p, r, ops = rom.shape[0], k.num_registers, k.mixing.shape[0]
        # g_fields and g_state are `_StepUpdate`'s fresh gradients (their tensors have no other reader), so
        # this node's terms are written into them in place; g_fields' selection columns hold zeros.
        # operands = select @ registers
        g_select = torch.bmm(g_operands, state[:, :r].transpose(1, 2))  # (PB, 2, n) @ (PB, n, R) -> (PB, 2, R)
        g_fields[:, ops : ops + 2 * r] = g_select.view(pb, 2 * r)
        g_registers = g_state[:, :r]  # (PB, R, n): += select^T @ g_operands, as two outer products (no small bmm)
        g_registers.addcmul_(select[:, 0, :, None], g_operands[:, None, 0]).addcmul_(
            select[:, 1, :, None], g_operands[:, None, 1]
        )
        # fields = counter @ rom, per program
        g_fields = g_fields.view(p, pb // p, -1)  # (P, B, F)
        lines = rom.shape[1]
        g_lines = torch.bmm(g_fields, rom.transpose(1, 2)).view(pb, lines)  # (P, B, F) @ (P, F, L) -> (PB, L)
        g_state[:, -1, : lines - 1] += g_lines[:, :-1]
        g_state[:, -1, lines - 1 :] += g_lines[:, -1:]  # the last line stands for every line after it
        g_rom = None
        if ctx.needs_input_grad[1]:
            counter = _line_mass(state[:, -1].reshape(p, pb // p, n), lines)  # (P, B, L)
            g_rom = torch.bmm(counter.transpose(1, 2), g_fields)  # (P, L, B) @ (P, B, F) -> (P, L, F)
        return g_state, g_rom, None


class _StepUpdate(torch.autograd.Function):
    """Steps 3-6 of a machine step (module docstring) as ONE autograd node with a hand-written backward.

    Inputs: packed state (PB, K, n), halted (PB,), the current line's fields (PB, F), the operand values
    a, b (PB, 2, n) and the ALU's results (PB, 9, n); outputs the new packed state and h. Every op's
    result is a linear map of a few source rows (`_sources`), so the register value, the new counter and
    the stored b come out of ONE bmm of per-example coefficients (themselves ONE matmul of the op
    distribution, `_mixing_tensors`) with the sources, and the writes are ONE erase-and-add over the
    packed rows. The backward is the chain rule of `forward` written out in reverse (checked by gradcheck
    in tests/test_machine.py).
    """

    @staticmethod
    def forward(ctx, state, halted, fields, operands, alu_results, k: _StepConstants):
        r, m, ops = k.num_registers, k.memory_size, k.mixing.shape[0]
        pb = state.shape[0]
        op = torch.lerp(fields[:, :ops], k.halt_onehot, halted[:, None])  # (PB, O): the halted share runs `halt`
        dest, imm = fields[:, ops + 2 * r : ops + 3 * r], fields[:, ops + 3 * r :]  # (PB, R), (PB, n)
        a = operands[:, 0]  # (PB, n)
        # Coefficients (PB, W), eqs. 6-7: the op mixture, and jez/jnz move P(a = 0) of their mass.
        jump_weight = op @ k.jump_sign  # (PB,): P(jez) - P(jnz)
        coefficients = torch.addmm(k.mixing_bias, op, k.mixing).addr_(jump_weight * a[:, 0], k.jump_shift)
        sources = _sources(state, operands, imm, alu_results, r, m)  # (PB, 14, n)
        weights = coefficients[:, : MIXED * SOURCES].view(pb, MIXED, SOURCES)  # (PB, 6, 14)
        mixed = torch.bmm(weights, sources)  # (PB, 6, 14) @ (PB, 14, n) -> (PB, 6, n)
        values = mixed[:, :3]  # (PB, 3, n): register value, counter, b; the shifted parts rolled into them
        values[:, :2] += mixed[:, _WRITTEN_UP : _COUNTER_UP + 1].roll(1, -1)
        values[:, 0] += mixed[:, _WRITTEN_DOWN].roll(-1, -1)
        # Writes as one erase-and-add over the packed rows (eqs. 3-5): registers gain the value at d (its
        # mass is P(the op writes a register)), memory gains b at cell a scaled by P(write), the counter
        # row is replaced.
        p_register, p_write = coefficients[:, _P_REGISTER, None], coefficients[:, _P_WRITE, None]  # (PB, 1)
        address = a[:, :m] * p_write  # (PB, M)
        ones = p_write.new_ones(pb, 1)
        gain = torch.cat([dest, address, ones], dim=1)  # (PB, K)
        keep = 1 - torch.cat([dest * p_register, address, ones], dim=1)  # (PB, K)
        # Every written row is divided by its mass (an exact renormalisation). The step is multilinear, so a
        # row's mass is the product of its inputs' masses (the counter's is squared: c picks the line, whose
        # fields mix targets built from c): a rounding error of δ becomes ~2δ per step, 2^steps in all, and
        # float32 overflows within ~40 steps. On the simplex the mass is 1 in exact arithmetic, so this changes
        # no value, only rounding (and on one-hot states the mass is exactly 1: bitwise the same run).
        # mass_i = keep_i · |state_i| + gain_i · |the value written to row i|
        masses = torch.stack([state.sum(-1), values.sum(-1) @ k.blocks.t()])  # (2, PB, K): |state_i|, |value_i|
        scale = (keep * masses[0]).addcmul_(gain, masses[1]).reciprocal_()  # (PB, K)
        gains = (gain * scale)[:, :, None] * k.blocks  # (PB, K, 3)
        new_state = torch.mul(state, (keep * scale)[:, :, None]).baddbmm_(gains, values)  # (PB, K, 3) @ (PB, 3, n)
        # Saved: the inputs and small per-row weights; `sources` is kept (the backward needs all of it).
        ctx.save_for_backward(
            state, halted, fields, sources, coefficients, jump_weight, gain, keep, values, masses, scale
        )
        ctx.constants = k
        return new_state, coefficients[:, _P_HALT]  # (PB, K, n), h_{t+1} = h + (1 - h) p_halt

    @staticmethod
    def backward(ctx, g_state, g_halted):
        state, halted, fields, sources, coefficients, jump_weight, gain, keep, values, masses, scale = ctx.saved_tensors
        k = ctx.constants
        r, m, ops = k.num_registers, k.memory_size, k.mixing.shape[0]
        pb, _, n = state.shape
        limit = torch.finfo(g_state.dtype).max / GRADIENT_HEADROOM
        g_state.clamp_(-limit, limit)  # fresh and ours (see below): saturated in place
        g_halted = g_halted.clamp(-limit, limit)
        dest, a = fields[:, ops + 2 * r : ops + 3 * r], sources[:, _A]  # (PB, R), (PB, n)
        p_register, p_write = coefficients[:, _P_REGISTER, None], coefficients[:, _P_WRITE, None]  # (PB, 1)
        # new_state = u * scale, u = state * keep + gains @ values, gain = [dest | address | 1], values = [written,
        # counter, b], scale = 1 / (keep · |state| + gain · |value|) per row. With y = new_state, u's gradient is
        # (g - <g, y>) · scale: the renormalisation takes out the part of g along the row's ones.
        g_registers, g_memory, g_counter = g_state[:, :r], g_state[:, r : r + m], g_state[:, -1:]
        g_keep = torch.linalg.vecdot(g_state, state)  # (PB, K): <g_i, state_i>
        g_gain = torch.cat(
            [
                torch.linalg.vecdot(g_registers, values[:, None, _WRITTEN]),
                torch.linalg.vecdot(g_memory, values[:, None, _STORED]),
                torch.linalg.vecdot(g_counter, values[:, None, _COUNTER]),
            ],
            dim=1,
        )  # (PB, K): <g_i, the value written to row i>
        along = scale * (keep * g_keep + gain * g_gain)  # (PB, K): <g_i, y_i>
        g_keep = scale * (g_keep - along * masses[0])  # (PB, K): the gradients of keep and gain through u and scale
        g_gain = scale * (g_gain - along * masses[1])
        g_rows = g_state.sub_(along[:, :, None])  # (PB, K, n): g - <g, y>, in place (g_state is fresh and ours)
        scaled_gain = gain * scale  # (PB, K)
        g_written = torch.bmm(scaled_gain[:, None, :r], g_rows[:, :r])  # (PB, 1, R) @ (PB, R, n) -> (PB, 1, n)
        g_stored = torch.bmm(scaled_gain[:, None, r : r + m], g_rows[:, r : r + m])  # (PB, 1, M) @ (PB, M, n)
        g_counter = g_rows[:, -1:] * scale[:, -1:, None]  # (PB, 1, n)
        # values = mixed[:3] + the rolled parts; mixed = weights @ sources.
        g_mixed = torch.cat(
            [g_written, g_counter, g_stored, g_written.roll(-1, -1), g_counter.roll(-1, -1), g_written.roll(1, -1)],
            dim=1,
        )  # (PB, 6, n)
        # keep = 1 - [p_register dest | address | 1], gain = [dest | address | 1]
        g_dest = g_gain[:, :r] - g_keep[:, :r] * p_register  # (PB, R)
        g_p_register = -torch.linalg.vecdot(g_keep[:, :r], dest)  # (PB,)
        g_address = g_gain[:, r : r + m] - g_keep[:, r : r + m]  # (PB, M)
        g_p_write = torch.linalg.vecdot(g_address, a[:, :m])  # (PB,)
        # g_rows is read no further. It is read by no one else (the next step's `_StepRead` gradient, or the
        # slicing after the run), so it becomes the state's gradient in place.
        g_in = g_rows.mul_((keep * scale)[:, :, None])  # (PB, K, n)
        weights = coefficients[:, : MIXED * SOURCES].view(pb, MIXED, SOURCES)  # (PB, 6, 14)
        g_sources = torch.bmm(weights.transpose(1, 2), g_mixed)  # (PB, 14, 6) @ (PB, 6, n) -> (PB, 14, n)
        g_weights = torch.bmm(g_mixed, sources.transpose(1, 2))  # (PB, 6, n) @ (PB, n, 14) -> (PB, 6, 14)
        g_coefficients = torch.cat(
            [g_weights.view(pb, -1), g_p_register[:, None], g_p_write[:, None], g_halted[:, None]], dim=1
        )  # (PB, W)
        # coefficients = bias + op @ mixing + (jump_weight · a_0) ⊗ jump_shift, jump_weight = op @ jump_sign
        g_op = g_coefficients @ k.mixing.t()  # (PB, W) @ (W, O) -> (PB, O)
        g_jump = g_coefficients @ k.jump_shift  # (PB,)
        g_op.addr_(g_jump * a[:, 0], k.jump_sign)
        # Source rows: imm, a, b, counter, ALU results, loaded = a[:M] @ memory (+ sum(a[M:]) at value 0)
        g_a = g_sources[:, _A]  # (PB, n), a view: the terms below add into g_sources in place
        g_a[:, 0] += g_jump * jump_weight
        g_a[:, :m].addcmul_(g_address, p_write)
        g_loaded = g_sources[:, _LOADED]  # (PB, n)
        # (PB, 1, n) @ (PB, n, M): a row times a transposed matrix (a one-column bmm is 8x slower)
        g_a[:, :m] += torch.bmm(g_loaded[:, None, :], state[:, r : r + m].transpose(1, 2))[:, 0]
        if m < n:
            g_a[:, m:] += g_loaded[:, :1]
        g_in[:, r : r + m].addcmul_(a[:, :m, None], g_loaded[:, None, :])  # += (PB, M, 1) ⊗ (PB, 1, n)
        g_in[:, -1] += g_sources[:, _C]
        # op = lerp(f, e_halt, h) = f + h (e_halt - f); the a/b selections get their gradient in _StepRead
        g_f = g_op * (1 - halted)[:, None]  # (PB, O)
        g_h = torch.linalg.vecdot(g_op, k.halt_onehot - fields[:, :ops])  # (PB,)
        g_select = g_op.new_zeros(pb, 2 * r)
        g_fields = torch.cat([g_f, g_select, g_dest, g_sources[:, _IMM]], dim=1)  # (PB, F)
        return g_in, g_h, g_fields, g_sources[:, _A : _B + 1], g_sources[:, _ALU:_LOADED], None


class DeltaMachine(nn.Module):
    """Δ with its ROM (one or several compiled programs), built from plain arguments.

    Args:
        n: word size; values are 0..n-1 and the ROM has n lines.
        num_registers: R (r(R-2) = sp, r(R-1) = ra).
        memory_size: M, 1..n.
        alu: ALU backend name (`alu.ALU_BACKENDS`); swap with `set_alu`.
        max_steps: default step limit of a run.
        checkpoint_steps: > 0 recomputes blocks of this many steps in the backward pass
            (torch.utils.checkpoint) instead of keeping every step's activations.
        programs: `Program`s or a mapping name -> assembly source (or `Program`).
        trainable_programs: hold the ROM as trainable logits `sharpness * one_hot` instead of a frozen buffer.
        halt_tolerance: a run stops early once h >= 1 - halt_tolerance for every example (0: exactly halted).
    """

    def __init__(
        self,
        n: int,
        num_registers: int,
        memory_size: int,
        alu: str = DEFAULT_ALU,
        max_steps: int = 1000,
        checkpoint_steps: int = 0,
        programs: CompiledLibrary | Mapping[str, str] | Sequence[Program] | None = None,
        trainable_programs: bool = False,
        sharpness: float = 10.0,
        halt_tolerance: float = 0.0,
    ):
        super().__init__()
        if n < 2:
            raise ValueError(f"n = {n} is not allowed: n >= 2")
        if num_registers < 2:
            raise ValueError(f"num_registers = {num_registers} is not allowed: at least 2 (sp and ra)")
        if not 1 <= memory_size <= n:
            raise ValueError(f"memory_size = {memory_size} is out of range 1..{n} (n)")
        if max_steps < 0 or checkpoint_steps < 0:
            raise ValueError(f"max_steps = {max_steps} and checkpoint_steps = {checkpoint_steps} must be >= 0")
        self.n, self.num_registers, self.memory_size = n, num_registers, memory_size
        self.max_steps, self.checkpoint_steps, self.halt_tolerance = max_steps, checkpoint_steps, halt_tolerance
        self.layout = RomLayout(n, num_registers)

        mixing, bias, shift = _mixing_tensors()
        size = num_registers + memory_size + 1
        blocks = torch.zeros(size, 3)  # (K, 3): which mixed value each packed row takes
        blocks[:num_registers, _WRITTEN] = 1  # registers <- the mixed register value
        blocks[num_registers:-1, _STORED] = 1  # memory <- operand b
        blocks[-1, _COUNTER] = 1  # counter <- the new counter
        constants = {
            "mixing": mixing,
            "mixing_bias": bias,
            "jump_shift": shift,
            "jump_sign": (
                F.one_hot(torch.tensor(_OP["jez"]), len(OPCODES)) - F.one_hot(torch.tensor(_OP["jnz"]), len(OPCODES))
            ).float(),
            "halt_onehot": F.one_hot(torch.tensor(_OP["halt"]), len(OPCODES)).float(),  # (O,)
            "blocks": blocks,
        }
        for name, tensor in constants.items():
            self.register_buffer(name, tensor, persistent=False)
        self.set_alu(alu)
        self.programs: list[Program] = []
        self.program_names: list[str] = []
        if programs is not None:
            self.set_programs(programs, trainable=trainable_programs, sharpness=sharpness)

    def extra_repr(self) -> str:
        return (
            f"n={self.n}, num_registers={self.num_registers}, memory_size={self.memory_size}, "
            f"max_steps={self.max_steps}, checkpoint_steps={self.checkpoint_steps}, "
            f"programs={self.program_names}"
        )

    # --- configuration
    def set_alu(self, name: str) -> None:
        """Swap the ALU backend (no backend has parameters, so a trained machine keeps working)."""
        self.alu = build_alu(name, self.n).to(self.mixing.device)
        self.alu_name = name

    def set_programs(
        self,
        programs: CompiledLibrary | Mapping[str, str] | Sequence[Program],
        trainable: bool = False,
        sharpness: float = 10.0,
    ) -> None:
        """Hold a library: a frozen one-hot `rom` buffer, or `rom_logits` (a Parameter) if trainable.

        `programs`: a `CompiledLibrary`; name -> ISA source (compiled by `compile_library`); or Programs, named by
        their first `.func`.
        """
        if isinstance(programs, Mapping):
            library = compile_library(programs, self.n, self.num_registers)
        elif isinstance(programs, CompiledLibrary):
            library = programs
        else:
            programs = list(programs)
            names = [next(iter(p.functions), f"program{i}") for i, p in enumerate(programs)]
            library = CompiledLibrary.from_programs(names, programs)
        for name, program in zip(library.names, library.programs, strict=True):
            if (program.n, program.num_registers) != (self.n, self.num_registers):
                raise ValueError(
                    f"program {name!r} is assembled for n={program.n}, "
                    f"num_registers={program.num_registers}; the machine has n={self.n}, "
                    f"num_registers={self.num_registers}"
                )
        rom = library.rom.to(self.mixing.device, self.mixing.dtype, copy=True)  # (P, n, F); the library's is shared
        for attribute in ("rom", "rom_logits"):
            if hasattr(self, attribute):
                delattr(self, attribute)
        if trainable:
            self.rom_logits = nn.Parameter(rom_logits(rom, sharpness))
        else:
            self.register_buffer("rom", rom)
        self.programs, self.program_names = list(library.programs), list(library.names)

    def rom_distribution(self) -> Tensor:
        """(P, n, F) the ROM the machine runs: the one-hot buffer, or a softmax per field of the logits."""
        if hasattr(self, "rom_logits"):
            return rom_probabilities(self.rom_logits, self.layout)
        if not hasattr(self, "rom"):
            raise RuntimeError("the machine holds no programs: call set_programs first")
        return self.rom

    def decompile(self) -> dict[str, str]:
        """Program name -> assembly text of the ROM the machine runs (`compiler.decompile`: the arg-max of every
        field), with the `.func` entries of the program it was compiled from; `assemble` turns it back into the
        arg-max ROM. For trainable logits: what training has made of each program."""
        rom = self.rom_distribution().detach()  # (P, n, F)
        return {
            name: decompile(rom[index], self.num_registers, functions=program.functions)
            for index, (name, program) in enumerate(zip(self.program_names, self.programs, strict=True))
        }

    # --- states
    def start_state(
        self,
        memory: Tensor | None = None,
        registers: Tensor | None = None,
        entry: str | None = None,
        batch_size: int | None = None,
    ) -> DeltaState:
        """ISA start state for every held program from (soft) values: (B, P, ...).

        `memory` (B, k <= M, n) and `registers` (B, k <= R, n) give distributions for the first k cells /
        registers; the rest take the ISA start values (0; `ra` = each program's trailing halt line).
        The counter starts at line 0 or the `.func` named `entry` of each program.
        """
        given = [t for t in (memory, registers) if t is not None]
        b = given[0].shape[0] if given else batch_size
        if b is None:
            raise ValueError("start_state needs memory, registers or batch_size to know the batch size")
        if not self.programs:
            raise RuntimeError("the machine holds no programs: call set_programs first")
        n, r, m, p = self.n, self.num_registers, self.memory_size, len(self.programs)
        like = self.mixing  # the machine's dtype and device
        zero = F.one_hot(torch.zeros((), dtype=torch.long, device=like.device), n).to(like)  # (n,) the value 0

        def start(values: Tensor | None, rows: int, what: str) -> Tensor:
            out = zero.expand(b, p, rows, n).clone()  # (B, P, rows, n): every value 0
            if values is not None:
                if values.dim() != 3 or values.shape[0] != b or values.shape[1] > rows or values.shape[2] != n:
                    raise ValueError(f"{what} must be (B={b}, k <= {rows}, n={n}); got {tuple(values.shape)}")
                out[:, :, : values.shape[1]] = values[:, None].to(like)  # the same for every program
            return out

        halt_lines = torch.tensor([prog.halt_line for prog in self.programs], device=like.device)
        regs = zero.expand(b, p, r, n).clone()  # (B, P, R, n)
        regs[:, :, r - 1] = F.one_hot(halt_lines, n).to(like)  # ra = each program's trailing halt
        if registers is not None:
            regs = start(registers, r, "registers").where(
                torch.arange(r, device=like.device)[:, None] < registers.shape[1], regs
            )  # given ones override
        entries = torch.tensor([prog.entry_line(entry) for prog in self.programs], device=like.device)
        counter = F.one_hot(entries, n).to(like).expand(b, p, n)  # (B, P, n)
        return DeltaState(start(memory, m, "memory"), regs, counter, like.new_zeros(b, p))

    def initial_state(
        self,
        memory: Sequence[Sequence[int]] = (),
        registers: Sequence[Sequence[int]] = (),
        entry: str | None = None,
    ) -> DeltaState:
        """One-hot start state from integer values, one list per example (ISA start values elsewhere): (B, P, ...).

        Example rows may have different lengths; values are checked as the reference interpreter checks them.
        """
        b = max(len(memory), len(registers), 1)
        for name, rows in (("memory", memory), ("registers", registers)):
            if rows and len(rows) != b:
                raise ValueError(f"{name} has {len(rows)} examples; the other list has {b}")
        cells = [initial_memory(row, self.memory_size, self.n) for row in (memory or [()] * b)]  # B × M ints
        state = self.start_state(F.one_hot(torch.tensor(cells), self.n), entry=entry)
        for i, row in enumerate(registers):
            self.programs[0].initial_registers(row)  # checks count and range
            for index, value in enumerate(row):
                state.registers[i, :, index] = F.one_hot(torch.tensor(value), self.n).to(state.registers)
        return state

    # --- running
    def _constants(self) -> _StepConstants:
        return _StepConstants(
            self.num_registers,
            self.memory_size,
            self.mixing,
            self.mixing_bias,
            self.jump_shift,
            self.jump_sign,
            self.halt_onehot,
            self.blocks,
        )

    def rom_lines(self, rom: Tensor) -> int:
        """How many leading lines of `rom` (P, n, F) a step reads: L such that lines L-1..n-1 are the same in
        every program (the halt lines past the programs' ends), so that counter @ rom = counter[:L-1] @ rom[:L-1]
        + (the counter's mass from L-1 on) · rom[L-1] (exact on one-hot counters, `_line_mass`). A ROM that
        takes gradient keeps all n lines (each line's gradient is its own)."""
        if rom.requires_grad:
            return rom.shape[1]
        same = (rom[:, 1:] == rom[:, :-1]).all(-1).all(0)  # (n - 1,): line l + 1 equals line l in every program
        return rom.shape[1] - int(same.flip(0).cumprod(0).sum())

    def alu_ops(self, rom: Tensor) -> tuple[str, ...] | None:
        """The ALU ops a run on `rom` (P, n, F) needs, or None for all of them.

        With a ROM that takes no gradient (the frozen one-hot buffer) and a backend that computes op
        subsets (`takes_op_subsets`), these are the binary ops with nonzero probability on some line. The
        skipped ones are exact zeros: an op that is 0 on every line is 0 in every step's op mixture
        (counter @ rom, then the halt lerp towards e_halt), so its result row is multiplied by 0, and its
        probability's gradient reaches nothing (the counter gets it through the ROM's zero column, h
        through e_halt - f = 0). Trainable ROM logits give every op a nonzero probability: all ops run.
        """
        if rom.requires_grad or not getattr(self.alu, "takes_op_subsets", False):
            return None
        used = rom[:, :, [_OP[op] for op in BINARY_OPS]].ne(0).flatten(0, 1).any(0).tolist()  # (9,)
        return None if all(used) else tuple(op for op, u in zip(BINARY_OPS, used, strict=True) if u)

    def _step(
        self, state: Tensor, halted: Tensor, rom: Tensor, k: _StepConstants, ops: tuple[str, ...] | None
    ) -> tuple[Tensor, Tensor]:
        """One step on packed states: (P·B, K, n), (P·B,) -> same; rom (P, L, F): its first L lines
        (`rom_lines`); ops: `alu_ops`."""
        fields, operands, state = _StepRead.apply(state, rom, k)  # (PB, F), (PB, 2, n), the state: steps 1-2
        a, b = operands.unbind(1)  # (PB, n) each
        alu_results = self.alu(a, b) if ops is None else self.alu(a, b, ops=ops)  # (PB, 9, n)
        return _StepUpdate.apply(state, halted, fields, operands, alu_results, k)  # steps 3-6

    def _run_steps(
        self, state: Tensor, halted: Tensor, rom: Tensor, steps: int, k: _StepConstants, ops: tuple[str, ...] | None
    ) -> tuple[Tensor, Tensor]:
        for _ in range(steps):
            state, halted = self._step(state, halted, rom, k, ops)
        return state, halted

    def _all_halted(self, halted: Tensor) -> bool:
        return bool((halted >= 1 - self.halt_tolerance).all())

    def forward(
        self,
        state: DeltaState,
        selection: Tensor | None = None,
        max_steps: int | None = None,
        return_trace: bool = False,
    ) -> DeltaOutput:
        """Run every held program on every example from `state` ((B,) or (B, P) batch).

        selection: (B, P) probabilities mixing the programs' final states into `output.state`.
        return_trace: record counter/registers/halted after every step (runs without checkpointing).
        """
        rom = self.rom_distribution()  # (P, n, F)
        p = rom.shape[0]
        max_steps = self.max_steps if max_steps is None else max_steps
        if state.halted.dim() == 1:
            state = state.map(lambda t: t.unsqueeze(1).expand(-1, p, *t.shape[1:]))  # (B, ...) -> (B, P, ...)
        b = state.halted.shape[0]
        if state.halted.shape != (b, p):
            raise ValueError(f"state batch must be (B,) or (B, P={p}); halted has shape {tuple(state.halted.shape)}")
        r, m, n = self.num_registers, self.memory_size, self.n
        if state.memory.shape[-2:] != (m, n) or state.registers.shape[-2:] != (r, n) or state.counter.shape[-1] != n:
            raise ValueError(
                f"state does not fit the machine (M={m}, R={r}, n={n}): memory "
                f"{tuple(state.memory.shape)}, registers {tuple(state.registers.shape)}, "
                f"counter {tuple(state.counter.shape)}"
            )
        packed = torch.cat([state.registers, state.memory, state.counter[:, :, None]], dim=2)  # (B, P, K, n)
        packed = packed.transpose(0, 1).reshape(p * b, r + m + 1, n)  # program-major (P·B, K, n)
        halted = state.halted.t().reshape(p * b)  # (P·B,)

        k, ops = self._constants(), self.alu_ops(rom)  # once per run
        rom = rom[:, : self.rom_lines(rom)]  # (P, L, F)
        trace = [] if return_trace else None
        use_checkpoint = self.checkpoint_steps > 0 and torch.is_grad_enabled() and not return_trace
        block = self.checkpoint_steps if use_checkpoint else 1
        steps = 0
        if trace is not None:
            trace.append((packed[:, -1].detach(), packed[:, :r].detach(), halted.detach()))
        while steps < max_steps and not self._all_halted(halted):
            count = min(block, max_steps - steps)
            if use_checkpoint:
                packed, halted = checkpoint(self._run_steps, packed, halted, rom, count, k, ops, use_reentrant=False)
            else:
                packed, halted = self._run_steps(packed, halted, rom, count, k, ops)
            steps += count
            if trace is not None:
                trace.append((packed[:, -1].detach(), packed[:, :r].detach(), halted.detach()))

        def per_program(t: Tensor) -> Tensor:  # (P·B, ...) -> (B, P, ...)
            return t.reshape(p, b, *t.shape[1:]).transpose(0, 1)

        finals = DeltaState(
            per_program(packed[:, r : r + m]),
            per_program(packed[:, :r]),
            per_program(packed[:, -1]),
            per_program(halted),
        )
        mixed = None
        if selection is not None:
            if selection.shape != (b, p):
                raise ValueError(f"selection must be (B={b}, P={p}); got {tuple(selection.shape)}")
            mixed = DeltaState(
                torch.einsum("bp,bpmn->bmn", selection, finals.memory),  # (B, M, n)
                torch.einsum("bp,bprn->brn", selection, finals.registers),  # (B, R, n)
                torch.einsum("bp,bpn->bn", selection, finals.counter),  # (B, n)
                torch.einsum("bp,bp->b", selection, finals.halted),  # (B,)
            )
        elif p == 1:
            mixed = finals.map(lambda t: t[:, 0])
        out_trace = None
        if trace is not None:
            counters, registers, halts = (torch.stack([per_program(step[i]) for step in trace]) for i in range(3))
            out_trace = DeltaTrace(counters, registers, halts)
        return DeltaOutput(mixed, finals, steps, out_trace)
