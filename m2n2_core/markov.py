"""Markov-maps (spec §2): arrival times of a chain started at each click on the r×r grid."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numba
import numpy as np
import torch

from .subspace import STEPS, SlowSubspace
from .transition import Transition

_ENTER_EVERY = 4  # steps between checks whether the chains' vectors lie in the subspace


def start_vector(x: float, y: float, width: int, height: int, r: int) -> torch.Tensor:
    """p₀ over the r×r grid (flattened row-major): the click at pixel (x, y) mapped to ((r−1)x/W, (r−1)y/H),
    splatted bilinearly onto its 4 neighbouring cells, scaled so that max(p₀) = 1."""
    xa = (r - 1) * float(x) / width
    ya = (r - 1) * float(y) / height
    x0, y0 = min(int(xa), r - 1), min(int(ya), r - 1)
    fx, fy = xa - x0, ya - y0
    p = torch.zeros(r, r, dtype=torch.float32)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            if wy * wx > 0:
                p[min(y0 + dy, r - 1), min(x0 + dx, r - 1)] += wy * wx
    return (p / p.max()).reshape(-1)


def markov_maps(transition: Transition, starts: torch.Tensor, tau: float = 0.3, interpolate: bool = True,
                max_iterations: int = 1000, subspace: Optional[SlowSubspace] = None) -> torch.Tensor:
    """Arrival times (k×N; fp32, fp64 on a ``Transition.reference``) of the chains p_{t+1} = p_t·A / max(p_t·A)
    started at the k rows of ``starts``.

    A cell arrives at the first t with p_t > τ (cells with p₀ > τ at 0); with interpolation the crossing between
    steps i and i+1 is placed at i + 1 − (p_{i+1} − τ)/(Δ + 1e−6), Δ = p_{i+1} − p_i (Δ = 1 − τ for i = 0).
    Stops once every cell of every chain has arrived; cells that never arrive get ``max_iterations``. With a
    ``subspace`` of A's slowest modes, the chains continue in it once their vectors lie in it (checked every
    ``_ENTER_EVERY`` steps; ``m2n2_core.subspace``), up to ``subspace.STEPS`` steps at a time.

    Off the CPU, the host reads the device (whether cells are pending) only every ``_ENTER_EVERY`` steps and once per
    block: the steps in between record no arrival once none is pending, so the times are the same.
    """
    device = transition.matrix.device
    transition = transition.for_chain()
    dtype = torch.float64 if transition.kind == "dense64" else torch.float32
    p = starts.to(device=device, dtype=dtype).reshape(starts.shape[0], -1)
    p = p / p.amax(dim=1, keepdim=True)
    arrival = torch.full_like(p, float(max_iterations))
    pending = p <= tau
    arrival[~pending] = 0.0
    advance = _advance_compiled if device.type == "cpu" and dtype == torch.float32 else _advance
    check_every = _check_every(device)
    coordinates = None  # the chains' coordinates in the subspace, once they run there
    i = 0  # steps taken
    while i < max_iterations:
        if (coordinates is not None or i % check_every == 0) and not bool(pending.any()):
            break
        if coordinates is None:
            nxt = transition.step(p).contiguous()
            advance(p, nxt, arrival, pending, i, tau, interpolate)
            p, i = nxt, i + 1
            if subspace is not None and i % _ENTER_EVERY == 0:
                coordinates = subspace.enter(p)
        else:
            m = min(STEPS, max_iterations - i)
            coordinates, block = subspace.steps(coordinates, m)
            top = block.amax(dim=2, keepdim=True).clamp_min(1e-38)
            block /= top
            coordinates /= top[-1].double()  # as the vectors are normalised
            p, i = _advance_block(p, block, arrival, pending, i, tau, interpolate), i + m
    return arrival


def _check_every(device: torch.device) -> int:
    """Steps between the host's reads of whether cells are pending (each read waits for an accelerator)."""
    return 1 if device.type == "cpu" else _ENTER_EVERY


def _advance(p, nxt, arrival, pending, i, tau, interpolate):
    """Step i → i+1 in place: normalise ``nxt`` (p_{i+1}) by its row max, record the arrivals of pending cells
    (without reading anything back to the host)."""
    nxt /= nxt.amax(dim=1, keepdim=True).clamp_min(1e-38)
    crossed = pending & (nxt > tau)
    if interpolate:
        delta = (1.0 - tau) if i == 0 else (nxt - p)
        arrival.copy_(torch.where(crossed, (i + 1) - (nxt - tau) / (delta + 1e-6), arrival))
    else:
        arrival.masked_fill_(crossed, float(i + 1))
    pending &= ~crossed


def _advance_block(p, block, arrival, pending, i, tau, interpolate):
    """Steps i → i+m at once (i > 0), as m calls of ``_advance``: ``block`` (m×K×N) holds p_{i+1} … p_{i+m},
    normalised; records each pending cell's first crossing in the block. Returns p_{i+m}."""
    above = block > tau
    crossed = pending & above.any(0)
    first = above.to(torch.uint8).argmax(0, keepdim=True)  # the first step above τ (argmax: the first maximum)
    step = (first[0] + (i + 1)).to(block.dtype)
    if interpolate:
        nxt = block.gather(0, first)[0]
        prev = torch.where(first[0] == 0, p, block.gather(0, (first - 1).clamp_min(0))[0])
        step = step - (nxt - tau) / ((nxt - prev) + 1e-6)
    arrival.copy_(torch.where(crossed, step, arrival))
    pending &= ~crossed
    return block[-1]


def _advance_compiled(p, nxt, arrival, pending, i, tau, interpolate):
    """``_advance`` for CPU tensors in one compiled pass (the torch version costs ~0.1 ms per step in small ops)."""
    _advance_kernel(p.numpy(), nxt.numpy(), arrival.numpy(), pending.numpy(), i, np.float32(tau), interpolate)


@numba.njit(nogil=True, cache=True)
def _advance_kernel(p, nxt, arrival, pending, i, tau, interpolate):  # pragma: no cover - compiled
    eps = np.float32(1e-6)
    first_delta = np.float32(1.0 - np.float64(tau) + 1e-6)  # as torch does: (1 − τ) + 1e−6 in double, used as fp32
    step = np.float32(i + 1)
    for c in range(nxt.shape[0]):
        row = nxt[c]
        m = max(row.max(), np.float32(1e-38))
        for j in range(row.shape[0]):
            v = row[j] / m
            row[j] = v
            if pending[c, j] and v > tau:
                pending[c, j] = False
                if not interpolate:
                    arrival[c, j] = step
                elif i == 0:
                    arrival[c, j] = step - (v - tau) / first_delta
                else:
                    arrival[c, j] = step - (v - tau) / ((v - p[c, j]) + eps)


def click_grid_starts(points: Sequence[Tuple[float, float]], width: int, height: int, r: int) -> torch.Tensor:
    """Start vectors (k×r²) for several clicks."""
    return torch.stack([start_vector(x, y, width, height, r) for x, y in points])
