"""How far each way of running the Markov chain lands from exact arithmetic: arrival times against an fp64 chain on the
same matrix, for the clicks of a simulated annotator (5 RITM clicks on the fast path's masks).

    python benchmarks/chain_precision.py 64 person1,124080

Rows: "fp32 steps" (the exact path: dense fp32 p @ A, fp32 sums over blocks of rows added in fp64), "16-bit steps"
(the compiled 16-bit product, summed the same way) and "16-bit + subspace" (the chain's tail in the slow-mode
subspace, as the default runs it at r = 128). The first is compared with an fp64 chain on the fp32 matrix, the others
with an fp64 chain on the decoded 16-bit matrix, so the numbers show the arithmetic of each chain, not the rounding of
its storage.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from bench_click import load_sample

from m2n2_core import M2N2Config, packed
from m2n2_core.balancing import balance
from m2n2_core.evaluation.clicker import next_click
from m2n2_core.markov import click_grid_starts, markov_maps
from m2n2_core.predictor import PreparedImage
from m2n2_core.subspace import slow_subspace
from m2n2_core.synthetic import sd_like_attention
from m2n2_core.transition import Transition

CLICKS = 5


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit(__doc__)
    r, stems = int(args[0]), args[1].split(",")
    torch.set_num_threads(2)
    cfg = M2N2Config(attention_resolution=r, device="cpu")
    print("| image | chain | largest arrival-time difference from fp64 (steps) | latest arrival (steps) |\n|---|---|---|---|")
    for stem in stems:
        image, gt, ignore = load_sample(stem)
        balanced = balance(sd_like_attention(image, r), cfg.temperature, cfg.balancing_iterations)
        prepared = PreparedImage(image, Transition.compact(balanced), cfg)
        clicks, pred = [], np.zeros_like(gt)
        for _ in range(CLICKS):
            clicks.append(next_click(gt, pred, clicks, ignore))
            pred = prepared.predict([(x, y) for y, x, _ in clicks], [int(p) for _, _, p in clicks])
        starts = click_grid_starts([(x, y) for y, x, _ in clicks], image.shape[1], image.shape[0], r)
        steps = (cfg.tau, cfg.interpolate, cfg.max_iterations)
        fp32 = Transition.exact(balanced)
        codes = prepared.transition
        decoded = packed.decode(codes.matrix)
        runs = {"fp32 steps": (markov_maps(fp32, starts, *steps), balanced),
                "16-bit steps": (markov_maps(codes, starts, *steps), decoded),
                "16-bit + subspace": (markov_maps(codes, starts, *steps, subspace=slow_subspace(decoded)), decoded)}
        exact = {}
        for name, (arrival, matrix) in runs.items():
            key = id(matrix)
            if key not in exact:
                exact[key] = markov_maps(Transition.reference(matrix), starts, *steps)
            error = float((arrival.double() - exact[key]).abs().max())
            print(f"| {stem} | {name} | {error:.3f} | {float(exact[key].max()):.0f} |", flush=True)


if __name__ == "__main__":
    main()
