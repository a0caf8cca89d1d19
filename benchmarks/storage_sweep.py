"""Agreement of chain storages with the exact method: the measurement behind the choice of storage.

For each GrabCut image (resized to 854×480) it balances the attention, simulates 5 (or the given number of) RITM
clicks on the reference (``M2N2Config(exact=True)``: the spec's direct method on the dense fp32 matrix), then replays
them on the fast path with the matrix in another storage, and prints the IoU of the masks after every click and the
largest change of any click's distance map.

    python benchmarks/storage_sweep.py 128 sd-like 124080,21077,banana1 16bit,fp32,p16near [clicks [reference]]

clicks: 5 by default. reference: "exact" (default) or "fp32", a cheaper stand-in: the fast path on the fp32 matrix
without the subspace, which runs the exact path's chains bit for bit and replaces only its direct bilateral filter and
reconstruction flood fill by the JBU operator (equal to 2·10⁻⁶, tests/test_core_upsampling.py) and the compiled
priority flood (bit-equal, tests/test_core_floodfill.py), saving ≈ 8 s per click at r = 64.

Storages: 16bit and fp32 are the fast path as the predictor builds it with that ``dense_storage`` (m2n2_core.packed:
16-bit block floating point with error diffusion / the fp32 matrix; the slow-mode subspace at r ≤ 128 as by default).
The others run the fast path on an fp32 copy of the matrix rounded as named: p16near (m2n2_core.packed's blocks and
quanta, rounded to nearest), bf16, f16 (plain fp16), f16row (fp16 after scaling each row by its max), eps=<x> (drop per
row the smallest entries carrying ≤ x of the mass, as the fast path once did before storing CSR), noise=<x> (uniform
random relative perturbations of up to ±x: how sensitive an image's masks are at all); a suffix "+sub" (e.g.
p16near+sub) also runs each chain's tail in the matrix's slow-mode subspace (m2n2_core.subspace).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_click import iou, load_sample  # noqa: E402

import m2n2_core.predictor as predictor_module  # noqa: E402
from m2n2_core import M2N2Config, packed  # noqa: E402
from m2n2_core.attention import make_source  # noqa: E402
from m2n2_core.balancing import balance  # noqa: E402
from m2n2_core.evaluation.clicker import next_click  # noqa: E402
from m2n2_core.markov import markov_maps  # noqa: E402
from m2n2_core.predictor import PreparedImage  # noqa: E402
from m2n2_core.subspace import slow_subspace  # noqa: E402
from m2n2_core.synthetic import sd_like_attention  # noqa: E402
from m2n2_core.transition import Transition  # noqa: E402

CLICKS = 5


def rounded(balanced: torch.Tensor, storage: str) -> torch.Tensor:
    """The fp32 matrix a chain on ``storage`` effectively multiplies with."""
    if storage == "p16near":  # m2n2_core.packed's blocks, each entry rounded to the nearest multiple of its quantum
        quantum = packed.quanta(balanced)
        return torch.where(quantum > 0, (balanced / quantum).round().clamp(max=2 ** packed.MANTISSA_BITS - 1) * quantum,
                           0.0)
    if storage == "bf16":
        return balanced.bfloat16().float()
    if storage == "f16":
        return balanced.half().float()
    if storage == "f16row":
        scale = balanced.amax(1, keepdim=True)
        return (balanced / scale).half().float() * scale
    if storage.startswith("noise="):  # fp32 with random relative perturbations of the given size (uniform ±x)
        g = torch.Generator().manual_seed(0)
        return balanced * (1 + float(storage[6:]) * (2 * torch.rand(balanced.shape, generator=g) - 1))
    if storage.startswith("eps="):
        return torch.where(mass_cutoff_mask(balanced, float(storage[4:])), balanced, 0.0)
    raise SystemExit(f"unknown storage {storage!r}")


def shared_chains(matrix: torch.Tensor):
    """``markov_maps`` that runs each chain on the fp32 ``matrix`` (without a subspace) once: the fast path's chain there
    is the exact path's bit for bit (the same torch product, one click at a time), so storage "fp32" gets the
    reference's arrival times instead of re-running them. Checked again on each image's first repeat."""
    memo, checked = {}, []

    def run(transition, starts, *args):
        if transition.matrix is not matrix or args[-1] is not None:
            return markov_maps(transition, starts, *args)
        key = (starts.numpy().tobytes(), args[:-1])
        if key not in memo:
            memo[key] = markov_maps(transition, starts, *args)
        elif not checked:
            assert torch.equal(memo[key], markov_maps(transition, starts, *args)), "the chains differ"
            checked.append(True)
        return memo[key].clone()
    return run


def mass_cutoff_mask(a: torch.Tensor, epsilon: float, bins: int = 256, chunk: int = 2048) -> torch.Tensor:
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


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (4, 5, 6) or (len(args) == 6 and args[5] not in ("exact", "fp32")):
        raise SystemExit(__doc__)
    r, source, stems, storages = int(args[0]), args[1], args[2].split(","), args[3].split(",")
    n_clicks = int(args[4]) if len(args) >= 5 else CLICKS
    exact_reference = len(args) < 6 or args[5] == "exact"
    torch.set_num_threads(1)
    for stem in stems:
        image, gt, ignore = load_sample(stem)
        source_cfg = dict(attention="affinity" if source == "affinity" else "sd", attention_resolution=r, device="cpu")
        cfg = M2N2Config(**source_cfg, subspace_max_resolution=0)
        raw = make_source(cfg, "cpu").compute(image) if source == "affinity" else sd_like_attention(image, r)
        bal = balance(torch.as_tensor(raw).reshape(r * r, r * r).float(), cfg.temperature, cfg.balancing_iterations)
        reference = PreparedImage(image, Transition.exact(bal), cfg.replace(exact=exact_reference))
        predictor_module.markov_maps = shared_chains(reference.transition.matrix)
        clicks, pred, exact_masks = [], np.zeros_like(gt), []
        for _ in range(n_clicks):
            clicks.append(next_click(gt, pred, clicks, ignore))
            pred = reference.predict([(x, y) for y, x, _ in clicks], [int(p) for _, _, p in clicks])
            exact_masks.append(pred)
        points = np.array([[x, y] for y, x, _ in clicks], dtype=float)
        exact_maps = [m.distance for m in reference.click_maps(points)]
        print(f"{stem} r={r} {source}", flush=True)
        for storage in storages:
            name, _, with_subspace = storage.partition("+")
            if name in ("16bit", "fp32"):  # the predictor's fast path (the fp32 matrix is the reference's: same chains)
                fast_cfg = M2N2Config(**source_cfg, dense_storage=name)
                other = PreparedImage(image, Transition.compact(bal, name), fast_cfg)
            else:
                other = PreparedImage(image, Transition.exact(rounded(bal, name)), cfg)
                other.subspace = slow_subspace(other.transition.matrix) if with_subspace == "sub" else None
            ious = [iou(other.predict([(x, y) for y, x, _ in clicks[:k]], [int(p) for _, _, p in clicks[:k]]),
                        exact_masks[k - 1]) for k in range(1, n_clicks + 1)]
            change = max(float(np.abs(m.distance - e).max()) for m, e in zip(other.click_maps(points), exact_maps))
            print(f"  {storage:8s} min IoU {min(ious):.4f}  max |ΔD| {change:.2e}  per click "
                  + " ".join(f"{v:.4f}" for v in ious), flush=True)

if __name__ == "__main__":
    main()
