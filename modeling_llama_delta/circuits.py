"""The `circuit` ALU backend: binary ALU ops as differentiable logic circuits (paper §3.3, Appendix B).

One-hot operands are converted to bit probabilities (Appendix B), run through classical circuits
built from probabilistic gates (eqs. 8-9), and converted back to distributions over 0..n-1.

Exact on one-hot inputs: every gate maps {0, 1} to {0, 1} with exact float arithmetic, so the
outputs are exactly the one-hot encodings of `reference.binary_op`. On mixtures the outputs differ
from the lookup table by design: the gates and `bits_to_onehot` treat bits as independent coins, so
correlations between bits (e.g. a 50/50 mix of 1 = 01 and 2 = 10 becomes a uniform mix of 0..3)
and between operands sharing a selector are lost. The outputs are still distributions.

Bit vectors are `(..., bits)` tensors of P(bit = 1), least-significant bit first; n = 2**bits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .assembler import BINARY_OPS


# --- Probabilistic gates (eqs. 8-9): P(output = 1) for independent inputs with P(input = 1) given.
def and_gate(a: Tensor, b: Tensor) -> Tensor:
    return a * b


def or_gate(a: Tensor, b: Tensor) -> Tensor:
    # = ab + (1-a)b + a(1-b) (eq. 8), factored to one product.
    return a + b - a * b


def xor_gate(a: Tensor, b: Tensor) -> Tensor:
    # = (1-a)b + a(1-b) (eq. 9), factored to one product.
    return a + b - 2 * a * b


def not_gate(a: Tensor) -> Tensor:
    return 1 - a


def mux(s: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """`a` where s = 1, `b` where s = 0: (s and a) or (not s and b).

    The two and-terms exclude each other (s and not s), so their or is exactly their sum; eq. 8's
    or would subtract a spurious s(1-s)ab that only the independence assumption justifies.
    """
    return and_gate(s, a) + and_gate(not_gate(s), b)


# --- Conversions (Appendix B).
def num_bits(n: int) -> int:
    """log2(n) for a power of two n >= 2; a ValueError naming n otherwise."""
    if not isinstance(n, int) or n < 2 or n & (n - 1):
        raise ValueError(f"n = {n!r} is not allowed for circuits: a power of two >= 2 (2, 4, 8, 16, ...)")
    return n.bit_length() - 1


def binary_table(n: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """The n×bits table of binary encodings: row v holds the bits of v, least-significant first."""
    bits = num_bits(n)
    values = torch.arange(n, device=device)
    shifts = torch.arange(bits, device=device)
    return ((values[:, None] >> shifts[None, :]) & 1).to(dtype)  # (n, bits)


def onehot_to_bits(p: Tensor) -> Tensor:
    """(..., n) distributions -> (..., bits) probabilities P(bit_k = 1) = sum_v p_v [bit k of v]."""
    table = binary_table(p.shape[-1], dtype=p.dtype, device=p.device)  # (n, bits)
    return p @ table  # (..., n) @ (n, bits) -> (..., bits)


def bits_to_onehot(q: Tensor) -> Tensor:
    """(..., bits) probabilities -> (..., n) distribution: P(v) = prod_k (q_k if bit k of v else 1 - q_k).

    Built by doubling: after bit k the last axis lists values 0..2^(k+1)-1, and bit k splits each
    value's mass into v (bit off) and v + 2^k (bit on). Sums to 1 for any q (each split preserves mass).
    """
    out = torch.ones_like(q[..., :1])  # (..., 1): the empty number, value 0 with probability 1
    for k in range(q.shape[-1]):
        qk = q[..., k : k + 1]  # (..., 1)
        out = torch.cat([out * not_gate(qk), out * qk], dim=-1)  # (..., 2^k) -> (..., 2^(k+1))
    return out


# --- Circuits on bit vectors (..., w), least-significant bit first.
def ripple_add(a: Tensor, b: Tensor, carry: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Ripple-carry adder: (a + b + carry) mod 2^w and the carry out, each full adder from gates."""
    if carry is None:
        carry = torch.zeros_like(a[..., 0])
    total = []
    for i in range(a.shape[-1]):
        half = xor_gate(a[..., i], b[..., i])
        total.append(xor_gate(half, carry))
        carry = or_gate(and_gate(a[..., i], b[..., i]), and_gate(carry, half))
    return torch.stack(total, dim=-1), carry  # (..., w), (...)


