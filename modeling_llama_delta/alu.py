"""ALU backends of Δ: operand distributions -> result distributions of every binary op.

One interface, chosen by name (`build_alu`) and swappable on a trained machine (no backend has
parameters): `alu(x, y)` with `x, y: (B, n)` returns `(B, 9, n)`, the distribution of `op(x, y)` for
each op in `BINARY_OPS` order, x and y independent. The machine mixes these by the op distribution
(paper eq. 7/10, contracted in the other order). Unary ops (inc/dec/mov/const) are rolls and copies in
the machine.

- `table`: the paper's dense |A|×n×n×n lookup T contracted as eq. 10, `o = T_ijk x_i y_j` (the
  faithful baseline; 9·n³ floats, built on first use, refused where it would not fit).
- `structured`: the same distributions with no table, from each op's structure: add/sub/mul/mod sum
  the joint distribution x_i y_j over each op's level sets {(i, j): op(i, j) = k} (for add the circular
  convolution, for sub the correlation) with one fused gather-and-sum over fixed index lists; div sums
  x over the intervals [k·j, (k+1)·j) (n·ln n terms); min/max/eq/lt are O(n) closed forms through
  cumulative distributions. From n = `FOURIER_MIN_N` on, add/sub go through the FFT and mul (n a power
  of two) through an FFT over the multiplicative structure of Z/2^K when no requested op needs the n²
  pass (float rounding on mixtures, ~1e-7 in float32; set exactly from integer arithmetic on one-hot
  operand pairs).
  One custom autograd function, backward by hand (one more gather-and-sum; nothing n²-sized is saved),
  on cache-sized blocks of operand pairs. `alu(x, y, ops=...)` computes only
  the rows of the listed ops (the others are 0): a machine whose frozen ROM never selects mul, say, skips
  its n² work exactly (an op of probability 0 contributes exactly 0; see `DeltaMachine.alu_ops`).
- `circuit` (circuits.py, n a power of two): logic gates on binary encodings; exact on one-hot inputs
  only (it treats bits as independent).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .assembler import BINARY_OPS

# The dense table is refused above this size (n = 256 in float32 needs 604 MB; n = 512 needs 4.8 GB).
TABLE_MAX_BYTES = 2 * 1024**3
# The structured ALU's two groups: ops whose results depend on every operand pair, then O(n) order ops.
PAIR_OPS: tuple[str, ...] = ("add", "sub", "mul", "div", "mod")
ORDER_OPS: tuple[str, ...] = ("min", "max", "eq", "lt")
assert BINARY_OPS == PAIR_OPS + ORDER_OPS, "the structured ALU returns pair ops, then order ops"
# Pair ops summed over level sets in the forward pass (div sums intervals instead).
LEVEL_SET_OPS: tuple[str, ...] = ("add", "sub", "mul", "mod")
# From this word size on, add/sub (any n) and mul (n a power of two) go through the FFT when that removes the n²
# level-set pass (`StructuredALU.fourier_ops`). Their O(n log n) work takes ~20 small ops each way, which cost
# more than the n² pass at n = 128 and about the same at 256 (`bench/bench_fourier.py`, machine step fwd+bwd,
# B = 32, 1 thread: level sets vs FFT 2.0 vs 2.7 ms at n = 128, 4.4 vs 4.4 at 256, 12.8 vs 7.6 at 512, 41 vs 16
# at 1024).
FOURIER_MIN_N = 256
# Block sizes of the structured ALU's n²·B temporaries: forward joint blocks, backward gradient blocks. Inside a
# machine step (other data between calls) blocks that fit in a core's L2 run fastest: 8 MB was 1.3x slower at n = 256.
FORWARD_BLOCK_BYTES = 2 * 1024**2
BACKWARD_BLOCK_BYTES = 1024**2


def binary_op_values(n: int) -> Tensor:
    """Value of every binary op on every pair: (9, n, n) long, [op, x, y] = op(x, y) as `reference.binary_op`."""
    x = torch.arange(n)[:, None]  # (n, 1)
    y = torch.arange(n)[None, :]  # (1, n)
    safe_y = y.clamp(min=1)  # div/mod by 0 give 0
    values = {
        "add": (x + y) % n,
        "sub": (x - y) % n,
        "mul": (x * y) % n,
        "div": torch.where(y == 0, 0, x // safe_y),
        "mod": torch.where(y == 0, 0, x % safe_y),
        "min": torch.minimum(x, y),
        "max": torch.maximum(x, y),
        "eq": (x == y).long(),
        "lt": (x < y).long(),
    }
    return torch.stack([values[op].expand(n, n) for op in BINARY_OPS])  # (9, n, n)


def _check_operands(x: Tensor, y: Tensor, n: int) -> None:
    if x.dim() != 2 or x.shape != y.shape or x.shape[-1] != n:
        raise ValueError(f"ALU operands must both be (B, {n}); got x {tuple(x.shape)} and y {tuple(y.shape)}")


class TableALU(nn.Module):
    """The paper's dense lookup table T (9, n, n, n), one-hot in its last axis, contracted as eq. 10.

    Stored as (n·n, 9·n) so that the contraction is one outer product and one GEMM:
    o[b, op, k] = sum_ij x[b, i] y[b, j] T[op, i, j, k]. Built on the first call for the inputs' dtype and
    device (it is huge: 9·n³ floats); refused with a clear error above `max_bytes`.
    """

    exact_on_mixtures = True

    def __init__(self, n: int, max_bytes: int = TABLE_MAX_BYTES):
        super().__init__()
        self.n = n
        self.max_bytes = max_bytes
        self._table: Tensor | None = None

    def extra_repr(self) -> str:
        return f"n={self.n}, table_bytes(float32)={self.table_bytes(torch.float32):,}"

    def table_bytes(self, dtype: torch.dtype) -> int:
        return len(BINARY_OPS) * self.n**3 * torch.empty((), dtype=dtype).element_size()

    def table(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The (n·n, 9·n) table in `dtype` on `device`, built once (rebuilt if either changes)."""
        if self._table is None or self._table.dtype != dtype or self._table.device != device:
            needed = self.table_bytes(dtype)
            if needed > self.max_bytes:
                raise MemoryError(
                    f"the dense ALU table for n = {self.n} needs {needed / 1e9:.1f} GB in {dtype} "
                    f"(9·n³ entries), over the limit of {self.max_bytes / 1e9:.1f} GB; use alu='structured'"
                )
            self._table = None  # free the old one before building the new one
            n = self.n
            values = binary_op_values(n).to(device)  # (9, n, n)
            columns = values + n * torch.arange(len(BINARY_OPS), device=device)[:, None, None]  # (9, n, n)
            table = torch.zeros(n * n, len(BINARY_OPS) * n, dtype=dtype, device=device)
            rows = torch.arange(n * n, device=device).expand(len(BINARY_OPS), -1)  # (9, n·n)
            table[rows, columns.reshape(len(BINARY_OPS), n * n)] = 1
            self._table = table
        return self._table

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_operands(x, y, self.n)
        b, n = x.shape
        pairs = (x[:, :, None] * y[:, None, :]).reshape(b, n * n)  # (B, n·n): P(x = i, y = j)
        return (pairs @ self.table(x.dtype, x.device)).view(b, len(BINARY_OPS), n)  # (B, 9n) -> (B, 9, n)


