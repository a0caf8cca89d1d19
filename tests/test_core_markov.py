"""Spec §2: the click's start vector and the Markov chain's (interpolated) arrival times."""
import numpy as np
import pytest
import torch

from m2n2_core.balancing import balance
from m2n2_core.markov import click_grid_starts, markov_maps, start_vector
from m2n2_core.transition import Transition

from core_helpers import torch_single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class CountingTransition(Transition):
    """Transition.exact that counts its steps."""

    def __init__(self, matrix):
        super().__init__(matrix.to(torch.float32), "dense32")
        self.steps = 0

    def step(self, p):
        self.steps += 1
        return super().step(p)


def grid(p: torch.Tensor, r: int) -> np.ndarray:
    return p.reshape(r, r).numpy()


# ---- start vector ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("x, y, cell", [(0, 0, (0, 0)), (100, 100, (4, 4)), (100, 0, (0, 4)), (0, 100, (4, 0)),
                                        (50, 25, (1, 2)), (75, 50, (2, 3))])
def test_start_vector_exact_cell_hits_and_corners_are_one_hot(x, y, cell):
    # r = 5, W = H = 100: grid coordinate (r−1)·x/W = x/25 is an integer for these clicks
    p = grid(start_vector(x, y, 100, 100, 5), 5)
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[cell] = 1.0
    np.testing.assert_array_equal(p, expected)


def test_start_vector_splats_bilinearly_and_scales_max_to_one():
    # x = 30 → x_a = 4·30/100 = 1.2; y = 40 → y_a = 4·40/80 = 2.0 on a W=100, H=80 image: weights 0.8, 0.2 on row 2
    p = grid(start_vector(30, 40, 100, 80, 5), 5)
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[2, 1], expected[2, 2] = 1.0, 0.25  # 0.8, 0.2 scaled by 1/0.8
    np.testing.assert_allclose(p, expected, atol=1e-6)
    # x_a = 4·10/100 = 0.4 (weights 0.6 / 0.4), y_a = 4·10/80 = 0.5 (0.5 / 0.5): 0.3, 0.2, 0.3, 0.2 → / 0.3
    p = grid(start_vector(10, 10, 100, 80, 5), 5)
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[0, 0], expected[0, 1], expected[1, 0], expected[1, 1] = 1.0, 2 / 3, 1.0, 2 / 3
    np.testing.assert_allclose(p, expected, atol=1e-6)


def test_start_vector_on_the_right_and_bottom_edges():
    # x = W → x_a = r − 1 (last column); y = 30 of H = 100 → y_a = 1.2: rows 1 and 2 with 0.8 / 0.2
    p = grid(start_vector(100, 30, 100, 100, 5), 5)
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[1, 4], expected[2, 4] = 1.0, 0.25
    np.testing.assert_allclose(p, expected, atol=1e-6)
    p = grid(start_vector(30, 100, 100, 100, 5), 5)
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[4, 1], expected[4, 2] = 1.0, 0.25
    np.testing.assert_allclose(p, expected, atol=1e-6)


def test_click_grid_starts_stacks_start_vectors():
    s = click_grid_starts([(0, 0), (30, 40)], 100, 80, 5)
    assert s.shape == (2, 25)
    torch.testing.assert_close(s[1], start_vector(30, 40, 100, 80, 5))


# ---- the chain on a 2-cell example, by hand -------------------------------------------------------------------
def two_cell(a: float, b: float) -> torch.Tensor:
    return torch.tensor([[1 - a, a], [b, 1 - b]], dtype=torch.float32)


def test_interpolated_crossing_between_steps_one_and_two():
    # a = 0.2, b = 0.1, τ = 0.3, start at cell 0: p0 = [1, 0]
    # p1 = [0.8, 0.2] / 0.8 = [1, 0.25]                    (0.25 ≤ τ: not arrived)
    # p2 = [0.8 + 0.25·0.1, 0.2 + 0.25·0.9] = [0.825, 0.425] / 0.825 = [1, 0.515151…]  (crosses between i=1 and 2)
    # arrival = 2 − (p2 − τ)/(p2 − p1 + 1e−6) = 2 − 0.215151…/0.265151… = 1.188574…
    p2 = 0.425 / 0.825
    expected = 2 - (p2 - 0.3) / (p2 - 0.25 + 1e-6)
    assert expected == pytest.approx(1.188574, abs=1e-6)
    out = markov_maps(Transition.exact(two_cell(0.2, 0.1)), torch.tensor([[1.0, 0.0]]), tau=0.3)
    assert out.shape == (1, 2)
    assert out[0, 0].item() == 0.0
    assert out[0, 1].item() == pytest.approx(expected, abs=1e-5)


