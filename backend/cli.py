"""The ``m2n2`` console command: ``serve`` (this package) plus the core's subcommands (``segment``, ``eval``...)."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from m2n2_core.cli import register as register_core

from . import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2n2", description="M2N2 click-to-segment: Label Studio backend and tools")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.register(subparsers)
    register_core(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