def ripple_sub(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Two's-complement subtractor a + not(b) + 1: (a - b) mod 2^w and P(no borrow) = P(a >= b)."""
    return ripple_add(a, not_gate(b), torch.ones_like(a[..., 0]))


def multiply(a: Tensor, b: Tensor) -> Tensor:
    """Shift-and-add multiplier mod 2^w: adds (a << j) and b_j for each bit j of b."""
    bits = a.shape[-1]
    acc = torch.zeros_like(a)
    for j in range(bits):
        partial = and_gate(a[..., : bits - j], b[..., j : j + 1])  # (..., bits - j): (a << j) bits j.., the rest drop
        # The low j bits of (a << j) are 0 and the carry into them is 0, so only acc's bits j.. change.
        high, _ = ripple_add(acc[..., j:], partial)
        acc = torch.cat([acc[..., :j], high], dim=-1)
    return acc


def is_zero(a: Tensor) -> Tensor:
    """P(a == 0): and of the negated bits."""
    zero = torch.ones_like(a[..., 0])
    for i in range(a.shape[-1]):
        zero = and_gate(zero, not_gate(a[..., i]))
    return zero


def divide(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Restoring long division: (a // b, a % b), both 0 where b = 0 (ISA rule), bit vectors (..., w)."""
    bits = a.shape[-1]
    b_wide = torch.cat([b, torch.zeros_like(b[..., :1])], dim=-1)  # (..., w+1): room for the shifted remainder
    remainder = torch.zeros_like(a)
    quotient = []
    for i in reversed(range(bits)):
        # Bring down bit i: (remainder << 1) | a_i needs w+1 bits since remainder < b < 2^w.
        shifted = torch.cat([a[..., i : i + 1], remainder], dim=-1)  # (..., w+1)
        difference, fits = ripple_sub(shifted, b_wide)  # fits = P(shifted >= b)
        quotient.append(fits)
        # Either way the new remainder is < b, so its top bit is 0 and w bits hold it.
        remainder = mux(fits[..., None], difference[..., :bits], shifted[..., :bits])
    quotient = torch.stack(quotient[::-1], dim=-1)  # (..., w), least-significant first
    # b = 0 -> 0 for both: a mux selecting the all-zero vector where b is zero.
    b_zero = is_zero(b)[..., None]  # (..., 1)
    zeros = torch.zeros_like(a)
    return mux(b_zero, zeros, quotient), mux(b_zero, zeros, remainder)


def compare(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Magnitude comparator: (P(a < b), P(a == b)).

    From the least-significant bit up, the highest differing bit decides: where a_i != b_i, a < b
    iff b_i = 1; elsewhere the verdict of the lower bits stands.
    """
    less = torch.zeros_like(a[..., 0])
    equal = torch.ones_like(a[..., 0])
    for i in range(a.shape[-1]):
        differ = xor_gate(a[..., i], b[..., i])
        less = mux(differ, b[..., i], less)
        equal = and_gate(equal, not_gate(differ))
    return less, equal


class CircuitALU(nn.Module):
    """ALU backend: (B, n) operand distributions -> (B, 9, n) result distributions, ops in `BINARY_OPS` order.

    Parameter-free; works in any float dtype and for any leading batch shape.
    """

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        self.bits = num_bits(n)

    def extra_repr(self) -> str:
        return f"n={self.n}, bits={self.bits}"

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.shape[-1] != self.n:
            raise ValueError(f"operands must both be (B, {self.n}); got x {tuple(x.shape)} and y {tuple(y.shape)}")
        a, b = onehot_to_bits(x), onehot_to_bits(y)  # (B, bits) each
        less, equal = compare(a, b)  # (B,) each
        quotient, remainder = divide(a, b)
        flag_high_bits = torch.zeros_like(a[..., 1:])  # (B, bits-1): eq/lt results are 0 or 1
        results = {
            "add": ripple_add(a, b)[0],
            "sub": ripple_sub(a, b)[0],
            "mul": multiply(a, b),
            "div": quotient,
            "mod": remainder,
            "min": mux(less[..., None], a, b),
            "max": mux(less[..., None], b, a),
            "eq": torch.cat([equal[..., None], flag_high_bits], dim=-1),
            "lt": torch.cat([less[..., None], flag_high_bits], dim=-1),
        }
        out_bits = torch.stack([results[op] for op in BINARY_OPS], dim=-2)  # (B, 9, bits)
        return bits_to_onehot(out_bits)  # (B, 9, n)
