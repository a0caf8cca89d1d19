"""The transition matrix storage: exact dense fp32, and the compact form (CSR with its mass budget, or 16-bit dense)."""
import pytest
import torch

from m2n2_core import packed
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
    """Which entries of A the compact storage still holds (its stored matrix is Aᵀ for CSR, A when dense)."""
    if t.kind == "csr":
        return (t.matrix.to_dense().T != 0)
    if t.kind == "packed16":
        return packed.decode(t.matrix) != 0
    return t.matrix != 0


@pytest.mark.parametrize("epsilon", [1e-4, 1e-2, 0.1])
def test_compact_drops_at_most_epsilon_mass_and_only_the_smallest_entries(epsilon):
    a = banded(500, width=12, seed=2)  # ≤ 25 of 500 entries per row: sparse enough for CSR
    t = Transition.compact(a, epsilon)
    assert t.kind == "csr"
    keep = kept_mask(t, a)
    kept_mass = torch.where(keep, a, 0.0).to(torch.float64).sum(1)
    assert bool((kept_mass >= (1 - epsilon) * a.to(torch.float64).sum(1) - 1e-6).all())
    for row, k in zip(a, keep):
        dropped = row[~k & (row > 0)]
        if dropped.numel():
            assert dropped.max() <= row[k].min()
    # the kept entries are stored exactly
    stored = t.matrix.to_dense().T
    assert torch.equal(stored[keep], a[keep])
    if epsilon >= 1e-2:
        assert int(keep.sum()) < int((a > 0).sum())  # the budget is actually used


def test_compact_chooses_csr_for_a_banded_matrix_within_an_eighth_of_the_dense_bytes():
    a = banded(512, width=10, seed=3)
    t = Transition.compact(a, 1e-4)
    assert t.kind == "csr"
    assert t.nbytes <= 512 * 512 * 4 // 8


def test_compact_keeps_a_moderately_sparse_matrix_dense():
    """At 8 % density CSR would still halve the bytes, but its step is slower than the dense one."""
    a = banded(256, width=10, seed=3)
    assert Transition.compact(a, 0.0).kind == "dense32"
    assert Transition.compact(a, 0.0, "16bit").kind == "packed16"


def test_compact_keeps_a_dense_matrix_exact_by_default():
    a = dense(256, seed=4)
    t = Transition.compact(a, 1e-4)
    assert t.kind == "dense32" and torch.equal(t.matrix, a)


def test_compact_stores_a_dense_matrix_in_half_the_bytes_within_2_to_the_minus_12_on_request():
    a = dense(256, seed=4)
    t = Transition.compact(a, 1e-4, "16bit")
    assert t.kind == "packed16" and t.nbytes == 256 * 256 * 2
    back = packed.decode(t.matrix)
    assert torch.all((back - a).abs() <= a * 2.0 ** -12)


@pytest.mark.parametrize("storage", ["fp32", "16bit"])
@pytest.mark.parametrize("make", [lambda: banded(256, 10, 5), lambda: dense(256, 6)])
def test_compact_step_is_proportional_to_p_times_a(make, storage):
    a = make()
    p = torch.rand(4, 256, generator=torch.Generator().manual_seed(7))
    p[1] = 0.0
    p[1, 17] = 1.0  # a one-hot start, like a click on an exact cell
    out = Transition.compact(a, 1e-4, storage).step(p)
    ref = p @ a
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out / out.amax(1, keepdim=True), ref / ref.amax(1, keepdim=True),
                               rtol=2e-3, atol=2e-3)


def test_compact_with_zero_epsilon_keeps_every_nonzero_entry():
    a = banded(64, width=5, seed=8)
    t = Transition.compact(a, 0.0)
    assert torch.equal(kept_mask(t, a), a > 0)


@pytest.mark.parametrize("per_row, kind", [(3, "csr"), (4, "dense32"), (5, "dense32")])
def test_compact_counts_row_pointers_at_the_csr_break_even_point(per_row, kind):
    # 64×64 with exactly `per_row` nonzeros per row: at 4 per row values + column indices alone take an eighth of
    # dense fp32, so the row pointers tip it to dense
    n = 64
    a = torch.zeros(n, n)
    for i in range(n):
        a[i, [(i + k) % n for k in range(per_row)]] = 1.0 / per_row
    t = Transition.compact(a, 0.0)
    assert t.kind == kind
    if kind == "csr":
        assert t.nbytes <= n * n * 4 // 8
    rows = t.step(torch.eye(n))
    torch.testing.assert_close(rows / rows.amax(1, keepdim=True), a / a.amax(1, keepdim=True), rtol=1e-3, atol=1e-3)


def test_packed_codes_round_to_nearest_keep_zero_and_flush_below_2_to_the_minus_31():
    values = torch.tensor([0.0, 1.0, 0.5, 1 / 3, 2.0 ** -31, 2.0 ** -31 * 0.49, 1e-20, 2.0 ** -20 * 1.00031])
    back = packed.decode(packed.encode(values[None]))[0]
    assert back[0] == 0 and back[1] == 1.0 and back[2] == 0.5 and back[4] == 2.0 ** -31
    assert back[5] == 0 and back[6] == 0
    assert abs(back[3] - 1 / 3) <= 2.0 ** -12 / 3
    assert abs(back[7] - values[7]) <= values[7] * 2.0 ** -12


@pytest.mark.parametrize("threads", [1, 2])
def test_packed_product_equals_the_product_with_the_decoded_matrix(threads):
    torch.set_num_threads(threads)
    a = dense(1500, seed=9) ** 3
    codes = packed.encode(a / a.sum(1, keepdim=True))
    p = torch.rand(3, 1500, generator=torch.Generator().manual_seed(2))
    p[1] = 0.0
    p[1, 5] = 1.0
    torch.testing.assert_close(packed.product(codes, p), p @ packed.decode(codes), rtol=1e-5, atol=1e-9)
