"""ALU backends: exact on every one-hot operand pair, and `structured` equal to the dense table on mixtures."""

import pytest
import torch

from modeling_llama_delta.alu import (
    ALU_BACKENDS,
    BINARY_OPS,
    DEFAULT_ALU,
    StructuredALU,
    TableALU,
    binary_op_values,
    build_alu,
)
from modeling_llama_delta.reference import binary_op

SMALL_N = [2, 3, 5, 8, 16]


@pytest.fixture(params=["level sets", "fourier"])
def regime_ops(request, monkeypatch) -> tuple[str, ...]:
    """The ops to compute in a test: every op with the default algorithms (level sets below n = 256), or every op
    but mod with the FFT ones at every n (mod needs the n² pass, which add/sub/mul would then join)."""
    import modeling_llama_delta.alu as alu_module

    if request.param == "level sets":
        return BINARY_OPS
    monkeypatch.setattr(alu_module, "FOURIER_MIN_N", 2)
    return tuple(op for op in BINARY_OPS if op != "mod")


def _rows(ops: tuple[str, ...]) -> list[int]:
    return [BINARY_OPS.index(op) for op in ops]


def _all_pairs(n: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot operands for every (x, y): (n·n, n) each, row x·n + y."""
    eye = torch.eye(n, dtype=dtype)
    return eye.repeat_interleave(n, dim=0), eye.repeat(n, 1)


def _expected(n: int) -> torch.Tensor:
    """(n·n, 9) reference values, straight from `reference.binary_op`."""
    return torch.tensor([[binary_op(op, x, y, n) for op in BINARY_OPS] for x in range(n) for y in range(n)])


def _backends_for(n: int) -> list[str]:
    return [name for name in sorted(ALU_BACKENDS) if name != "circuit" or n & (n - 1) == 0]


@pytest.mark.parametrize("n", SMALL_N)
def test_value_table_matches_reference(n):
    values = binary_op_values(n)  # (9, n, n)
    assert torch.equal(values.permute(1, 2, 0).reshape(n * n, 9), _expected(n))


@pytest.mark.parametrize("n", SMALL_N)
def test_every_backend_is_exact_on_every_operand_pair(n):
    x, y = _all_pairs(n)
    for name in _backends_for(n):
        out = build_alu(name, n)(x, y)  # (n·n, 9, n)
        assert out.shape == (n * n, len(BINARY_OPS), n), name
        assert torch.equal(out.argmax(-1), _expected(n)), name
        assert torch.equal(out, torch.nn.functional.one_hot(_expected(n), n).float()), name  # exactly one-hot


@pytest.mark.parametrize("n", SMALL_N)
def test_structured_fft_ops_are_exact_on_every_operand_pair(n, monkeypatch):
    import modeling_llama_delta.alu as alu_module

    monkeypatch.setattr(alu_module, "FOURIER_MIN_N", 2)
    power_of_two = n & (n - 1) == 0  # else mul also needs the n² pass
    ops = tuple(op for op in BINARY_OPS if op != "mod" and (op != "mul" or power_of_two))
    alu = StructuredALU(n)
    assert alu.fourier_ops(ops) == (("add", "sub", "mul") if power_of_two else ("add", "sub"))
    x, y = _all_pairs(n)
    out = alu(x, y, ops=ops)[:, _rows(ops)]
    assert torch.equal(out, torch.nn.functional.one_hot(_expected(n)[:, _rows(ops)], n).float())


@pytest.mark.parametrize("n", [2, 3, 5, 8, 16, 30, 64])
def test_structured_equals_table_on_mixtures_in_float64(n, regime_ops):
    g = torch.Generator().manual_seed(n)
    x = torch.softmax(torch.randn(6, n, generator=g, dtype=torch.float64) * 3, -1)
    y = torch.softmax(torch.randn(6, n, generator=g, dtype=torch.float64) * 3, -1)
    rows = _rows(regime_ops)
    table, structured = TableALU(n)(x, y)[:, rows], StructuredALU(n)(x, y, ops=regime_ops)[:, rows]
    assert float((table - structured).abs().max()) < 1e-12
    assert float((structured.sum(-1) - 1).abs().max()) < 1e-12  # distributions stay distributions
    # Both are bilinear, so they also agree on unnormalised inputs (as inside a soft machine).
    scale = torch.rand(6, 1, generator=g, dtype=torch.float64) + 0.5
    assert torch.allclose(
        TableALU(n)(x * scale, y)[:, rows], StructuredALU(n)(x * scale, y, ops=regime_ops)[:, rows], atol=1e-12
    )


@pytest.mark.parametrize("n", [3, 8, 16])
def test_structured_backward_passes_gradcheck(n, regime_ops):
    g = torch.Generator().manual_seed(0)
    x = torch.softmax(torch.randn(3, n, generator=g, dtype=torch.float64), -1).requires_grad_()
    y = torch.softmax(torch.randn(3, n, generator=g, dtype=torch.float64), -1).requires_grad_()
    alu = StructuredALU(n)
    assert torch.autograd.gradcheck(lambda a, b: alu(a, b, ops=regime_ops), (x, y))


@pytest.mark.parametrize("n", [12, 16])
def test_structured_gradients_equal_the_tables(n, regime_ops):
    g = torch.Generator().manual_seed(1)
    x = torch.softmax(torch.randn(4, n, generator=g, dtype=torch.float64), -1)
    y = torch.softmax(torch.randn(4, n, generator=g, dtype=torch.float64), -1)
    weight = torch.randn(4, len(BINARY_OPS), n, generator=g, dtype=torch.float64)
    weight[:, [i for i in range(len(BINARY_OPS)) if i not in _rows(regime_ops)]] = 0
    grads = []
    for alu in (TableALU(n), StructuredALU(n)):
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = alu(xs, ys) if isinstance(alu, TableALU) else alu(xs, ys, ops=regime_ops)
        (out * weight).sum().backward()
        grads.append((xs.grad, ys.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)


def test_float32_structured_stays_close_to_float64(regime_ops):
    n = 128
    g = torch.Generator().manual_seed(2)
    x = torch.softmax(torch.randn(8, n, generator=g, dtype=torch.float64) * 4, -1)
    y = torch.softmax(torch.randn(8, n, generator=g, dtype=torch.float64) * 4, -1)
    alu = StructuredALU(n)
    error = alu(x.float(), y.float(), ops=regime_ops).double() - alu(x, y, ops=regime_ops)
    assert float(error.abs().max()) < 1e-6


def test_table_refuses_sizes_it_cannot_build():
    alu = TableALU(1024)  # 9 · 1024³ floats = 38.7 GB
    x = torch.full((1, 1024), 1 / 1024)
    with pytest.raises(MemoryError, match="n = 1024 needs 38.7 GB"):
        alu(x, x)
    assert TableALU(8, max_bytes=100).table_bytes(torch.float32) == 9 * 8**3 * 4


def test_registry_and_operand_checks():
    assert set(ALU_BACKENDS) == {"table", "structured", "circuit"} and DEFAULT_ALU == "structured"
    with pytest.raises(ValueError, match="unknown ALU backend 'abacus'"):
        build_alu("abacus", 8)
    with pytest.raises(ValueError, match="power of two"):
        build_alu("circuit", 12)
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        build_alu("structured", 8)(torch.zeros(2, 8), torch.zeros(3, 8))
    assert not list(StructuredALU(16).state_dict())  # index buffers are rebuilt, never saved


def test_structured_blocks_give_the_same_values_and_gradients(monkeypatch):
    """Small block sizes force many row blocks (a partial last one too) in both directions."""
    import modeling_llama_delta.alu as alu_module

    n = 30
    g = torch.Generator().manual_seed(3)
    x = torch.softmax(torch.randn(5, n, generator=g, dtype=torch.float64), -1)
    y = torch.softmax(torch.randn(5, n, generator=g, dtype=torch.float64), -1)
    weight = torch.randn(5, len(BINARY_OPS), n, generator=g, dtype=torch.float64)
    results = []
    for block_bytes in (None, 7 * n * 5 * 8):  # one block; blocks of 7 rows (30 = 4·7 + 2)
        if block_bytes:
            monkeypatch.setattr(alu_module, "FORWARD_BLOCK_BYTES", block_bytes)
            monkeypatch.setattr(alu_module, "BACKWARD_BLOCK_BYTES", block_bytes)
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        out = StructuredALU(n)(xs, ys)
        (out * weight).sum().backward()
        results.append((out, xs.grad, ys.grad))
    assert alu_module._block_rows(n, 5, 8, alu_module.FORWARD_BLOCK_BYTES) == 7
    for single, blocked in zip(*results, strict=True):
        assert torch.allclose(single, blocked, atol=1e-13)
    assert torch.allclose(results[1][0], TableALU(n)(x, y), atol=1e-12)


@pytest.mark.parametrize(
    "ops",
    [
        ("add",),
        ("sub", "div"),
        ("mul", "mod", "eq"),
        ("mul", "div"),
        ("lt",),
        ("min", "lt"),
        ("max",),
        ("add", "eq", "lt"),
        (),
    ],
)
@pytest.mark.parametrize("n", [12, 16])
def test_structured_op_subsets_compute_those_rows_exactly_and_zeros_elsewhere(ops, n, regime_ops):
    """`ops` computes only those rows; the rest are 0 and get no gradient."""
    g = torch.Generator().manual_seed(5)
    x = torch.softmax(torch.randn(4, n, generator=g, dtype=torch.float64), -1).requires_grad_()
    y = torch.softmax(torch.randn(4, n, generator=g, dtype=torch.float64), -1).requires_grad_()
    alu = StructuredALU(n)
    kept = [i for i, op in enumerate(BINARY_OPS) if op in ops]
    mask = torch.zeros(len(BINARY_OPS), 1, dtype=torch.float64)
    mask[kept] = 1
    out = alu(x, y, ops=ops)
    assert not out[:, mask[:, 0] == 0].any()
    # (the full computation takes the n² pass for mod, which add/sub/mul then join: equal up to rounding)
    torch.testing.assert_close(out, alu(x, y) * mask, rtol=0, atol=1e-14)
    assert torch.autograd.gradcheck(lambda a, b: alu(a, b, ops=ops), (x, y))
    weight = torch.randn(4, len(BINARY_OPS), n, generator=g, dtype=torch.float64)
    subset = torch.autograd.grad((out * weight).sum(), (x, y))
    full = torch.autograd.grad((alu(x, y) * weight * mask).sum(), (x, y))
    for a, b in zip(subset, full, strict=True):
        assert torch.allclose(a, b, atol=1e-14)
    with pytest.raises(ValueError, match="not ALU ops"):
        alu(x, y, ops=("add", "inc"))


def test_fourier_regime_starts_at_its_word_size():
    import modeling_llama_delta.alu as alu_module

    below, at = StructuredALU(alu_module.FOURIER_MIN_N - 1), StructuredALU(alu_module.FOURIER_MIN_N)
    loop = ("add", "mul", "div", "lt")
    assert below.fourier_ops(loop) == () and below.level_set_ops(loop) == ("add", "mul")
    assert at.fourier_ops(loop) == ("add", "mul") and at.level_set_ops(loop) == ()
    # Where an n² pass runs anyway (mod; mul unless n is a power of two), add/sub/mul join it.
    assert at.fourier_ops(BINARY_OPS) == () and at.level_set_ops(BINARY_OPS) == ("add", "sub", "mul", "mod")
    assert StructuredALU(300).fourier_ops(("add", "sub", "div")) == ("add", "sub")
    assert StructuredALU(300).fourier_ops(("add", "mul")) == ()


def test_fourier_ops_are_exact_on_one_hot_pairs_and_close_on_mixtures(monkeypatch):
    """n = 256, every op but mod: one-hot pairs give exactly one-hot rows in float32; on the soft examples of the
    same batch (the exact-row overwrite leaves them alone) float32 stays within 5e-7 of float64 on the FFT rows
    and 2e-6 on the rest, and float64 equals the level-set algorithms to 1e-12."""
    import modeling_llama_delta.alu as alu_module

    n = 256
    g = torch.Generator().manual_seed(7)
    soft = torch.softmax(torch.randn(3, n, generator=g, dtype=torch.float64) * 4, -1)
    picks = torch.tensor([[0, 0], [255, 255], [128, 2], [37, 201]])
    x = torch.cat([torch.nn.functional.one_hot(picks[:, 0], n).double(), soft])
    y = torch.cat([torch.nn.functional.one_hot(picks[:, 1], n).double(), soft.flip(0)])
    fourier = StructuredALU(n)
    ops = tuple(op for op in BINARY_OPS if op != "mod")  # mod would need the n² pass: add/sub/mul would join it
    assert fourier.fourier_ops(ops) == ("add", "sub", "mul")
    out32, out64 = fourier(x.float(), y.float(), ops=ops), fourier(x, y, ops=ops)
    expected = torch.tensor([[binary_op(op, int(i), int(j), n) for op in BINARY_OPS] for i, j in picks])
    rows = _rows(ops)
    assert torch.equal(out32[:4, rows], torch.nn.functional.one_hot(expected[:, rows], n).float())
    error = (out32[4:].double() - out64[4:]).abs().amax((0, 2))  # (9,) per op
    assert float(error[:3].max()) < 5e-7 and float(error.max()) < 2e-6
    monkeypatch.setattr(alu_module, "FOURIER_MIN_N", n + 1)
    assert float((StructuredALU(n)(x, y, ops=ops) - out64).abs().max()) < 1e-12
