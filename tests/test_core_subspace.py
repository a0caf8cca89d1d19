"""The slow-mode subspace: its basis and dynamics, and Markov chains that finish their tail in it."""
import numpy as np
import pytest
import torch

from m2n2_core import M2N2Config, M2N2Predictor, packed
from m2n2_core.balancing import balance
from m2n2_core.markov import click_grid_starts, markov_maps
from m2n2_core.subspace import BLOCK, ENTRY_TOLERANCE, KEEP, slow_subspace
from m2n2_core.synthetic import sd_like_attention
from m2n2_core.transition import Transition

from core_helpers import affinity_attention, smooth_image, torch_single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("torch_single_thread")
R = 24  # (at r = 16 the synthetic attention's spectrum is too flat for the subspace to pay off)
IMAGE = smooth_image(72, 96, seed=3, sigma=6)


@pytest.fixture(scope="module")
def balanced():
    """A dense balanced SD-like matrix on the 24×24 grid, as the fast path stores it (16-bit codes)."""
    a = balance(sd_like_attention(IMAGE, R), 0.65, 200)
    return Transition(packed.encode(a), "packed16")


class Counting(Transition):
    def __init__(self, t: Transition):
        super().__init__(t.matrix, t.kind)
        self.steps = 0

    def step(self, p):
        self.steps += 1
        return super().step(p)


def test_basis_is_orthonormal_and_invariant_and_holds_the_slowest_modes(balanced):
    a = balanced.dense().double()
    s = slow_subspace(balanced.dense(), block=BLOCK)
    b = s.basis.double()
    k = b.shape[0]
    assert k >= int(KEEP * BLOCK) and s.dynamics.shape == (k, k) and b.shape[1] == R * R
    torch.testing.assert_close(b @ b.T, torch.eye(k, dtype=torch.float64), atol=1e-6, rtol=0)
    residual = (b @ a - s.dynamics @ b).norm(dim=1)  # rows invariant under y ↦ y·A: the slowest ones best
    assert float(residual[:8].max()) < 1e-6 and float(residual.max()) < 1e-3
    slowest = np.sort(np.abs(np.linalg.eigvals(a.numpy())))[::-1][:k]
    np.testing.assert_allclose(np.sort(np.abs(np.linalg.eigvals(s.dynamics.numpy())))[::-1], slowest, rtol=1e-4)


def test_a_spike_is_not_in_the_subspace_but_its_chain_soon_is(balanced):
    s = slow_subspace(balanced.dense())
    p = click_grid_starts([(45, 30)], 96, 72, R)
    assert s.enter(p) is None
    a = balanced.dense()
    for _ in range(60):
        p = p @ a
        p = p / p.amax()
    y = s.enter(p)
    assert y is not None and y.dtype == torch.float64
    assert float((y.float() @ s.basis - p).abs().max()) <= ENTRY_TOLERANCE


def test_chains_that_finish_in_the_subspace_track_exact_arithmetic_closer_than_fp32_steps(balanced):
    """The tail in the subspace stays within 10⁻² steps of the fp64 chain; fp32 full steps drift further (their
    rounding accumulates along the slowest modes: 0.6 steps here)."""
    starts = click_grid_starts([(45, 30), (8, 60), (90, 5)], 96, 72, R)
    exact = markov_maps(Transition.reference(balanced.dense()), starts)
    full = Counting(balanced)
    fp32 = markov_maps(full, starts)
    tail = Counting(balanced)
    arrival = markov_maps(tail, starts, subspace=slow_subspace(balanced.dense()))
    assert tail.steps < full.steps / 2  # most steps ran in the subspace
    assert torch.equal(arrival == 0, exact == 0) and torch.equal(arrival == 1000, exact == 1000)
    error = float((arrival.double() - exact).abs().max())
    assert error < 1e-2 and error < float((fp32.double() - exact).abs().max())


def test_steps_in_a_block_are_the_steps_one_at_a_time(balanced):
    s = slow_subspace(balanced.dense())
    y = torch.randn(2, s.basis.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    last, vectors = s.steps(y, 5)
    assert vectors.shape == (5, 2, R * R) and vectors.dtype == torch.float32
    for t in range(5):
        y = y @ s.dynamics
        torch.testing.assert_close(vectors[t], y.float() @ s.basis, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last, y, rtol=1e-12, atol=1e-12)


def test_a_chain_that_never_gets_close_to_the_subspace_is_untouched(balanced):
    other = slow_subspace(balance(affinity_attention(IMAGE[::-1].copy(), R), 0.65, 200), block=8)  # another matrix
    starts = click_grid_starts([(45, 30)], 96, 72, R)
    torch.testing.assert_close(markov_maps(balanced, starts, subspace=other), markov_maps(balanced, starts),
                               atol=0, rtol=0)


def test_predictor_uses_the_subspace_for_dense_matrices_up_to_the_configured_resolution():
    att = sd_like_attention(IMAGE, R)

    def prepared(**config):
        p = M2N2Predictor(M2N2Config(attention_resolution=R, **config), device="cpu")
        p.set_attention(IMAGE, att)
        return p.prepared

    fast = prepared()
    assert fast.subspace is not None
    assert fast.nbytes == prepared(subspace_max_resolution=0).nbytes + fast.subspace.nbytes
    assert prepared(subspace_max_resolution=R - 1).subspace is None
    assert prepared(exact=True).subspace is None
    sparse = M2N2Predictor(M2N2Config(attention="affinity", attention_resolution=R), device="cpu")
    sparse.set_image(IMAGE)  # the weight-free source: stored exactly as CSR, its chain is cheap already
    assert sparse.prepared.transition.kind == "csr" and sparse.prepared.subspace is None


def test_negative_subspace_resolution_is_rejected():
    with pytest.raises(ValueError, match="subspace_max_resolution"):
        M2N2Config(subspace_max_resolution=-1)
