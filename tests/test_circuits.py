"""The circuit ALU backend: exact on one-hot inputs, distributions on soft ones, differentiable."""

import pytest
import torch

from modeling_llama_delta.assembler import BINARY_OPS
from modeling_llama_delta.circuits import CircuitALU, binary_table, bits_to_onehot, onehot_to_bits
from modeling_llama_delta.reference import binary_op


def all_pairs(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    pairs = [(x, y) for x in range(n) for y in range(n)]
    eye = torch.eye(n, dtype=dtype)
    xs = eye[[x for x, _ in pairs]]  # (n*n, n)
    ys = eye[[y for _, y in pairs]]  # (n*n, n)
    return xs, ys, pairs


def soft(batch: int, n: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    return torch.softmax(3 * torch.randn(batch, n, dtype=dtype, generator=generator), dim=-1)


@pytest.mark.parametrize("n", [2, 4, 8, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_on_all_one_hot_pairs(n, dtype):
    xs, ys, pairs = all_pairs(n, dtype)
    out = CircuitALU(n)(xs, ys)  # (n*n, 9, n)
    assert out.shape == (n * n, len(BINARY_OPS), n) and out.dtype == dtype
    expected = torch.tensor([[binary_op(op, x, y, n) for op in BINARY_OPS] for x, y in pairs])  # (n*n, 9)
    assert torch.equal(out.argmax(dim=-1), expected)
    # Exactly one-hot, not merely confident: the gates map {0, 1} to {0, 1} without rounding.
    assert torch.equal(out, torch.nn.functional.one_hot(expected, n).to(dtype))


@pytest.mark.parametrize("n", [2, 8, 64])
def test_conversions_round_trip_on_one_hot(n):
    eye = torch.eye(n, dtype=torch.float64)
    bits = onehot_to_bits(eye)  # (n, bits): row v is v's binary encoding
    assert torch.equal(bits, binary_table(n, dtype=torch.float64))
    assert [sum(int(b) << k for k, b in enumerate(row)) for row in bits.tolist()] == list(range(n))
    assert torch.equal(bits_to_onehot(bits), eye)


def test_bits_to_onehot_is_a_distribution_and_matches_the_product_formula():
    g = torch.Generator().manual_seed(0)
    q = torch.rand(5, 3, 4, dtype=torch.float64, generator=g)  # any leading shape
    p = bits_to_onehot(q)  # (5, 3, 16)
    assert p.shape == (5, 3, 16)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(5, 3, dtype=torch.float64))
    v = 11  # bits 1, 1, 0, 1 (least-significant first)
    expected = q[..., 0] * q[..., 1] * (1 - q[..., 2]) * q[..., 3]
    torch.testing.assert_close(p[..., v], expected)


@pytest.mark.parametrize("n", [4, 16, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_outputs_are_distributions_on_soft_inputs(n, dtype):
    g = torch.Generator().manual_seed(n)
    x, y = soft(16, n, dtype, g), soft(16, n, dtype, g)
    out = CircuitALU(n)(x, y)
    assert out.shape == (16, len(BINARY_OPS), n)
    assert torch.isfinite(out).all() and (out >= 0).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(16, len(BINARY_OPS), dtype=dtype))
    # eq and lt put all their mass on 0 and 1.
    flags = out[:, [BINARY_OPS.index("eq"), BINARY_OPS.index("lt")]]
    torch.testing.assert_close(flags[..., :2].sum(-1), torch.ones(16, 2, dtype=dtype))


def test_soft_inputs_differ_from_the_table_by_design():
    # A 50/50 mix of 1 (01) and 2 (10) has independent bit marginals 1/2, 1/2: the circuit sees a uniform mix of 0..3.
    x = torch.tensor([[0.0, 0.5, 0.5, 0.0]], dtype=torch.float64)
    zero = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    added = CircuitALU(4)(x, zero)[0, BINARY_OPS.index("add")]
    torch.testing.assert_close(added, torch.full((4,), 0.25, dtype=torch.float64))


def test_gradcheck_both_inputs():
    g = torch.Generator().manual_seed(1)
    x = soft(3, 4, torch.float64, g).requires_grad_()
    y = soft(3, 4, torch.float64, g).requires_grad_()
    assert torch.autograd.gradcheck(CircuitALU(4), (x, y))


def test_gradients_are_finite_and_reach_both_inputs():
    g = torch.Generator().manual_seed(2)
    x = soft(4, 32, torch.float32, g).requires_grad_()
    y = soft(4, 32, torch.float32, g).requires_grad_()
    CircuitALU(32)(x, y).square().sum().backward()
    for grad in (x.grad, y.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("n", [0, 1, 3, 12, 100])
def test_non_power_of_two_refused(n):
    with pytest.raises(ValueError, match=rf"n = {n} .*power of two"):
        CircuitALU(n)


def test_wrong_operand_shape_refused():
    with pytest.raises(ValueError, match="operands must both be"):
        CircuitALU(8)(torch.eye(8), torch.eye(4))
