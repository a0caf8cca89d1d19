"""`m2n2 eval`: NoC@85/90/95, failures and mIoU-per-click of M2N2 and classic baselines on a dataset folder."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import List

from ..cli import add_model_arguments, config_from_args
from ..config import M2N2Config
from ..image_io import ImageError
from .baselines import METHODS
from .clicker import PROTOCOLS
from .datasets import LAYOUTS, Dataset, DatasetError

_TUNABLE = {f.name: f for f in dataclasses.fields(M2N2Config)}


def _methods(text: str) -> List[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"methods are a comma-separated list of {', '.join(METHODS)} (got {text!r})")
    return list(dict.fromkeys(names))


def _setting(text: str):
    """"field=value" for a scalar M2N2Config field, the value parsed with that field's default's type."""
    key, sep, value = text.partition("=")
    field = _TUNABLE.get(key.strip())
    if not sep or field is None:
        raise argparse.ArgumentTypeError(f"--set takes FIELD=VALUE with a field of M2N2Config (got {text!r})")
    kind = type(field.default)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return key.strip(), value.lower() in ("true", "1")
        if kind in (int, float, str):
            return key.strip(), kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {key}: {value!r} is not a valid {kind.__name__}") from None
    raise argparse.ArgumentTypeError(f"--set cannot change {key} (not a number, flag or string)")


def run_eval(args: argparse.Namespace) -> int:
    from .runner import run

    try:
        config = config_from_args(args).replace(**dict(args.set or []))
        dataset = Dataset(args.dataset, args.root, args.limit, args.skip)
        summaries = run(args.method, dataset, config, args.out, args.protocol, args.max_clicks)
    except (DatasetError, ImageError, ValueError) as exc:
        print(f"m2n2 eval: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. the SD model cannot be loaded; its message says why
        print(f"m2n2 eval: {exc}", file=sys.stderr)
        return 1
    print(f"{'method':<16}{'NoC@85':>8}{'NoC@90':>8}{'NoC@95':>8}{'NoF@90':>8}{'mIoU@1':>8}{'s/click':>9}")
    for s in summaries:
        print(f"{s['method']:<16}{s['noc85']:>8.2f}{s['noc90']:>8.2f}{s['noc95']:>8.2f}{s['nof']:>8d}"
              f"{s['miou'][0]:>8.3f}{s['seconds_per_click']:>9.3f}")
    print(f"wrote {args.out}/summary.json, per_sample.csv, miou.png ({summaries[0]['count']} images, "
          f"{args.protocol} clicker, {args.max_clicks} clicks)")
    return 0


def register(subparsers) -> None:
    """Add the `eval` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("eval", help="NoC evaluation of M2N2 / GrabCut / random walker on a dataset",
                              description=__doc__)
    p.add_argument("--dataset", required=True, choices=tuple(LAYOUTS),
                   help="folder layout: grabcut (data_GT/, boundary_GT/), davis (img/, gt/), "
                        "berkeley (images/, masks/, 128 = ignore), folder (images/, masks/)")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--method", type=_methods, default=["m2n2"], metavar="M[,M...]",
                   help=f"one or more of {', '.join(METHODS)}, comma-separated (default: m2n2)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="ritm",
                   help="clicker: ritm (standard, default) or authors (merged error mask, 128 band = object)")
    p.add_argument("--max-clicks", type=int, default=20, help="clicks per image (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (sorted by name)")
    p.add_argument("--skip", type=int, default=0, metavar="N",
                   help="leave out the first N images (sorted by name), e.g. to split a run across processes")
    p.add_argument("--set", type=_setting, action="append", metavar="FIELD=VALUE",
                   help="override an M2N2Config field, e.g. --set affinity_sigma_color=0.08 (repeatable)")
    p.add_argument("--out", required=True, help="output folder (summary.json, per_sample.csv, miou.png)")
    add_model_arguments(p)
    p.set_defaults(func=run_eval)


def main(argv=None) -> int:
    """`python -m m2n2_core.evaluation.cli ARGS` = `m2n2 eval ARGS`."""
    from ..cli import main as m2n2_main

    args = list(sys.argv[1:] if argv is None else argv)
    return m2n2_main(args if args[:1] == ["eval"] else ["eval", *args])


if __name__ == "__main__":
    sys.exit(main())