def test_interpolated_crossing_in_the_first_step_uses_delta_one_minus_tau():
    # a = 0.4: p1 = [0.6, 0.4] / 0.6 = [1, 2/3] crosses at i = 0 with Δ = 1 − τ = 0.7
    # arrival = 1 − (2/3 − 0.3)/(0.7 + 1e−6) = 0.476191…
    expected = 1 - (2 / 3 - 0.3) / (0.7 + 1e-6)
    assert expected == pytest.approx(0.476191, abs=1e-6)
    out = markov_maps(Transition.exact(two_cell(0.4, 0.1)), torch.tensor([[1.0, 0.0]]), tau=0.3)
    assert out[0, 1].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("a, expected", [(0.2, 2.0), (0.4, 1.0)])
def test_without_interpolation_arrival_is_the_first_step_above_tau(a, expected):
    out = markov_maps(Transition.exact(two_cell(a, 0.1)), torch.tensor([[1.0, 0.0]]), tau=0.3, interpolate=False)
    assert out.tolist() == [[0.0, expected]]


def test_threshold_is_strict():
    # τ = 0.5. A cell starting at exactly τ has not arrived at 0; with the identity it never arrives.
    t = CountingTransition(torch.eye(2))
    out = markov_maps(t, torch.tensor([[1.0, 0.5]]), tau=0.5, max_iterations=7)
    assert out.tolist() == [[0.0, 7.0]]
    assert t.steps == 7
    # just above τ arrives at 0
    out = markov_maps(Transition.exact(torch.eye(2)), torch.tensor([[1.0, 0.50001]]), tau=0.5, max_iterations=7)
    assert out.tolist() == [[0.0, 0.0]]
    # p1 = [0.8, 0.4] / 0.8 = [1, 0.5] exactly (= τ: not yet); p2 = [0.8, 0.9] / 0.9 = [0.889, 1]: arrives at step 2
    m = torch.tensor([[0.8, 0.4], [0.0, 1.0]])
    out = markov_maps(Transition.exact(m), torch.tensor([[1.0, 0.0]]), tau=0.5, interpolate=False)
    assert out.tolist() == [[0.0, 2.0]]
    out = markov_maps(Transition.exact(m), torch.tensor([[1.0, 0.0]]), tau=0.5)
    assert out[0, 1].item() == pytest.approx(2 - 0.5 / (0.5 + 1e-6), abs=1e-5)


def test_stops_early_once_every_cell_has_arrived():
    t = CountingTransition(two_cell(0.2, 0.1))
    markov_maps(t, torch.tensor([[1.0, 0.0]]), tau=0.3, max_iterations=1000)
    assert t.steps == 2


def test_block_diagonal_attention_keeps_the_chain_in_its_block():
    r = 4
    a = torch.zeros(r * r, r * r)
    a[:8, :8] = 1.0 / 8   # the top two grid rows
    a[8:, 8:] = 1.0 / 8   # the bottom two grid rows
    t = CountingTransition(a)
    start = start_vector(10, 10, 100, 100, r).reshape(1, -1)  # x_a = y_a = 0.3: inside the top block
    out = markov_maps(t, start, tau=0.3, max_iterations=40)[0]
    assert bool((out[8:] == 40).all())       # never arrive
    assert bool((out[:8] <= 1.0).all())      # all arrive within the first step
    assert t.steps == 40                     # no early stop while cells are pending


