"""The transition matrix storage: exact dense fp32, and the compact form (CSR with its mass budget, or 16-bit dense)."""
import pytest
import torch

from m2n2_core import matvec, packed
from m2n2_core.transition import Transition

from core_helpers import torch_single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def banded(n: int, width: int, seed: int) -> torch.Tensor:
    """Row-stochastic, nonzero only within ``width`` of the diagonal, with a long thin tail of tiny entries."""
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(n)
    dist = (i[:, None] - i[None, :]).abs().to(torch.float64)
    a = torch.exp(-dist ** 2 / 8.0) * (0.5 + torch.rand(n, n, generator=g, dtype=torch.float64))
    a[dist > width] = 0.0
    return (a / a.sum(1, keepdim=True)).to(torch.float32)


def dense(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = 0.2 + torch.rand(n, n, generator=g, dtype=torch.float64)
    return (a / a.sum(1, keepdim=True)).to(torch.float32)


def test_exact_step_is_p_times_a():
    a = dense(20, seed=0)
    p = torch.rand(3, 20, generator=torch.Generator().manual_seed(1))
    t = Transition.exact(a)
    assert t.kind == "dense32" and t.size == 20 and t.nbytes == 20 * 20 * 4
    torch.testing.assert_close(t.step(p), p @ a)


def kept_mask(t: Transition, a: torch.Tensor) -> torch.Tensor:
    """Which entries of A the compact storage still holds."""
    return t.dense() != 0


@pytest.mark.parametrize("make, storage, kind", [(lambda: banded(300, 10, seed=5), "16bit", "csr"),
                                                 (lambda: dense(64, seed=5), "16bit", "packed16"),
                                                 (lambda: dense(64, seed=5), "fp32", "dense32")])
def test_dense_returns_the_stored_matrix_as_dense_fp32(make, storage, kind):
    a = make()
    t = Transition.compact(a, storage)
    assert t.kind == kind and t.dense().dtype == torch.float32
    expected = packed.decode(t.matrix) if kind == "packed16" else a
    assert torch.equal(t.dense(), expected)


def test_compact_stores_a_sparse_matrix_exactly_as_csr_of_its_nonzeros():
    a = banded(500, width=12, seed=2)  # ≤ 25 of 500 entries per row
    t = Transition.compact(a)
    assert t.kind == "csr"
    assert torch.equal(kept_mask(t, a), a > 0)
    assert torch.equal(t.matrix.to_dense().T, a)


def test_compact_chooses_csr_up_to_half_the_dense_bytes():
    """At 20 % density CSR (8 bytes per entry) takes 40 % of dense fp32: exact and within the memory budget."""
    a = banded(256, width=25, seed=3)  # 51 of 256 entries per row
    t = Transition.compact(a)
    assert t.kind == "csr" and t.nbytes <= 256 * 256 * 4 // 2
    a = banded(128, width=40, seed=3)  # 81 of 128 per row: CSR would take more than dense fp32
    assert Transition.compact(a).kind == "packed16"
    assert Transition.compact(a, "fp32").kind == "dense32"


def test_compact_names_an_unresolved_storage():
    with pytest.raises(ValueError, match="'auto'"):
        Transition.compact(dense(16, seed=4), "auto")


def test_compact_keeps_a_dense_matrix_exact_in_fp32_on_request():
    a = dense(256, seed=4)
    t = Transition.compact(a, "fp32")
    assert t.kind == "dense32" and torch.equal(t.matrix, a)


def test_compact_stores_a_dense_matrix_in_16_bits_by_default():
    a = dense(256, seed=4)
    t = Transition.compact(a)
    assert t.kind == "packed16" and t.nbytes == 256 * 256 * 2


def grid_smooth_vectors(r: int, k: int, seed: int) -> torch.Tensor:
    """k smooth non-negative vectors over the r×r grid (sums of wide Gaussian bumps), like a chain's p."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(r, dtype=torch.float64), torch.arange(r, dtype=torch.float64), indexing="ij")
    out = []
    for _ in range(k):
        cy, cx = torch.rand(2, generator=g, dtype=torch.float64) * r
        out.append(torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (r / 4) ** 2)).reshape(-1))
    return torch.stack(out)


def test_16_bit_codes_diffuse_the_rounding_error_down_each_column():
    """Nearest rounding would leave errors of ~√N steps in p·A; diffusion keeps column sums over runs of the walk,
    so for smooth p the product is several times more accurate than with nearest codes, while every entry stays within
    1.5 code steps of its value and zeros stay zero."""
    r = 24
    a = dense(r * r, seed=5) ** 4
    a[a < a.mean() / 8] = 0.0
    a = (a / a.sum(1, keepdim=True)).to(torch.float32)
    codes = packed.encode(a)
    back = packed.decode(codes).to(torch.float64)
    assert torch.equal(back == 0, a == 0)
    exact = a.to(torch.float64)
    assert bool(((back - exact).abs() <= exact * (2.0 ** -11 + 2.0 ** -12 + 2.0 ** -22)).all())
    steps = (a.to(torch.float64) * 2.0 ** -11).amax(0)  # the largest rounding step in each column
    for run in (packed.walk(r * r)[:100], packed.walk(r * r)[250:500], packed.walk(r * r)):
        err = (back[run] - a.to(torch.float64)[run]).sum(0).abs()
        assert bool((err <= steps).all())
    p = grid_smooth_vectors(r, 3, seed=6)
    exact = p @ a.to(torch.float64)
    bits = a.view(torch.int32).to(torch.int64)  # nearest codes, as the rejected plain rounding stored them
    code = (((bits + (1 << (packed.SHIFT - 1))) >> packed.SHIFT) - packed.OFFSET).clamp(min=0)
    nearest = torch.where(code > 0, (code + packed.OFFSET) << packed.SHIFT, 0).to(torch.int32).view(torch.float32)
    err_diffused = ((p @ back - exact).abs() / exact).max()
    err_nearest = ((p @ nearest.to(torch.float64) - exact).abs() / exact).max()
    assert err_diffused < err_nearest / 4


def test_16_bit_codes_of_exactly_representable_matrices_are_exact():
    values = torch.tensor([0.0, 1.0, 0.5, 2.0 ** -31, 0.75, 2.0 ** -20, 3 * 2.0 ** -9, 0.0, 0.125])
    g = torch.Generator().manual_seed(0)
    matrix = torch.stack([values[torch.randperm(9, generator=g)] for _ in range(9)])  # 9 = 3²: the grid walk
    assert torch.equal(packed.decode(packed.encode(matrix)), matrix)


@pytest.mark.parametrize("storage", ["fp32", "16bit"])
@pytest.mark.parametrize("make", [lambda: banded(256, 10, 5), lambda: dense(256, 6)])
def test_compact_step_is_proportional_to_p_times_a(make, storage):
    a = make()
    p = torch.rand(4, 256, generator=torch.Generator().manual_seed(7))
    p[1] = 0.0
    p[1, 17] = 1.0  # a one-hot start, like a click on an exact cell
    out = Transition.compact(a, storage).step(p)
    ref = p @ a
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out / out.amax(1, keepdim=True), ref / ref.amax(1, keepdim=True),
                               rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("per_row, kind", [(15, "csr"), (16, "packed16"), (17, "packed16")])
def test_compact_counts_row_pointers_at_the_csr_break_even_point(per_row, kind):
    # 64×64 with exactly `per_row` nonzeros per row: at 16 per row values + column indices alone take half of
    # dense fp32, so the row pointers tip it to dense
    n = 64
    a = torch.zeros(n, n)
    for i in range(n):
        a[i, [(i + k) % n for k in range(per_row)]] = 1.0 / per_row
    t = Transition.compact(a)
    assert t.kind == kind
    if kind == "csr":
        assert t.nbytes <= n * n * 4 // 2
    rows = t.step(torch.eye(n))
    torch.testing.assert_close(rows / rows.amax(1, keepdim=True), a / a.amax(1, keepdim=True), rtol=1e-3, atol=1e-3)


def test_packed_codes_of_one_row_round_to_nearest_keep_zero_and_flush_below_2_to_the_minus_31():
    values = torch.tensor([0.0, 1.0, 0.5, 1 / 3, 2.0 ** -31, 2.0 ** -31 * 0.49, 1e-20, 2.0 ** -20 * 1.00031])
    back = packed.decode(packed.encode(values[None]))[0]
    assert back[0] == 0 and back[1] == 1.0 and back[2] == 0.5 and back[4] == 2.0 ** -31
    assert back[5] == 0 and back[6] == 0
    assert abs(back[3] - 1 / 3) <= 2.0 ** -12 / 3
    assert abs(back[7] - values[7]) <= values[7] * 2.0 ** -12


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 7, 1500])
def test_packed_product_equals_the_product_with_the_decoded_matrix(threads, n):
    """Any number of rows (groups of four plus a remainder), rows of p that are zero, one-hot or half zero."""
    torch.set_num_threads(threads)
    a = dense(n, seed=9) ** 3
    codes = packed.encode(a / a.sum(1, keepdim=True))
    p = torch.rand(3, n, generator=torch.Generator().manual_seed(2))
    p[1] = 0.0
    p[1, n // 2] = 1.0
    p[2, : n // 2] = 0.0
    torch.testing.assert_close(matvec.packed_product(codes, p), p @ packed.decode(codes), rtol=1e-5, atol=1e-9)
