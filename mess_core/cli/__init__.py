"""The ``python -m mess_core`` command line: one sub-command per module, each adding its own parser and handler
(``add_parser(sub)`` sets ``run``); argument types they share are in :mod:`mess_core.cli.args`. The engine never
imports this package."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import MessError
from ..io import environment_fault
from . import bench, cache, check_data, drive, export, profile, search, study, train
from .args import Parser, check_outputs

__all__ = ["build_parser", "main", "COMMANDS"]

# in the order ``--help`` lists them
COMMANDS = (profile, train, check_data, cache, search, bench, study, export, drive)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m mess_core", description="MESS Explorer engine")
    parser.add_argument(
        "--debug", action="store_true", help="on failure, show the full Python traceback instead of a one-line message"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure ends as one line on stderr: exit status 2 for bad input (a :class:`MessError`,
    a bad argument), 1 for an unexpected error (a bug: rerun with ``--debug`` for the traceback); ``--debug``
    re-raises instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # a bad argument: one line on stderr, exit status 2 (see Parser)
    try:
        check_outputs(args)
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # our commands return their status: an exit from inside is a model's (or a library's)
        if args.debug:
            raise
        print(
            f"error: the model's code (or a library it calls) ended the program with sys.exit({exc.code!r}) "
            f"during `{args.command}`; a model must not call sys.exit() or exit(): remove that call",
            file=sys.stderr,
        )
        return 2
    except MessError as exc:
        if args.debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not bad input: say so and how to see the traceback
        if args.debug:
            raise
        # a full or read-only disk, a missing permission: the environment, not a bug
        fault = environment_fault(exc.filename or "output", exc) if isinstance(exc, OSError) else None
        if fault is not None:
            print(f"error: {_one_line(fault)}", file=sys.stderr)
            return 2
        print(
            f"error: unexpected {type(exc).__name__} in `{args.command}`: {_one_line(exc)}. This is a bug, not "
            "bad input: rerun with --debug (python -m mess_core --debug ...) for the traceback and report it",
            file=sys.stderr,
        )
        return 1