def random_chain(r: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.stack(torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij"), -1).reshape(-1, 2).float()
    d2 = ((c[:, None] - c[None]) ** 2).sum(-1)
    a = torch.exp(-d2 / 2.0) * (0.5 + torch.rand(r * r, r * r, generator=g))
    return balance(a / a.sum(1, keepdim=True), 1.0, 200)  # balanced, so that every cell arrives


def test_interpolated_times_lie_in_the_step_before_the_integer_time():
    t = Transition.exact(random_chain(6, seed=1))
    starts = click_grid_starts([(13, 27), (90, 5)], 100, 100, 6)
    integer = markov_maps(t, starts, interpolate=False)
    frac = markov_maps(t, starts, interpolate=True)
    assert torch.equal(integer, integer.round())
    assert bool((integer < 1000).all())
    assert torch.equal(frac == 0, integer == 0)
    moved = integer > 0
    assert bool((frac[moved] > integer[moved] - 1).all()) and bool((frac[moved] <= integer[moved] + 1e-6).all())
    assert bool((frac[moved] != integer[moved]).any())


def test_chains_of_a_batch_are_independent():
    t = Transition.exact(random_chain(5, seed=2))
    starts = click_grid_starts([(10, 10), (60, 80), (99, 0)], 100, 100, 5)
    batch = markov_maps(t, starts)
    for i in range(3):
        torch.testing.assert_close(batch[i], markov_maps(t, starts[i:i + 1])[0])


@pytest.mark.parametrize("interpolate", [True, False])
@pytest.mark.parametrize("max_iterations", [3, 1000])
def test_compiled_arrival_bookkeeping_equals_the_torch_one(monkeypatch, interpolate, max_iterations):
    """On the CPU the per-step normalisation and arrival recording run compiled; off it, in torch: same times."""
    from m2n2_core import markov
    t = Transition.exact(random_chain(9, seed=3))
    starts = click_grid_starts([(13, 27), (90, 5), (50, 50)], 100, 100, 9)
    compiled = markov_maps(t, starts, interpolate=interpolate, max_iterations=max_iterations)
    monkeypatch.setattr(markov, "_advance_compiled", markov._advance)
    reference = markov_maps(t, starts, interpolate=interpolate, max_iterations=max_iterations)
    torch.testing.assert_close(compiled, reference, rtol=0, atol=2e-6)
    assert bool((compiled < max_iterations).any()) and bool((compiled > 0).any())


@pytest.mark.parametrize("interpolate", [True, False])
def test_a_block_of_steps_records_the_same_arrivals_as_single_steps(interpolate):
    """``_advance_block`` (the subspace's blocks of steps) equals ``_advance`` called once per step of the block."""
    from m2n2_core import markov
    g = torch.Generator().manual_seed(5)
    p = torch.rand(3, 50, generator=g)
    p /= p.amax(1, keepdim=True)
    block = torch.rand(8, 3, 50, generator=g) ** 3  # cells cross τ at different steps of the block, some never
    block /= block.amax(2, keepdim=True)
    pending = p <= 0.3
    arrival = torch.where(pending, 1000.0, 0.0)
    pending_b, arrival_b = pending.clone(), arrival.clone()
    last = markov._advance_block(p, block.clone(), arrival_b, pending_b, 6, 0.3, interpolate)
    for t in range(block.shape[0]):
        nxt = block[t].clone()
        markov._advance(p, nxt, arrival, pending, 6 + t, 0.3, interpolate)
        p = nxt
    assert torch.equal(last, p) and torch.equal(pending_b, pending) and bool(pending.any()) and bool((~pending).any())
    torch.testing.assert_close(arrival_b, arrival, rtol=0, atol=1e-6)


def test_reading_pending_cells_every_few_steps_gives_the_same_times(monkeypatch):
    """Off the CPU the host checks for pending cells only every few steps (each check waits for the device)."""
    from m2n2_core import markov
    t = Transition.exact(random_chain(9, seed=6))
    starts = click_grid_starts([(13, 27), (90, 5), (50, 50)], 100, 100, 9)
    every_step = markov_maps(t, starts)
    counting = CountingTransition(t.matrix)
    monkeypatch.setattr(markov, "_check_every", lambda device: 4)
    monkeypatch.setattr(markov, "_advance_compiled", markov._advance)
    torch.testing.assert_close(markov_maps(counting, starts), every_step, rtol=0, atol=2e-6)
    assert counting.steps % 4 == 0 and float(every_step.max()) < counting.steps < float(every_step.max()) + 5


def test_a_reference_transition_runs_the_chain_in_fp64():
    """``Transition.reference``: every step, normalisation and comparison in fp64 — the yardstick for rounding."""
    a = random_chain(9, seed=4)
    starts = click_grid_starts([(13, 27), (90, 5)], 100, 100, 9)
    t = Transition.reference(a)
    assert t.kind == "dense64" and t.matrix.dtype == torch.float64 and torch.equal(t.dense(), a)
    fp64 = markov_maps(t, starts)
    assert fp64.dtype == torch.float64
    p, arrival = starts.double(), torch.full((2, 81), 1000.0, dtype=torch.float64)
    pending = p <= 0.3
    arrival[~pending] = 0.0
    for i in range(1000):  # the chain written out in fp64
        if not bool(pending.any()):
            break
        nxt = p @ a.double()
        nxt = nxt / nxt.amax(dim=1, keepdim=True)
        crossed = pending & (nxt > 0.3)
        delta = (1.0 - 0.3) if i == 0 else (nxt - p)
        arrival = torch.where(crossed, (i + 1) - (nxt - 0.3) / (delta + 1e-6), arrival)
        pending &= ~crossed
        p = nxt
    torch.testing.assert_close(fp64, arrival, rtol=0, atol=1e-12)
    torch.testing.assert_close(fp64.float(), markov_maps(Transition.exact(a), starts), rtol=0, atol=1e-3)