def _suffix_sum(z: Tensor) -> Tensor:
    """(..., n) -> (..., n): sum_{i >= k} z_i (the adjoint of cumsum)."""
    return z.flip(-1).cumsum(-1).flip(-1)


class _StructuredOps(torch.autograd.Function):
    """All nine binary ops of independent operands: (B, n), (B, n) -> (B, 9, n), backward by hand.

    Batch-last inside ((n, B) rows, so every gathered row is B contiguous values).
    add/sub/mul/mod: out[op, k] = sum over the level set {(i, j): op(i, j) = k} of x_i y_j (add is the
    circular convolution, sub the correlation): the joint distribution x_i y_j of a block of rows i, then
    all 4n level sets in ONE fused gather-and-sum (`embedding_bag` over the pairs sorted by (op, value)).
    div: out[k] = sum_j y_j (X[(k+1)·j] - X[k·j]) with X the prefix sums of x, over the ~n·ln(n) pairs
    (j, k) with k·j < n (cheaper, and shorter float sums than div's level sets of up to n²/2 pairs).
    min/max/eq/lt: closed forms through cumulative sums, O(n) both ways.
    Backward: H[i, j] = sum_op g[op, op(i, j)] over the level-set ops and div (one more `embedding_bag`,
    bags of up to 5), dx_i = sum_j H[i, j] y_j, dy_j = sum_i H[i, j] x_i. Only x and y are saved. Both
    directions work on blocks of rows i so that the n²·B temporaries stay in cache (10x faster at n = 256).
    From n = `FOURIER_MIN_N` on (`StructuredALU.fourier_ops`), add/sub are products of spectra
    (`torch.fft.rfft`) and mul for n = 2^K is `_two_adic_product`, backward by the correlation theorem;
    their rows are set exactly on examples whose operands are both one-hot (`_set_exact_rows`), and div
    goes back through its intervals when no level-set pass runs.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, alu: StructuredALU, ops: tuple[str, ...]) -> Tensor:
        b, n = x.shape
        xt, yt = x.t().contiguous(), y.t().contiguous()  # (n, B) each
        out = x.new_zeros(b, len(BINARY_OPS), n)  # rows of ops outside `ops` stay 0
        fourier_ops = alu.fourier_ops(ops)
        if "add" in fourier_ops or "sub" in fourier_ops:
            fx, fy = torch.fft.rfft(x), torch.fft.rfft(y)  # (B, n//2 + 1) each
            spectra = {"add": fx * fy, "sub": fx * fy.conj()}  # the convolution and correlation theorems
            cyclic = [op for op in ("add", "sub") if op in fourier_ops]
            rows = [BINARY_OPS.index(op) for op in cyclic]
            out[:, rows] = torch.fft.irfft(torch.stack([spectra[op] for op in cyclic], 1), n=n)  # (B, C, n)
        if "mul" in fourier_ops:
            out[:, BINARY_OPS.index("mul")] = _two_adic_product(x, y, alu)
        _set_exact_rows(out, x, y, fourier_ops)
        level_ops = alu.level_set_ops(ops)
        if level_ops:
            sums = xt.new_zeros(len(level_ops) * n, b)  # (L·n, B): level set sums, op-major
            rows = _block_rows(n, b, x.element_size(), FORWARD_BLOCK_BYTES)
            for start, level_sets, offsets in alu.level_set_blocks(rows, x.device, level_ops):
                block = xt[start : start + rows, None, :]  # (rows, 1, B)
                joint = alu.workspace("joint", (rows, n, b), x)[: block.shape[0]]  # reused: fresh memory is slow
                torch.mul(block, yt[None, :, :], out=joint)  # (rows, n_j, B): x_i y_j
                sums += F.embedding_bag(level_sets, joint.view(-1, b), offsets, mode="sum")  # (L·n, B)
            for index, op in enumerate(level_ops):
                out[:, BINARY_OPS.index(op)] = sums[index * n : (index + 1) * n].t()  # (n, B) -> (B, n)
        if "div" in ops:
            # (V, B): P(x in [k·j, (k+1)·j), y = j)
            terms = _quotient_intervals(xt, alu) * yt.index_select(0, alu.div_j)
            quotients = F.embedding_bag(alu.div_k_rows, terms, alu.div_k_offsets, mode="sum")  # (n, B): sum over k
            out[:, BINARY_OPS.index("div")] = quotients.t()  # (B, n)
        order_ops = tuple(op for op in ORDER_OPS if op in ops)
        if order_ops:
            out[:, len(PAIR_OPS) :] = _order_ops(x, y, order_ops)  # (B, 4, n)
        ctx.save_for_backward(x, y)
        ctx.alu, ctx.ops = alu, ops
        return out  # (B, 9, n)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, y = ctx.saved_tensors  # (B, n) each
        alu, ops, (b, n) = ctx.alu, ctx.ops, x.shape
        # The pair ops left to the level-set pass; div joins it when it runs (its n² terms cost nothing extra
        # there) and otherwise goes back through its intervals.
        level_ops = alu.level_set_ops(ops)
        pair_ops = tuple(op for op in PAIR_OPS if op in level_ops or (op == "div" and op in ops and level_ops))
        grad_x, grad_y = torch.zeros_like(x), torch.zeros_like(y)
        if pair_ops:
            pair_values, pair_rows = alu.pair_values_for(pair_ops, x.device)  # (n·n, Q), (Q,)
            q = len(pair_ops)
            g = grad.index_select(1, pair_rows).permute(1, 2, 0).reshape(q * n, b).contiguous()  # (B, Q, n) -> (Q·n, B)
            xt, yt = x.t().contiguous(), y.t().contiguous()  # (n, B) each
            grad_xt, grad_yt = torch.empty_like(xt), torch.zeros_like(yt)
            rows = _block_rows(n, b, x.element_size(), BACKWARD_BLOCK_BYTES)
            for start in range(0, n, rows):
                bags = pair_values[start * n : (start + rows) * n]  # (rows·n_j, Q)
                h = F.embedding_bag(bags, g, mode="sum").view(-1, n, b)  # (rows, n_j, B): sum_op g[op, op(i, j)]
                product = alu.workspace("product", (rows, n, b), x)[: h.shape[0]]
                grad_yt += torch.mul(h, xt[start : start + rows, None, :], out=product).sum(0)  # (n_j, B)
                grad_xt[start : start + rows] = h.mul_(yt[None, :, :]).sum(1)  # (rows, B); h is not needed any more
                del h  # free it before the next block's, so the allocator hands the same memory back
            grad_x, grad_y = grad_xt.t(), grad_yt.t()
        fourier_ops = alu.fourier_ops(ops)
        if "add" in fourier_ops or "sub" in fourier_ops:
            # add: dx = g ⋆ y, dy = g ⋆ x (correlations); sub: dx = g ⊛ y, dy[j] = sum_k x_{j+k} g_k
            fx, fy = torch.fft.rfft(x), torch.fft.rfft(y)  # (B, n//2 + 1) each
            g_add, g_sub = (
                torch.fft.rfft(grad[:, BINARY_OPS.index(op)]) if op in fourier_ops else torch.zeros_like(fx)
                for op in ("add", "sub")
            )  # (B, n//2 + 1) each
            spectra = torch.stack([g_add * fy.conj() + g_sub * fy, g_add * fx.conj() + fx * g_sub.conj()])
            cyclic_x, cyclic_y = torch.fft.irfft(spectra, n=n).unbind(0)  # (B, n) each
            grad_x, grad_y = grad_x + cyclic_x, grad_y + cyclic_y
        if "mul" in fourier_ops:
            mul_x, mul_y = _two_adic_product_backward(x, y, grad[:, BINARY_OPS.index("mul")], alu)
            grad_x, grad_y = grad_x + mul_x, grad_y + mul_y
        if "div" in ops and "div" not in pair_ops:
            xt, yt = x.t().contiguous(), y.t().contiguous()  # (n, B) each
            g_terms = grad[:, BINARY_OPS.index("div")].t().index_select(0, alu.div_k)  # (V, B)
            g_intervals = g_terms * yt.index_select(0, alu.div_j)  # (V, B)
            div_y = F.embedding_bag(
                alu.div_j_rows, g_terms * _quotient_intervals(xt, alu), alu.div_j_offsets, mode="sum"
            )  # (n, B): sum over j
            g_prefix = F.embedding_bag(
                alu.div_prefix_rows,
                g_intervals,
                alu.div_prefix_offsets,
                mode="sum",
                per_sample_weights=alu.div_prefix_signs.to(g_intervals.dtype),
            )  # (n + 1, B): + at each interval's end, - at its start
            # prefix[m] = sum_{i < m} x_i, so dx_i = sum_{m > i} g_prefix[m]
            grad_x, grad_y = grad_x + _suffix_sum(g_prefix[1:].t()), grad_y + div_y.t()
        order_ops = tuple(op for op in ORDER_OPS if op in ops)
        if order_ops:
            order_x, order_y = _order_ops_backward(x, y, grad[:, len(PAIR_OPS) :], order_ops)
            grad_x, grad_y = grad_x + order_x, grad_y + order_y
        return grad_x, grad_y, None, None


def _quotient_intervals(xt: Tensor, alu: StructuredALU) -> Tensor:
    """(n, B) -> (V, B): P(x in [k·j, (k+1)·j)) for every (j, k) of `alu.div_*` (all of x for j = 0)."""
    prefix = F.pad(xt.cumsum(0), (0, 0, 1, 0))  # (n + 1, B): prefix[m] = sum_{i < m} x_i
    return prefix.index_select(0, alu.div_end) - prefix.index_select(0, alu.div_start)


def _set_exact_rows(out: Tensor, x: Tensor, y: Tensor, ops: tuple[str, ...]) -> None:
    """Overwrite the rows `ops` (of add, sub, mul) of out (B, 9, n) with the exact one-hot result on examples
    whose x and y are both exactly one-hot."""
    if not ops:
        return
    one_hot = (x.ne(0).sum(-1) == 1) & (y.ne(0).sum(-1) == 1) & (x.amax(-1) == 1) & (y.amax(-1) == 1)  # (B,)
    if not bool(one_hot.any()):
        return
    examples = one_hot.nonzero().squeeze(1)  # (E,)
    i, j, n = x[examples].argmax(-1), y[examples].argmax(-1), x.shape[-1]  # (E,) each
    values = {"add": (i + j) % n, "sub": (i - j) % n, "mul": (i * j) % n}
    for op in ops:
        out[examples, BINARY_OPS.index(op)] = F.one_hot(values[op], n).to(out)  # (E, n)


# --- mul for n = 2^K by the FFT on the multiplicative structure of Z/2^K
# A nonzero value i = 2^a · u (u odd) and u ≡ (-1)^t · 5^e (mod 2^(K-a)) (the odd residues are the group
# Z2 × Z_(2^(K-2)), generated by -1 and 5), so i·j = 2^(a+c) · (-1)^(t+t') · 5^(e+e') (mod 2^K): valuations add
# and (t, e) add in the group G = Z2 × Z_N, N = 2^max(K-2, 0). Each operand is laid out as (valuation a in 0..K
# (K: the value 0), t, e) (`two_adic_src`), transformed over G (a sum and a difference over t, `rfft` over e),
# multiplied, summed over the pairs of valuations (a, c) with a + c = s, and transformed back; the product slot
# (s, t, e) holds the value `two_adic_value` (0 for s >= K), so an index_add folds the slots into the output.
# Only frequencies f ≡ 0 (mod 2^s) survive the fold of slot s, so only those (f, a, c) are computed
# (`two_adic_left/right/product`, ~2 per frequency): O(K·n log n) work instead of n².


def _two_adic_spectra(v: Tensor, alu: StructuredALU) -> Tensor:
    """(R, n) -> (R, 2, (K+1)·F): each row's spectrum over G per valuation (`_group_spectra` of its layout)."""
    k, m = alu.two_adic_sizes
    return _group_spectra(F.pad(v, (0, 1)).index_select(1, alu.two_adic_src).view(-1, k + 1, 2, m))


