"""The public API: prepare an image once (attention → balanced transition matrix), then answer clicks cheaply."""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .attention import AttentionSource, make_source
from .balancing import balance
from .config import M2N2Config
from .floodfill import minimax_distance, minimax_distance_reconstruction
from .image_io import as_rgb_uint8
from .markov import click_grid_starts, markov_maps
from .merge import truncated_nearest_neighbour
from .scoring import Candidates, candidates, select_threshold
from .subspace import slow_subspace
from .transition import Transition
from .upsampling import JBUOperator, guide_image, upsample_markov_map

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def resolve_device(device: Optional[str]) -> str:
    """None → "cuda" when available, else "cpu"; anything else is checked by torch."""
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(torch.device(device))


@dataclass(frozen=True)
class ClickMap:
    """One click's final distance map D_i and its candidate thresholds (independent of the other clicks)."""
    distance: np.ndarray
    candidates: Candidates
    pixel: Tuple[int, int]  # (y, x)

    @property
    def nbytes(self) -> int:
        return self.distance.nbytes + self.candidates.nbytes


class PreparedImage:
    """All per-image state: the guide image, the balanced transition matrix, on the fast path the upsampling operator
    and (dense matrices up to ``subspace_max_resolution``) the slow-mode subspace, and a per-point cache of click maps.

    Thread-safe: several threads may predict on the same prepared image at once.
    """

    def __init__(self, image: np.ndarray, transition: Transition, config: M2N2Config):
        self.image = image
        self.height, self.width = image.shape[:2]
        self.transition = transition
        self.r = int(round(math.sqrt(transition.size)))
        self.config = config
        self.guide = guide_image(image)
        self.jbu = None if config.exact else JBUOperator(self.guide, self.r, config.jbu_sigma_spatial,
                                                         config.jbu_sigma_range)
        fast_dense = not config.exact and transition.kind != "csr"
        self.subspace = slow_subspace(transition.dense()) if fast_dense and self.r <= config.subspace_max_resolution \
            else None
        self._cache: "OrderedDict[Tuple[float, float], ClickMap]" = OrderedDict()
        self._lock = threading.Lock()
        self.timings: Dict[str, float] = {}  # seconds per stage of the latest click computation / prediction

    @property
    def nbytes(self) -> int:
        with self._lock:
            cached = sum(c.nbytes for c in self._cache.values())
        operator = self.jbu.nbytes if self.jbu is not None else 0
        subspace = self.subspace.nbytes if self.subspace is not None else 0
        return self.transition.nbytes + operator + subspace + self.image.nbytes + self.guide.numel() * 4 + cached

    def clear_cache(self) -> None:
        """Forget every cached click map (the balanced matrix and JBU operator stay)."""
        with self._lock:
            self._cache.clear()

    # ---- per click -------------------------------------------------------------------------------------------
    def distance_map(self, x: float, y: float) -> np.ndarray:
        """H×W float32 in [0, 1]: the click's final distance map D_i (spec §3)."""
        points = _as_points([(x, y)], self.width, self.height)
        return self.click_maps(points)[0].distance

    def click_maps(self, points: np.ndarray) -> List[ClickMap]:
        """Click maps for K×2 (x, y) points, from the cache or computed (the missing chains run as one batch)."""
        keys = [(float(x), float(y)) for x, y in points]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            found.update(zip(missing, self._compute(missing)))
            with self._lock:
                for k in missing:
                    self._cache[k] = found[k]
                    self._cache.move_to_end(k)
                while len(self._cache) > max(self.config.distance_cache_size, 1):
                    self._cache.popitem(last=False)
        return [found[k] for k in keys]

    def _compute(self, points: List[Tuple[float, float]]) -> List[ClickMap]:
        cfg = self.config
        t0 = time.perf_counter()
        starts = click_grid_starts(points, self.width, self.height, self.r)
        arrival = markov_maps(self.transition, starts, cfg.tau, cfg.interpolate, cfg.max_iterations,
                              self.subspace).cpu()
        times = {"chain": time.perf_counter() - t0, "jbu": 0.0, "flood_fill": 0.0, "candidates": 0.0}
        maps = []
        for (x, y), grid in zip(points, arrival):
            t = time.perf_counter()
            grid = grid.reshape(self.r, self.r)
            if self.jbu is not None:
                m = self.jbu.apply(grid).numpy()
            else:
                m = upsample_markov_map(grid, self.guide, cfg.jbu_sigma_spatial, cfg.jbu_sigma_range).numpy()
            times["jbu"] += time.perf_counter() - t
            t = time.perf_counter()
            py, px = _pixel(x, y, self.width, self.height)
            fill = minimax_distance_reconstruction if cfg.exact else minimax_distance
            d = fill(m, py, px) if cfg.flood_fill else m.astype(np.float32)
            times["flood_fill"] += time.perf_counter() - t
            t = time.perf_counter()
            maps.append(ClickMap(distance=d, candidates=candidates(d), pixel=(py, px)))
            times["candidates"] += time.perf_counter() - t
        self.timings.update(times)
        return maps

    # ---- per prediction --------------------------------------------------------------------------------------
    def predict(self, points: ArrayLike, labels: ArrayLike) -> np.ndarray:
        """H×W bool mask for K clicks: points K×2 (x, y) in pixels of the original image, labels K of 1/0."""
        pts = _as_points(points, self.width, self.height)
        lab = _as_labels(labels, len(pts))
        maps = self.click_maps(pts)
        t = time.perf_counter()
        cfg = self.config
        flat = [cm.pixel[0] * self.width + cm.pixel[1] for cm in maps]
        thresholds = []
        for i, cm in enumerate(maps):
            same = [flat[j] for j in range(len(maps)) if j != i and lab[j] == lab[i]]
            opposite = [flat[j] for j in range(len(maps)) if lab[j] != lab[i]]
            lam, _ = select_threshold(cm.candidates, flat[i], same, opposite, cfg.area_prior, cfg.use_edge_score,
                                      cfg.use_prior_score, cfg.use_positive_score, cfg.use_negative_score)
            thresholds.append(lam)
        t_select = time.perf_counter()
        mask = truncated_nearest_neighbour([cm.distance for cm in maps], thresholds, lab, [cm.pixel for cm in maps])
        self.timings.update({"select": t_select - t, "merge": time.perf_counter() - t_select})
        return mask


