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


def test_compact_names_an_unknown_storage():
    with pytest.raises(ValueError, match="'fp16'"):
        Transition.compact(dense(16, seed=4), "fp16")


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
    """Nearest rounding would leave errors of ~√N quanta in p·A; diffusion keeps column sums over runs of the walk,
    so for smooth p the product is several times more accurate than with nearest codes, while every entry stays within
    2 quanta of its value and zeros stay zero."""
    r = 24
    a = dense(r * r, seed=5) ** 4
    a[a < a.mean() / 8] = 0.0
    a = (a / a.sum(1, keepdim=True)).to(torch.float32)
    codes = packed.encode(a)
    assert codes.shape == a.shape and codes.dtype == torch.int16
    back = packed.decode(codes).to(torch.float64)
    exact, quanta = a.to(torch.float64), packed.quanta(a.to(torch.float64))
    assert torch.equal(back == 0, a == 0)
    assert bool(((back - exact).abs() <= 2 * quanta).all())
    for run in (packed.walk(r * r)[:100], packed.walk(r * r)[250:500], packed.walk(r * r)):
        err = (back[run] - exact[run]).sum(0).abs()
        assert bool((err <= 2 * quanta.amax(0)).all())
    p = grid_smooth_vectors(r, 3, seed=6)
    nearest = packed.decode(packed.encode(a, diffuse=False)).to(torch.float64)
    assert bool(((nearest - exact).abs() <= quanta / 2).all())
    err_diffused = ((p @ back - p @ exact).abs() / (p @ exact)).max()
    err_nearest = ((p @ nearest - p @ exact).abs() / (p @ exact)).max()
    assert err_diffused < err_nearest / 3


def test_16_bit_codes_keep_relative_precision_down_to_2_to_the_minus_6_of_a_blocks_largest():
    """Weak links (entries far below their block's largest) keep their relative precision, not only strong ones: from
    h (2⁻⁸ or 2⁻⁷ of the block's largest) up, the code spacing is at most 2⁻¹¹ of the value, so an entry is within
    2⁻¹⁰ of it (2 quanta)."""
    g = torch.Generator().manual_seed(3)
    a = torch.exp2(-20 * torch.rand(512, 512, generator=g, dtype=torch.float64))  # 20 binades within each block
    a = (a / a.sum(1, keepdim=True)).to(torch.float32).to(torch.float64)
    back = packed.decode(packed.encode(a.to(torch.float32))).to(torch.float64)
    block_max = a.reshape(-1, packed.BLOCK, 512).amax(1, keepdim=True).expand(-1, packed.BLOCK, -1).reshape(512, 512)
    relative = (back - a).abs() / a
    assert float(relative.max()) > 2.0 ** -10  # below h: absolute precision only
    assert float(relative[a >= block_max * 2.0 ** -6].max()) <= 2.0 ** -10


@pytest.mark.parametrize("scale", [1.0, 2.0 ** -40, 2.0 ** -96])
def test_16_bit_codes_of_exactly_representable_matrices_are_exact(scale):
    """Every code's value is stored exactly, on any size (here 20: rows padded to 24) and binade: a value
    h·(2^e·(1 + m/2¹²) − 1), h = 2^(E−8) from its block's largest entry (< 2^E)."""
    g = torch.Generator().manual_seed(0)
    top = 2 ** packed.MANTISSA_BITS
    e = torch.randint(0, packed.LEVELS, (20, 20), generator=g)
    m = torch.randint(0, top, (20, 20), generator=g)
    e[::packed.BLOCK] = packed.LEVELS - 1  # each block's first entry is its largest, in [2^(E−1), 2^E) with E = 0
    m[::packed.BLOCK] = top // 2 + torch.randint(0, top // 2, (3, 20), generator=g)
    values = torch.ldexp(1 + m.to(torch.float64) / top, e) - 1
    zeros = torch.rand(20, 20, generator=g) < 0.2
    zeros[::packed.BLOCK] = False
    values[zeros] = 0
    matrix = (values * 2.0 ** -packed.LEVELS * scale).to(torch.float32)
    assert torch.equal(matrix.to(torch.float64), values * 2.0 ** -packed.LEVELS * scale)  # fp32 holds them
    codes = packed.encode(matrix)
    assert codes.shape == (24, 20)
    assert torch.equal(packed.decode(codes), matrix)


def test_16_bit_codes_store_blocks_below_2_to_the_minus_119_as_zeros():
    a = torch.zeros(16, 16)
    a[:8, 0] = torch.tensor([1 / 3, 1e-6, 0.0, 0.2, 1e-30, 0.3, 0.01, 0.004])
    a[8:, 0] = torch.tensor([1e-36, 5e-37, 0.0, 1e-38, 0.0, 0.0, 0.0, 1e-36])  # largest < 2⁻¹¹⁹ ≈ 1.5e-36
    a[:8, 1] = torch.tensor([2.0 ** -100, 3 * 2.0 ** -105, 0, 0, 0, 0, 0, 1e-31])
    back = packed.decode(packed.encode(a)).to(torch.float64)
    exact = a.to(torch.float64)
    assert back[2, 0] == 0 and bool((back[8:, 0] == 0).all())
    assert bool(((back[:8] - exact[:8]).abs() <= 2 * packed.quanta(exact)[:8]).all())
    big = exact[:8, :2] >= exact[:8, :2].amax(0) * 2.0 ** -6  # at least h
    assert bool(((back[:8, :2] - exact[:8, :2]).abs() <= exact[:8, :2] * 2.0 ** -10)[big].all())


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


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 7, 64, 1500])
def test_packed_product_equals_the_product_with_the_decoded_matrix(threads, n):
    """Any number of rows (blocks of 8, the last one padded), rows of p that are zero, one-hot or half zero."""
    torch.set_num_threads(threads)
    a = dense(n, seed=9) ** 3
    codes = packed.encode(a / a.sum(1, keepdim=True))
    p = torch.rand(3, n, generator=torch.Generator().manual_seed(2))
    p[1] = 0.0
    p[1, n // 2] = 1.0
    p[2, : n // 2] = 0.0
    torch.testing.assert_close(matvec.packed_product(codes, p), p @ packed.decode(codes), rtol=1e-5, atol=1e-9)


def smooth_rows(n: int, k: int, seed: int) -> torch.Tensor:
    """k positive row vectors that decay smoothly away from a peak over 0..n−1, like a chain's."""
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(n, dtype=torch.float64)
    peaks, widths = torch.rand(k, 1, generator=g) * n, n / 20 * (1 + torch.rand(k, 1, generator=g))
    return torch.exp(-((i - peaks) / widths) ** 2).to(torch.float32) + 1e-30


@pytest.mark.parametrize("n", [300, 4100])
def test_fp32_and_16_bit_steps_stay_within_fp32_precision_of_the_fp64_product(n):
    """Partial sums over blocks of rows, totalled in fp64: no drift of a single fp32 sum over all N rows (torch's
    ``p @ a`` is off by 3.5·10⁻⁶ here at n = 4100)."""
    a = (dense(n, seed=3) ** 8).to(torch.float64)
    a = (a / a.sum(1, keepdim=True)).to(torch.float32)
    p = smooth_rows(n, 3, seed=4)
    fp32 = Transition.exact(a)
    ref = p.double() @ a.double()
    assert float(((fp32.step(p).double() - ref).abs() / ref).max()) < 1e-6
    codes = Transition.compact(a, "16bit")
    ref = p.double() @ codes.dense().double()
    assert float(((codes.step(p).double() - ref).abs() / ref).max()) < 1e-6
