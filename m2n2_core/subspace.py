"""The subspace of a transition matrix's slowest modes, in which a Markov chain's long tail runs at a fraction of the
cost of full steps (the fast path, for dense matrices).

A chain's vector p_t = p₀·Aᵗ soon loses its components along A's fast-decaying modes (|λ| ≪ 1): after a few dozen
steps it lies, to rounding level, in the span of the few slowest ones. Once it does (checked on each chain, see
``SlowSubspace.enter``), every further step is y ← y·T in k coordinates and p = y·B, with B (k×N) an orthonormal basis
of that span and T = B·A·Bᵀ (k×k): k·N work instead of a read of the whole N×N matrix. Up to ``STEPS`` steps are
taken at once (y·T¹ … y·Tᵐ from T's stored powers, then one product with B), so that a chain's tail costs a few
operations per block of steps rather than per step (what matters on a GPU, where each operation costs a launch).
B comes from subspace iteration on A once per image (fp32, then fp64 to remove fp32's rounding from the basis), and a
real Schur form of T picks the slowest modes of the iterated block, whose basis the iteration has converged best.

A chain's vector moves by at most ``ENTRY_TOLERANCE`` of its max when it enters, and by a few 10⁻⁹ per step after.
That is less than full fp32 steps move it: their rounding accumulates along the slowest modes (7·10⁻⁴ after 400 steps
on SD-like attention at r = 64), so late arrival times of the fp32 chain differ from an fp64 chain's by up to 3.7
steps on GrabCut's person1, where chains finishing in the subspace stay within 0.14 steps of it (benchmarks/RESULTS.md).
A chain whose vector never gets that close to the subspace (a matrix with too flat a spectrum) keeps full steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import scipy.linalg
import torch

BLOCK = 160                 # rows iterated (at most half the matrix size)
KEEP = 0.5                  # fraction of the block kept: its slowest modes
ITERATIONS = 32             # fp32 subspace iterations
POLISH = 8                  # fp64 iterations after them
ENTRY_TOLERANCE = 3e-5      # a chain enters the subspace once no entry of p / max(p) lies farther from it
STEPS = 32                  # most chain steps taken at once in the subspace (powers of its dynamics kept)
_ORTHONORMALISE_EVERY = 4   # fp32 iterations between re-orthonormalisations
_COLUMNS = 1024             # columns of A converted to fp64 at a time (bounds the transient copy)


@dataclass(frozen=True)
class SlowSubspace:
    basis: torch.Tensor     # k×N fp32, orthonormal rows
    dynamics: torch.Tensor  # k×k fp64: basis·A·basisᵀ
    powers: torch.Tensor    # STEPS×k×k fp64: dynamics¹ … dynamics^STEPS

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.basis, self.dynamics, self.powers))

    def enter(self, p: torch.Tensor) -> Optional[torch.Tensor]:
        """Coordinates (K×k fp64) of the chains' max-normalised vectors p (K×N fp32) when every entry of every row
        lies within ``ENTRY_TOLERANCE`` of the subspace; None otherwise."""
        y = p @ self.basis.T
        if float((p - y @ self.basis).abs().max()) > ENTRY_TOLERANCE:
            return None
        return y.double()

    def steps(self, y: torch.Tensor, m: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """m ≤ STEPS chain steps at once from coordinates y (K×k fp64): the coordinates y·Tᵐ after them, and the
        vectors y·Tᵗ·B of steps t = 1 … m (m×K×N fp32), unnormalised like full steps'."""
        ys = y @ self.powers[:m]
        return ys[-1], ys.to(torch.float32) @ self.basis


def slow_subspace(matrix: torch.Tensor, block: int = BLOCK, seed: int = 0) -> SlowSubspace:
    """The slowest modes of the row-vector products p·A for a dense N×N matrix A (fp32, any device)."""
    n = matrix.shape[0]
    b = max(1, min(block, n // 2))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, generator=g).to(matrix.device)
    for i in range(ITERATIONS):
        x = x @ matrix
        if i % _ORTHONORMALISE_EVERY == _ORTHONORMALISE_EVERY - 1:
            x = _orthonormal_rows(x)
    x = _orthonormal_rows(x).double()
    for _ in range(POLISH):
        x = _orthonormal_rows(_times_fp64(x, matrix))
    t = (_times_fp64(x, matrix) @ x.T).cpu().numpy()
    # real Schur form of Tᵀ with the largest |λ| first: its leading columns span rows invariant under y ↦ y·T
    threshold = np.sort(np.abs(np.linalg.eigvals(t)))[::-1][max(1, int(KEEP * b)) - 1]
    _, z, k = scipy.linalg.schur(t.T, output="real", sort=lambda re, im: np.hypot(re, im) >= threshold * (1 - 1e-9))
    zk = torch.from_numpy(np.ascontiguousarray(z[:, :k])).to(x.device)
    basis = (zk.T @ x).to(torch.float32).contiguous()
    dynamics = (zk.T @ torch.from_numpy(t).to(x.device) @ zk).contiguous()
    powers = [dynamics]
    for _ in range(STEPS - 1):
        powers.append(powers[-1] @ dynamics)
    return SlowSubspace(basis, dynamics, torch.stack(powers))


def _orthonormal_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(x.T).Q.T.contiguous()


def _times_fp64(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """x·A in fp64 for fp64 rows x, converting A a block of columns at a time."""
    return torch.cat([x @ matrix[:, j:j + _COLUMNS].double() for j in range(0, matrix.shape[1], _COLUMNS)], dim=1)
