"""The balanced transition matrix in the storage the Markov chain runs on.

``exact`` keeps the dense fp32 matrix (the spec's direct method). The compact form (the fast default) keeps a sparse
matrix exactly, as CSR of its nonzero entries (fp32 values), when that takes at most half the bytes of dense fp32 (the
weight-free source: 1–13 % nonzeros). A matrix without that many zeros (SD attention) is stored densely in 16 bits per
entry (``m2n2_core.packed``: half the bytes; 8 rows of a column share an exponent, under which each entry is a 15-bit
float, rounded with bounded error diffusion so that products with the chain's smooth vectors stay accurate), or in
fp32 (exact); ``M2N2Config.dense_storage`` picks which (16 bits by default: measured against exact on SD-like
attention in benchmarks/RESULTS.md, "Chain storage"). Every dense step on the CPU sums blocks of rows in fp32
and the blocks in fp64 (``_blocked_product``, ``m2n2_core.matvec``). Measured and rejected: an earlier 16-bit float
per entry (5-bit exponent, 11-bit mantissa: IoU 0.977 on GrabCut's 376043 at r = 128, against the one-sum reference), nearest rounding, unbounded
error diffusion, 15-bit multiples of a block's quantum (no per-entry exponent: IoU 0.989 on 376043 at r = 64), bf16,
and dropping the smallest entries of each row up to a mass budget. A step returns p·A up to a
positive factor, which the chain's max normalisation removes.
"""
from __future__ import annotations

import warnings

import torch

from . import matvec, packed

_CSR_BYTES_PER_ENTRY = 8  # fp32 value + int32 column index
_CSR_MAX_FRACTION = 1 / 2  # of dense fp32 bytes: the memory budget of the compact form


class Transition:
    """Computes ``P @ A`` for a batch of row vectors P (k×N, fp32), up to a positive factor per call."""

    def __init__(self, matrix: torch.Tensor, kind: str):
        self.matrix = matrix
        # "dense32" (stores A), "packed16" (A's 16-bit codes), "csr" (stores Aᵀ) or "dense64" (A in fp64: its
        # chains run in fp64, a yardstick for the others' rounding)
        self.kind = kind

    @property
    def size(self) -> int:
        return self.matrix.shape[1]  # A is N×N; 16-bit codes have their rows padded to a multiple of 8

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
            return matvec.packed_product(self.matrix, p)
        if self.kind == "dense32" and self.matrix.device.type == "cpu":
            return _blocked_product(p, self.matrix)
        return p @ self.matrix

    def dense(self) -> torch.Tensor:
        """A as a dense fp32 matrix (the stored one for "dense32", else a new one)."""
        if self.kind == "dense64":
            return self.matrix.to(torch.float32)
        if self.kind == "csr":
            return self.matrix.to_dense().T.contiguous()
        if self.kind == "packed16":
            return packed.decode(self.matrix)
        return self.matrix

    def for_chain(self) -> "Transition":
        """What one chain run steps with: on an accelerator, 16-bit codes are decoded once per run (a transient fp32
        copy, so the steps run at fp32 mat-vec speed); on the CPU the compiled kernel reads the codes directly."""
        if self.kind == "packed16" and self.matrix.device.type != "cpu":
            return Transition(self.dense(), "dense32")
        return self

    @classmethod
    def exact(cls, balanced: torch.Tensor) -> "Transition":
        return cls(balanced.to(torch.float32).contiguous(), "dense32")

    @classmethod
    def reference(cls, balanced: torch.Tensor) -> "Transition":
        """The matrix in fp64: chains on it run every step in fp64, as exact arithmetic would (precision checks)."""
        return cls(balanced.to(torch.float64).contiguous(), "dense64")

    @classmethod
    def compact(cls, balanced: torch.Tensor, dense_storage: str = "16bit") -> "Transition":
        """CSR of the nonzero entries when that needs ≤ 1/2 of the dense fp32 bytes; otherwise the dense matrix in
        16 bits (``dense_storage="16bit"``) or exact in fp32 ("fp32")."""
        if dense_storage not in ("16bit", "fp32"):
            raise ValueError(f"dense_storage must be '16bit' or 'fp32', not {dense_storage!r}")
        n = balanced.shape[0]
        nnz = int(torch.count_nonzero(balanced))  # entries are ≥ 0; (balanced > 0).sum() takes 50× longer
        if nnz * _CSR_BYTES_PER_ENTRY + 4 * (n + 1) <= _CSR_MAX_FRACTION * 4 * n * n:  # values, columns, row pointers
            return cls(_csr_of_transpose(balanced.to(torch.float32)), "csr")
        if dense_storage == "16bit":
            return cls(packed.encode(balanced), "packed16")
        return cls.exact(balanced)


_BLOCK_ROWS = 256  # rows per fp32 partial sum of a dense fp32 step on the CPU


def _blocked_product(p: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``p @ a`` (fp32) as fp32 partial sums over blocks of 256 rows of ``a``, added up in fp64, at the speed of torch's
    product. Torch's CPU product sums all N rows in one fp32 sum, which on a chain's smooth vector at r = 128 is off by
    up to 1.8·10⁻⁵ relative and biased low by 1.1·10⁻⁵ (small terms lost against a large sum, unevenly over the
    columns), more than the 16-bit storage's own error; the blocked sum stays within about 10⁻⁶ (benchmarks/RESULTS.md)."""
    k, n = p.shape
    main = n - n % _BLOCK_ROWS
    blocks = p[:, :main].reshape(k, main // _BLOCK_ROWS, _BLOCK_ROWS).transpose(0, 1)
    out = torch.bmm(blocks, a[:main].reshape(main // _BLOCK_ROWS, _BLOCK_ROWS, a.shape[1])).sum(0, dtype=torch.float64)
    if main < n:
        out += (p[:, main:] @ a[main:]).to(torch.float64)
    return out.to(torch.float32)


def _csr_of_transpose(a: torch.Tensor) -> torch.Tensor:
    """Aᵀ as CSR with int32 indices, built from A's nonzeros grouped by column (rows ascending within a column), without
    transposing the dense matrix (4× faster at r = 128 than ``a.T.contiguous().to_sparse_csr()``)."""
    n = a.shape[0]
    rows, cols = a.nonzero(as_tuple=True)  # row-major order
    order = torch.argsort(cols, stable=True)
    pointers = torch.zeros(n + 1, dtype=torch.int64, device=a.device)
    pointers[1:] = torch.bincount(cols, minlength=n).cumsum(0)
    with warnings.catch_warnings():  # torch calls sparse CSR "beta"; the operations used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(pointers.to(torch.int32), rows[order].to(torch.int32), a[rows, cols][order],
                                       size=(n, n))