def _group_spectra(slots: Tensor) -> Tensor:
    """(R, S, t, N) -> (R, 2, S·F): the transform over G = Z2 × Z_N of every slot (±: the sum and difference over
    t, then `rfft` over e)."""
    signs = torch.stack([slots[:, :, 0] + slots[:, :, 1], slots[:, :, 0] - slots[:, :, 1]], 1)  # (R, ±, S, N)
    return torch.fft.rfft(signs).flatten(2)  # (R, ±, S·F)


def _two_adic_signal(spectra: Tensor, alu: StructuredALU) -> Tensor:
    """The inverse of `_group_spectra`: (R, 2, S·F) -> (R, S·2·N)."""
    m = alu.two_adic_sizes[1]
    z = torch.fft.irfft(spectra.unflatten(-1, (-1, m // 2 + 1)), n=m)  # (R, ±, S, N)
    return torch.stack([z[:, 0] + z[:, 1], z[:, 0] - z[:, 1]], 2).mul_(0.5).flatten(1)  # (R, S, t, N)


def _two_adic_product(x: Tensor, y: Tensor, alu: StructuredALU) -> Tensor:
    """The distribution of x·y mod n for n = 2^K: (B, n), (B, n) -> (B, n)."""
    b, n = x.shape
    fx, fy = _two_adic_spectra(torch.cat([x, y]), alu).split(b)  # (B, ±, A·F) each
    terms = fx.index_select(-1, alu.two_adic_left) * fy.index_select(-1, alu.two_adic_right)  # (B, ±, T)
    slots = 2 * alu.two_adic_sizes[0] + 1
    spectra = fx.new_zeros(b, 2, slots * (alu.two_adic_sizes[1] // 2 + 1)).index_add_(-1, alu.two_adic_product, terms)
    signal = _two_adic_signal(spectra, alu).t().contiguous()  # (S·2·N, B)
    # The fold as `embedding_bag` bags of slots by value (index_add_ along the slots' axis was 3.6x slower).
    return F.embedding_bag(alu.two_adic_value_rows, signal, alu.two_adic_value_offsets, mode="sum").t()  # (B, n)


def _two_adic_product_backward(x: Tensor, y: Tensor, grad: Tensor, alu: StructuredALU) -> tuple[Tensor, Tensor]:
    """dx[i] = sum_j y_j grad[i·j], dy[j] = sum_i x_i grad[i·j]: correlations over G, (B, n) each."""
    b, n = x.shape
    fx, fy = _two_adic_spectra(torch.cat([x, y]), alu).split(b)  # (B, ±, A·F) each
    pulled = grad.index_select(1, alu.two_adic_value).view(b, -1, 2, alu.two_adic_sizes[1])  # (B, S, t, N)
    fg = _group_spectra(pulled).index_select(-1, alu.two_adic_product)  # (B, ±, T): grad's spectrum at each term's slot
    left, right = alu.two_adic_left, alu.two_adic_right
    gx = torch.zeros_like(fx).index_add_(-1, left, fg * fy.index_select(-1, right).conj())  # (B, ±, A·F)
    gy = torch.zeros_like(fy).index_add_(-1, right, fg * fx.index_select(-1, left).conj())
    grads = _two_adic_signal(torch.cat([gx, gy]), alu).index_select(1, alu.two_adic_position)  # (2B, n)
    return grads[:b], grads[b:]


def _bags(keys: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """`embedding_bag` bags grouping rows by key in 0..count-1: (row indices sorted by key, (count,) offsets)."""
    rows = torch.argsort(keys, stable=True)
    return rows, F.pad(torch.bincount(keys, minlength=count).cumsum(0)[:-1], (1, 0))


def _block_rows(n: int, batch: int, element_size: int, block_bytes: int) -> int:
    """Rows i per block so that a (rows·n, B) temporary takes about `block_bytes`."""
    return max(1, min(n, block_bytes // (n * batch * element_size)))


def _order_ops(x: Tensor, y: Tensor, ops: tuple[str, ...]) -> Tensor:
    """min, max, eq, lt of independent operands in O(n): (B, n), (B, n) -> (B, 4, n), the rows of `ops` (others 0).

    Every output is bilinear in (x, y), as the table's, so totals are kept rather than assumed to be 1.
    """
    out = x.new_zeros(x.shape[0], len(ORDER_OPS), x.shape[1])
    if "min" in ops or "lt" in ops:
        sy = _suffix_sum(y)  # (B, n): P(Y >= k)
    if "min" in ops:
        at_least = _suffix_sum(x) * sy  # P(min >= k)
        out[:, 0] = at_least - F.pad(at_least[:, 1:], (0, 1))  # P(min = k) = P(min >= k) - P(min >= k+1)
    if "max" in ops:
        at_most = x.cumsum(-1) * y.cumsum(-1)  # P(max <= k)
        out[:, 1] = at_most - F.pad(at_most[:, :-1], (1, 0))  # P(max = k) = P(max <= k) - P(max <= k-1)
    flags = []  # (row, P(op = 1)) of eq and lt
    if "eq" in ops:
        flags.append((2, (x * y).sum(-1)))  # P(X = Y)
    if "lt" in ops:
        flags.append((3, (x * (sy - y)).sum(-1)))  # P(X < Y) = sum_i P(X = i) P(Y > i)
    if flags:
        total = x.sum(-1) * y.sum(-1)  # (B,)
        for row, one in flags:
            out[:, row, 0], out[:, row, 1] = total - one, one
    return out


def _order_ops_backward(x: Tensor, y: Tensor, grad: Tensor, ops: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """The adjoint of `_order_ops` for `ops`: (B, n), (B, n), (B, 4, n) -> grad x, grad y, each (B, n).

    Both gradients are computed together, stacked (2, B, n) as [x, y], against the other operand's
    sums stacked [y, x]."""
    g_min, g_max, g_eq, g_lt = grad.unbind(1)  # (B, n) each
    yx = torch.stack([y, x])  # (2, B, n)
    grads = torch.zeros_like(yx)
    if "max" in ops or "lt" in ops:
        c = yx.cumsum(-1)  # (2, B, n): [cy, cx]
    if "min" in ops or "lt" in ops:
        s = _suffix_sum(yx)  # (2, B, n): [sy, sx]
    if "max" in ops:
        grads += _suffix_sum((g_max - F.pad(g_max[:, 1:], (0, 1))) * c)  # adjoint of A[k] - A[k-1], A = cx·cy
    if "min" in ops:
        grads += ((g_min - F.pad(g_min[:, :-1], (1, 0))) * s).cumsum(-1)  # adjoint of S[k] - S[k+1], S = sx·sy
    if "eq" in ops:  # rows [total - equal, equal]
        grads += g_eq[:, :1] * yx.sum(-1, keepdim=True) + (g_eq[:, 1:2] - g_eq[:, :1]) * yx
    if "lt" in ops:  # rows [total - less, less]; P(X < Y) differentiates to P(Y > i) for x and to P(X < j) for y
        less = torch.stack([s[0] - y, c[1] - x])  # (2, B, n)
        grads += g_lt[:, :1] * yx.sum(-1, keepdim=True) + (g_lt[:, 1:2] - g_lt[:, :1]) * less
    return grads[0], grads[1]


def _two_adic_plan(n: int) -> tuple[tuple[int, int], dict[str, Tensor]]:
    """(K, N) and the index lists of `_two_adic_product` for n = 2^K.

    src ((K+1)·2·N,): the value at each (valuation, t, e) slot, or n (a zero) where no value sits;
    position (n,): the slot of each value; value ((2K+1)·2·N,): the value of each product slot (s, t, e);
    left/right/product (T,): for every computed term, the flat (valuation, frequency) index of its two
    factors and of its product slot.
    """
    k = n.bit_length() - 1
    m = 1 << max(k - 2, 0)
    frequencies = m // 2 + 1

    def residue(t: int, e: int, bits: int) -> int:  # (-1)^t · 5^e mod 2^bits
        return (-1) ** t * pow(5, e, 1 << bits) % (1 << bits) if bits > 0 else 0

    position = []
    for i in range(n):
        a = (i & -i).bit_length() - 1 if i else k
        bits = k - a
        logs = {residue(t, e, bits): (t, e) for e in range(1 << max(bits - 2, 0)) for t in (1, 0)}
        t, e = logs[(i >> a) % (1 << bits) if bits else 0]
        position.append((a * 2 + t) * m + e)
    position = torch.tensor(position)
    src = torch.full(((k + 1) * 2 * m,), n)
    src[position] = torch.arange(n)
    slots = [(s, t, e) for s in range(2 * k + 1) for t in (0, 1) for e in range(m)]
    value = [(residue(t, e, k - s) << s) % n if s < k else 0 for s, t, e in slots]
    valuations = [(a, c) for a in range(k + 1) for c in range(k + 1)]
    terms = [(a, c, f) for f in range(frequencies) for a, c in valuations if f % (1 << (a + c)) == 0]
    plan = {
        "src": src,
        "position": position,
        "value": torch.tensor(value),
        "left": torch.tensor([a * frequencies + f for a, c, f in terms]),
        "right": torch.tensor([c * frequencies + f for a, c, f in terms]),
        "product": torch.tensor([(a + c) * frequencies + f for a, c, f in terms]),
    }
    return (k, m), plan


class StructuredALU(nn.Module):
    """The table's output distributions without the table (see the module docstring).

    Index buffers (non-persistent, O(n²) integers, nothing n³): `div_*` (~n·ln n) the quotient
    intervals; the backward's bags (n², Q) = q·n + op_q(i, j) over the pair ops computed, and the level
    sets of a block of rows (pairs sorted by (op, value)), are built on first use for each op set and
    block size and cached.
    """

    takes_op_subsets = True  # forward(x, y, ops=...) computes only those rows (`DeltaMachine.alu_ops`)

    exact_on_mixtures = True

    def __init__(self, n: int):
        super().__init__()
        self.n = n
        # div: for j >= 1 the quotient is k on [k·j, min((k+1)·j, n)); dividing by 0 gives 0 for every x.
        div_j, div_k = [0], [0]
        for j in range(1, n):
            for k in range((n - 1) // j + 1):
                div_j.append(j), div_k.append(k)
        div_j, div_k = torch.tensor(div_j), torch.tensor(div_k)
        div_start = torch.where(div_j == 0, 0, div_k * div_j)
        div_end = torch.where(div_j == 0, n, ((div_k + 1) * div_j).clamp(max=n))
        # Sums over the (j, k) pairs are bags of `embedding_bag` (4x faster than index_add_ here): by k (forward),
        # by j and by interval end (+) and start (-) (backward).
        prefix_rows, prefix_offsets = _bags(torch.cat([div_end, div_start]), n + 1)
        buffers = {
            "div_j": div_j,
            "div_k": div_k,
            "div_start": div_start,
            "div_end": div_end,
            **dict(zip(("div_k_rows", "div_k_offsets"), _bags(div_k, n), strict=True)),
            **dict(zip(("div_j_rows", "div_j_offsets"), _bags(div_j, n), strict=True)),
            "div_prefix_rows": prefix_rows % len(div_j),  # both halves index the same (V,) terms
            "div_prefix_offsets": prefix_offsets,
            "div_prefix_signs": torch.where(prefix_rows < len(div_j), 1.0, -1.0),
        }
        self.fourier = n >= FOURIER_MIN_N
        self.two_adic = self.fourier and n & (n - 1) == 0  # mul through `_two_adic_product`
        if self.two_adic:
            self.two_adic_sizes, two_adic = _two_adic_plan(n)
            two_adic["value_rows"], two_adic["value_offsets"] = _bags(two_adic["value"], n)
            buffers |= {f"two_adic_{name}": tensor for name, tensor in two_adic.items()}
        for name, tensor in buffers.items():
            self.register_buffer(name, tensor, persistent=False)
        self._level_sets: dict = {}
        self._pair_values: dict = {}
        self._workspaces: dict = {}

    def extra_repr(self) -> str:
        return f"n={self.n}"

    def level_set_blocks(
        self, rows: int, device: torch.device, ops: tuple[str, ...] = LEVEL_SET_OPS
    ) -> list[tuple[int, Tensor, Tensor]]:
        """For each block of `rows` rows i: (first row, pairs (i - first)·n + j sorted by (op, op(i, j)) for
        the L `ops` (of `LEVEL_SET_OPS`), offsets (L·n) where each (op, value) level set starts). Built once
        per size and op set."""
        key = (rows, str(device), ops)
        if key not in self._level_sets:
            n, count = self.n, len(ops)
            values = binary_op_values(n)[[BINARY_OPS.index(op) for op in ops]]  # (L, n, n)
            blocks = []
            for start in range(0, n, rows):
                block = values[:, start : start + rows]  # (L, rows, n_j)
                bag = (block + n * torch.arange(count)[:, None, None]).reshape(-1)  # op·n + value per (op, i, j)
                order = torch.argsort(bag, stable=True)  # positions in (op, i, j), by bag
                counts = torch.bincount(bag, minlength=count * n)  # (L·n,) level set sizes
                pairs = order % (block.shape[1] * n)  # row (i - start)·n + j of the block's joint
                blocks.append((start, pairs.to(device), F.pad(counts.cumsum(0)[:-1], (1, 0)).to(device)))
            self._level_sets[key] = blocks
        return self._level_sets[key]

    def pair_values_for(self, ops: tuple[str, ...], device: torch.device) -> tuple[Tensor, Tensor]:
        """The backward's bags (n·n, Q) = q·n + op_q(i, j) for the Q pair `ops`, and their rows (Q,) in the
        output. Built once per op set."""
        key = (str(device), ops)
        if key not in self._pair_values:
            n, rows = self.n, [BINARY_OPS.index(op) for op in ops]
            values = binary_op_values(n)[rows] + n * torch.arange(len(ops))[:, None, None]  # (Q, n_i, n_j)
            bags = values.reshape(len(ops), n * n).t().contiguous()  # (n·n, Q)
            self._pair_values[key] = (bags.to(device), torch.tensor(rows, device=device))
        return self._pair_values[key]

    def fourier_ops(self, ops: tuple[str, ...]) -> tuple[str, ...]:
        """The ops of `ops` computed through the FFT: from n = `FOURIER_MIN_N` on, add and sub, and mul if n is a
        power of two, when that removes the n² pass. If an op that needs it is listed (mod; mul otherwise),
        add/sub/mul join that pass instead, where they cost little more."""
        fourier = ("add", "sub", "mul") if self.two_adic else ("add", "sub") if self.fourier else ()
        if any(op in ops for op in LEVEL_SET_OPS if op not in fourier):
            return ()
        return tuple(op for op in fourier if op in ops)

    def level_set_ops(self, ops: tuple[str, ...]) -> tuple[str, ...]:
        """The ops of `ops` summed over level sets (the n² pass)."""
        return tuple(op for op in LEVEL_SET_OPS if op in ops and op not in self.fourier_ops(ops))

    def workspace(self, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """A scratch tensor kept between calls (never saved for backward, so reuse is safe)."""
        key = (name, str(like.device))
        buffer = self._workspaces.get(key)
        if buffer is None or buffer.shape != torch.Size(shape) or buffer.dtype != like.dtype:
            buffer = self._workspaces[key] = like.new_empty(shape)
        return buffer

    def forward(self, x: Tensor, y: Tensor, ops: tuple[str, ...] = BINARY_OPS) -> Tensor:
        """(B, n), (B, n) -> (B, 9, n); only the rows of `ops` are computed, the others are 0."""
        _check_operands(x, y, self.n)
        unknown = set(ops) - set(BINARY_OPS)
        if unknown:
            raise ValueError(f"ops {sorted(unknown)} are not ALU ops; allowed: {', '.join(BINARY_OPS)}")
        ops = tuple(op for op in BINARY_OPS if op in ops)  # canonical order: one cache entry per set
        return _StructuredOps.apply(x, y, self, ops)  # (B, 9, n)


def _circuit_alu() -> type[nn.Module]:
    from .circuits import CircuitALU  # imported on demand: n must be a power of two

    return CircuitALU


# name -> class factory; every class takes `n` and maps (B, n), (B, n) -> (B, 9, n).
ALU_BACKENDS: dict[str, Callable[[], type[nn.Module]]] = {
    "table": lambda: TableALU,
    "structured": lambda: StructuredALU,
    "circuit": _circuit_alu,
}
# The default of the machine and the conformance CLI: exact on every input and fastest.
DEFAULT_ALU = "structured"


def build_alu(name: str, n: int) -> nn.Module:
    """An ALU backend by name for word size n (a ValueError names the allowed backends)."""
    if name not in ALU_BACKENDS:
        raise ValueError(f"unknown ALU backend {name!r}; one of {', '.join(ALU_BACKENDS)}")
    return ALU_BACKENDS[name]()(n)
