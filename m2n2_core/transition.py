"""The balanced transition matrix in the storage the Markov chain runs on.

``exact`` keeps the dense fp32 matrix (the spec's direct method). The compact form (the fast default) drops, per row,
the smallest entries whose total mass is at most ``epsilon`` and keeps the rest exactly (fp32 values, CSR) when that
takes at most an eighth of the bytes of dense fp32 (about 6 % of the entries; below that a CSR step is also faster than
a dense one on CPU). A matrix that is not that sparse stays dense: fp32 (exact) by default, or on request in 16 bits
per entry (``m2n2_core.packed``: relative rounding ≤ 2⁻¹², half the bytes of fp32, fp32 accumulation). The 16-bit form
is not the default because the threshold selection downstream amplifies small changes of the Markov-map: its masks
agreed with exact at IoU ≥ 0.996 on SD-like attention but fell below 0.99 on 3 of 50 GrabCut images (weight-free,
r = 32; 0.977 on 209070). Measured and rejected outright: bf16 (IoU 0.93) and dropping mass from dense rows (ε = 10⁻³: IoU 0.45).
A step returns p·A up to a positive factor, which the chain's max normalisation removes.
"""
from __future__ import annotations

import warnings

import torch

from . import packed

_CSR_BYTES_PER_ENTRY = 8  # fp32 value + int32 column index
_CSR_MAX_FRACTION = 1 / 8  # of dense fp32 bytes


class Transition:
    """Computes ``P @ A`` for a batch of row vectors P (k×N, fp32), up to a positive factor per call."""

    def __init__(self, matrix: torch.Tensor, kind: str):
        self.matrix = matrix
        self.kind = kind  # "dense32" (stores A), "packed16" (stores A's 16-bit codes) or "csr" (stores Aᵀ)

    @property
    def size(self) -> int:
        return self.matrix.shape[0]

    @property
    def nbytes(self) -> int:
        m = self.matrix
        if self.kind == "csr":
            return sum(t.numel() * t.element_size() for t in (m.crow_indices(), m.col_indices(), m.values()))
        return m.numel() * m.element_size()

    def step(self, p: torch.Tensor) -> torch.Tensor:
        if self.kind == "csr":
            return (self.matrix @ p.T.contiguous()).T
        if self.kind == "packed16":
            return packed.product(self.matrix, p)
        return p @ self.matrix

    def for_chain(self) -> "Transition":
        """What one chain run steps with: on an accelerator, 16-bit codes are decoded once per run (a transient fp32
        copy, so the steps run at fp32 mat-vec speed); on the CPU the compiled kernel reads the codes directly."""
        if self.kind == "packed16" and self.matrix.device.type != "cpu":
            return Transition(packed.decode(self.matrix), "dense32")
        return self

    @classmethod
    def exact(cls, balanced: torch.Tensor) -> "Transition":
        return cls(balanced.to(torch.float32).contiguous(), "dense32")

    @classmethod
    def compact(cls, balanced: torch.Tensor, epsilon: float, dense_storage: str = "fp32") -> "Transition":
        """CSR without the smallest entries (at most ``epsilon`` of each row's mass) when that needs ≤ 1/8 of the
        dense fp32 bytes; otherwise the dense matrix, exact (``dense_storage="fp32"``) or in 16 bits ("16bit")."""
        n = balanced.shape[0]
        keep = _mass_cutoff_mask(balanced, epsilon) if epsilon > 0 else balanced > 0
        nnz = int(keep.sum())
        if nnz * _CSR_BYTES_PER_ENTRY + 4 * (n + 1) <= _CSR_MAX_FRACTION * 4 * n * n:  # values, columns, row pointers
            at = torch.where(keep, balanced, 0.0).T.contiguous()
            del keep
            with warnings.catch_warnings():  # torch calls sparse CSR "beta"; the operations used here are stable
                warnings.simplefilter("ignore", UserWarning)
                csr = at.to_sparse_csr()
                csr = torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32),
                                              csr.values().to(torch.float32), size=csr.shape)
            return cls(csr, "csr")
        del keep
        if dense_storage == "16bit":
            return cls(packed.encode(balanced), "packed16")
        return cls.exact(balanced)


def _mass_cutoff_mask(a: torch.Tensor, epsilon: float, bins: int = 256, chunk: int = 2048) -> torch.Tensor:
    """Per row, True for the entries to keep so that the dropped entries sum to at most ``epsilon`` × the row sum.

    Entries are grouped in quarter-octave bins of their value relative to the row max; whole bins are dropped from
    the smallest up while their cumulative mass stays within the budget, so every dropped entry is smaller than every
    kept one. Works on row chunks to bound temporary memory.
    """
    keep = torch.empty(a.shape, dtype=torch.bool, device=a.device)
    for start in range(0, a.shape[0], chunk):
        rows = a[start:start + chunk]
        row_max = rows.amax(dim=1, keepdim=True).clamp_min(1e-38)
        b = (-torch.log2((rows / row_max).clamp_min_(2.0 ** -64)) * 4).floor_().clamp_(0, bins - 1).to(torch.int64)
        mass = torch.zeros(rows.shape[0], bins, dtype=torch.float64, device=a.device)
        mass.scatter_add_(1, b, rows.to(torch.float64))
        tail = mass.flip(1).cumsum(1).flip(1)                 # tail[:, j] = mass in bins ≥ j
        budget = epsilon * mass.sum(dim=1, keepdim=True)
        droppable = tail <= budget                            # monotone: once droppable, all smaller bins are too
        first_drop = torch.where(droppable.any(1), droppable.to(torch.uint8).argmax(1),
                                 torch.full((rows.shape[0],), bins, device=a.device))
        keep[start:start + chunk] = (b < first_drop[:, None]) & (rows > 0)
    return keep