class M2N2Predictor:
    """SamPredictor-like front end: ``set_image`` once, then ``predict`` for every click set.

    ``prepare`` / ``prepare_attention`` return a PreparedImage without touching the predictor's state, for callers
    (servers) that keep their own per-image cache.
    """

    def __init__(self, config: Optional[M2N2Config] = None, device: Optional[str] = None):
        self.config = config or M2N2Config()
        self.device = resolve_device(device if device is not None else self.config.device)
        self._source: Optional[AttentionSource] = None
        self._source_lock = threading.Lock()
        self._prepared: Optional[PreparedImage] = None

    @property
    def source(self) -> AttentionSource:
        """The attention source, created (and for SD, loaded) on first use."""
        with self._source_lock:
            if self._source is None:
                self._source = make_source(self.config, self.device)
            return self._source

    def load(self) -> AttentionSource:
        """Create (for SD: load) the attention source and compile the fast path's kernels, so that the first image
        and click pay for neither. Returns the source."""
        source = self.source
        if not self.config.exact:
            _compile_kernels()
        return source

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """Run the attention source on an H×W×3 uint8 RGB image, balance, and return the prepared state."""
        image = as_rgb_uint8(image)
        return self.prepare_attention(image, self.source.compute(image))

    def prepare_attention(self, image: np.ndarray, attention: Union[np.ndarray, torch.Tensor]) -> PreparedImage:
        """Balance your own raw row-stochastic attention ((r², r²) or (r, r, r, r), numpy or torch) for ``image``."""
        image = as_rgb_uint8(image)
        a = _as_attention(attention).to(self.device)
        balanced = balance(a, self.config.temperature, self.config.balancing_iterations)
        del a
        if self.config.exact:
            transition = Transition.exact(balanced)
        else:
            transition = Transition.compact(balanced, self.config.dense_storage)
        del balanced
        return PreparedImage(image, transition, self.config)

    # ---- stateful wrappers -----------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        self._prepared = None  # release the previous image first
        self._prepared = self.prepare(image)

    def set_attention(self, image: np.ndarray, attention: Union[np.ndarray, torch.Tensor]) -> None:
        self._prepared = None
        self._prepared = self.prepare_attention(image, attention)

    @property
    def prepared(self) -> PreparedImage:
        if self._prepared is None:
            raise RuntimeError("no image is set: call set_image(image) or set_attention(image, attention) first")
        return self._prepared

    def distance_map(self, x: float, y: float) -> np.ndarray:
        return self.prepared.distance_map(x, y)

    def predict(self, points: ArrayLike, labels: ArrayLike) -> np.ndarray:
        return self.prepared.predict(points, labels)


# ---- validation --------------------------------------------------------------------------------------------------
def _as_attention(attention) -> torch.Tensor:
    a = torch.as_tensor(np.asarray(attention) if not isinstance(attention, torch.Tensor) else attention)
    if a.ndim == 4 and a.shape[0] == a.shape[1] == a.shape[2] == a.shape[3]:
        a = a.reshape(a.shape[0] ** 2, a.shape[0] ** 2)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"attention must have shape (r², r²) or (r, r, r, r), got {tuple(a.shape)}")
    r = int(round(math.sqrt(a.shape[0])))
    if r * r != a.shape[0] or r < 2:
        raise ValueError(f"attention has {a.shape[0]} rows, which is not the square of a grid side r ≥ 2")
    a = a.to(torch.float32)
    if not bool(torch.isfinite(a).all()) or bool((a < 0).any()):
        raise ValueError("attention must be finite and non-negative")
    if bool((a.sum(dim=1) <= 0).any()):
        raise ValueError("every attention row must have positive mass")
    return a


def _compile_kernels() -> None:
    """Run every compiled kernel once on a tiny input (numba compiles on first call, or loads its on-disk cache)."""
    tiny = np.zeros((4, 4, 3), dtype=np.uint8)
    transition = Transition.compact(torch.full((4, 4), 0.25))  # dense: 16-bit encoding and product
    PreparedImage(tiny, transition, M2N2Config()).predict([(1, 1)], [1])


def _as_points(points, width: int, height: int) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
        raise ValueError(f"points must be a non-empty K×2 array of (x, y) pixel coordinates, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("points must be finite numbers")
    bad = (p[:, 0] < 0) | (p[:, 0] > width) | (p[:, 1] < 0) | (p[:, 1] > height)
    if bad.any():
        x, y = p[np.argmax(bad)]
        raise ValueError(f"point ({x:g}, {y:g}) lies outside the {width}×{height} image")
    return p


def _as_labels(labels, k: int) -> List[bool]:
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != k:
        raise ValueError(f"got {k} points but {lab.shape[0]} labels")
    if not np.all(np.isin(lab.astype(np.float64), (0.0, 1.0))):
        raise ValueError("labels must be 1 (positive) or 0 (negative)")
    return [bool(v) for v in lab]


def _pixel(x: float, y: float, width: int, height: int) -> Tuple[int, int]:
    """The (y, x) pixel a click falls on."""
    return min(int(round(y)), height - 1), min(int(round(x)), width - 1)
