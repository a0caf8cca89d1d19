"""`m2n2 segment`: clicks on an image → mask PNG (+ overlay PNG). Registered into the `m2n2` command."""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Tuple

import numpy as np
from PIL import Image

from .config import DEFAULT_MODEL, M2N2Config
from .image_io import ImageError, load_image


def parse_point(text: str) -> Tuple[float, float, int]:
    """"X,Y" or "X,Y,+" (positive) / "X,Y,-" (negative) → (x, y, label)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"a point is X,Y or X,Y,+ or X,Y,- (got {text!r})")
    try:
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"point coordinates must be numbers (got {text!r})") from None
    sign = parts[2] if len(parts) == 3 else "+"
    if sign not in ("+", "-", "1", "0", "pos", "neg"):
        raise argparse.ArgumentTypeError(f"a point's label is + or - (got {sign!r} in {text!r})")
    return x, y, int(sign in ("+", "1", "pos"))


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose and size the attention source, shared by every subcommand that builds a predictor."""
    parser.add_argument("--attention", choices=("sd", "affinity"), default=M2N2Config.attention,
                        help="attention source: 'sd' (Stable Diffusion 2, the paper) or 'affinity' (weight-free)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id or local diffusers directory (default: %(default)s)")
    parser.add_argument("--attention-resolution", type=int, default=M2N2Config.attention_resolution, metavar="R",
                        help="attention grid side r (default: %(default)s)")
    parser.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--exact", action="store_true", help="use the direct dense reference method (slow)")


def config_from_args(args: argparse.Namespace) -> M2N2Config:
    return M2N2Config(attention=args.attention, model=args.model, attention_resolution=args.attention_resolution,
                      device=args.device, exact=args.exact)


def run_segment(args: argparse.Namespace) -> int:
    from .predictor import M2N2Predictor
    from .overlay import draw_overlay

    try:
        image = load_image(args.image)
    except ImageError as exc:
        print(f"m2n2 segment: {exc}", file=sys.stderr)
        return 2
    points: List[Tuple[float, float, int]] = args.point
    h, w = image.shape[:2]
    try:
        config = config_from_args(args)
        predictor = M2N2Predictor(config)
        t0 = time.perf_counter()
        predictor.set_image(image)
        t1 = time.perf_counter()
        mask = predictor.predict([(x, y) for x, y, _ in points], [lab for _, _, lab in points])
        t2 = time.perf_counter()
    except ValueError as exc:
        print(f"m2n2 segment: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # model loading and similar, with their own clear messages
        print(f"m2n2 segment: {exc}", file=sys.stderr)
        return 1
    try:
        Image.fromarray((mask * 255).astype(np.uint8)).save(args.out)
        print(f"mask: {args.out} ({w}×{h}, {mask.mean():.1%} foreground); image {t1 - t0:.2f} s, clicks {t2 - t1:.2f} s")
        if args.overlay:
            Image.fromarray(draw_overlay(image, mask, [(x, y) for x, y, _ in points],
                                         [lab for _, _, lab in points])).save(args.overlay)
            print(f"overlay: {args.overlay}")
    except (OSError, ValueError) as exc:  # missing directory, no permission, unknown file extension
        print(f"m2n2 segment: cannot write the output: {exc}", file=sys.stderr)
        return 2
    return 0


def register(subparsers) -> None:
    """Add the core's subcommands (`segment`, `eval`) to an argparse subparsers object."""
    seg = subparsers.add_parser("segment", help="segment an image from clicks; write the mask (and an overlay)")
    seg.add_argument("image", help="image file")
    seg.add_argument("--point", "-p", type=parse_point, action="append", required=True, metavar="X,Y[,+|-]",
                     help="a click in pixels; '+' positive (default), '-' negative; repeat for more clicks")
    seg.add_argument("--out", "-o", required=True, help="mask PNG to write (0/255)")
    seg.add_argument("--overlay", help="overlay PNG to write (mask, outline and clicks over the image)")
    add_model_arguments(seg)
    seg.set_defaults(func=run_segment)
    from .evaluation.cli import register as register_eval  # imported here: evaluation imports this module
    register_eval(subparsers)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="m2n2")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
