"""Spec §1: sharpening A ← row-softmax(log A / T) and IPF balancing (columns, then rows) of the attention."""
import pytest
import torch

from m2n2_core.balancing import balance, sharpen

from core_helpers import torch_single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def random_stochastic(n: int, seed: int, zeros: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, n, generator=g, dtype=torch.float64) ** 3
    if zeros:
        a[torch.rand(n, n, generator=g) < 0.3] = 0.0
        a.fill_diagonal_(1.0)
    return (a / a.sum(1, keepdim=True)).to(torch.float32)


def literal_ipf(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """The spec's loop on the matrix itself: divide by column sums, then by row sums."""
    m = a.to(torch.float64).clone()
    for _ in range(iterations):
        m = m / m.sum(dim=0, keepdim=True)
        m = m / m.sum(dim=1, keepdim=True)
    return m


@pytest.mark.parametrize("temperature", [0.65, 1.0, 2.0])
def test_sharpen_is_row_softmax_of_log_over_temperature(temperature):
    a = random_stochastic(12, seed=1)
    expected = torch.softmax(torch.log(a.to(torch.float64)) / temperature, dim=1)
    torch.testing.assert_close(sharpen(a, temperature).to(torch.float64), expected, rtol=1e-5, atol=1e-7)


def test_sharpen_by_hand_and_zeros_stay_zero():
    a = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8], [0.0, 0.0, 1.0]])
    out = sharpen(a, 0.5)  # squares, then renormalises each row
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.04 / 0.68, 0.0, 0.64 / 0.68], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(out, expected)
    assert torch.equal(out == 0, a == 0)


def test_sharpen_leaves_its_input_untouched():
    a = random_stochastic(6, seed=2)
    before = a.clone()
    sharpen(a, 0.65)
    assert torch.equal(a, before)


@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("iterations", [1, 3, 200])
def test_balance_equals_literal_ipf_on_the_sharpened_matrix(iterations, zeros):
    a = random_stochastic(16, seed=3, zeros=zeros)
    expected = literal_ipf(sharpen(a, 0.65), iterations)
    out = balance(a, 0.65, iterations)
    assert out.dtype == torch.float32 and out.shape == a.shape
    torch.testing.assert_close(out.to(torch.float64), expected, rtol=1e-4, atol=1e-7)


def test_balance_ends_on_rows_and_columns_are_close():
    a = random_stochastic(32, seed=4)
    out = balance(a, 0.65, 5).to(torch.float64)
    rows, cols = out.sum(1), out.sum(0)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert torch.allclose(cols, torch.ones_like(cols), atol=0.05)


def test_balance_is_doubly_stochastic_after_enough_iterations():
    a = random_stochastic(32, seed=5, zeros=True)
    out = balance(a, 0.65, 200).to(torch.float64)
    assert torch.allclose(out.sum(1), torch.ones(32, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(out.sum(0), torch.ones(32, dtype=torch.float64), atol=1e-4)
    assert bool((out >= 0).all())


def test_balance_of_a_doubly_stochastic_matrix_is_itself():
    # a symmetric circulant is already doubly stochastic and stays so after sharpening
    row = torch.tensor([0.5, 0.2, 0.05, 0.05, 0.2])
    a = torch.stack([torch.roll(row, k) for k in range(5)])
    torch.testing.assert_close(balance(a, 1.0, 50), a)
