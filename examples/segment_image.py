#!/usr/bin/env python3
"""Segment one image from clicks with the Python API, without Label Studio.

    python examples/segment_image.py photo.jpg --point 320,240 --point 40,30,- --out mask.png \\
        --overlay overlay.png --attention affinity

The same as `m2n2 segment ...`, spelled out: load the image, prepare it once (attention → transition matrix), then
answer each growing click set cheaply, as an annotator would click. Prints the foreground fraction after each click.
``--attention sd`` (the paper's backbone) downloads Stable Diffusion 2 on first use; ``affinity`` needs no weights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from m2n2_core.cli import add_model_arguments, config_from_args, parse_point  # noqa: E402
from m2n2_core.image_io import ImageError, load_image  # noqa: E402
from m2n2_core.overlay import draw_overlay  # noqa: E402
from m2n2_core.predictor import M2N2Predictor  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", help="image file")
    parser.add_argument("--point", "-p", type=parse_point, action="append", required=True, metavar="X,Y[,+|-]",
                        help="a click in pixels; '+' positive (default), '-' negative; repeat in click order")
    parser.add_argument("--out", "-o", required=True, help="mask PNG to write (0/255)")
    parser.add_argument("--overlay", help="overlay PNG to write")
    add_model_arguments(parser)
    args = parser.parse_args(argv)

    try:
        image = load_image(args.image)
        predictor = M2N2Predictor(config_from_args(args))
        predictor.set_image(image)
        points = [(x, y) for x, y, _ in args.point]
        labels = [label for _, _, label in args.point]
        for n in range(1, len(points) + 1):
            mask = predictor.predict(points[:n], labels[:n])
            print(f"{n} click(s): {mask.mean():.1%} of the image selected")
    except (ImageError, ValueError, RuntimeError) as exc:
        print(f"segment_image: {exc}", file=sys.stderr)
        return 2
    Image.fromarray(mask.astype(np.uint8) * 255).save(args.out)
    if args.overlay:
        Image.fromarray(draw_overlay(image, mask, points, labels)).save(args.overlay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
