"""The ``python -m mess_core`` command line: one sub-command per module, each adding its own parser and handler
(``add_parser(sub)`` sets ``run``); argument types they share are in :mod:`mess_core.cli.args`. The engine never
imports this package."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import MessError
from . import bench, cache, check_data, export, profile, search, study, train

__all__ = ["build_parser", "main", "COMMANDS"]

# in the order ``--help`` lists them
COMMANDS = (profile, train, check_data, cache, search, bench, study, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mess_core", description="MESS Explorer engine")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
