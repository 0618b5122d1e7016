"""Argument types and arguments more than one command shares: each written once here.

    >>> size("180x240"), floats("0.5, 0.9"), ints("1,3"), key_value("size=[48, 64]")
    ((180, 240), (0.5, 0.9), (1, 3), ('size', [48, 64]))
    >>> positive_int("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: expected a whole number above 0, got '0'
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from ..data import build_dataset, eval_transform

__all__ = ["size", "floats", "ints", "positive_int", "key_value", "add_data_option", "eval_dataset", "MODEL_HELP",
           "add_convert_options", "convert_options_of"]

MODEL_HELP = ("a registered model ({}), an import path package.module:callable or a file path/to/file.py:callable "
              "(the callable returns an nn.Module; it may take num_classes)")


def size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``180x240``) as (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW in pixels, e.g. 180x240, got {text!r}")
    return int(parts[0]), int(parts[1])


def floats(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (empty items skipped)."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.5,0.9, got {text!r}") from None


def ints(text: str) -> tuple[int, ...]:
    """Comma-separated whole numbers (empty items skipped)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, e.g. 1,3, got {text!r}") from None


def positive_int(text: str) -> int:
    """A count: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as YAML (``length=512``, ``size=[120,160]``)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. length=512, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML ({exc})") from None


def add_data_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--data-option KEY=VALUE`` (repeatable): extra dataset arguments, collected as (key, value) pairs."""
    parser.add_argument("--data-option", action="append", default=[], type=key_value, metavar="KEY=VALUE", help=help)


def add_convert_options(parser: argparse.ArgumentParser) -> None:
    """How the model is converted: ``--backbone``, ``--leaf-module`` (repeatable), ``--output-key``, ``--cost``,
    ``--exit-feature``."""
    parser.add_argument("--backbone", help="the submodule that carries the exits (default: found from the model)")
    parser.add_argument("--leaf-module", action="append", default=[], metavar="NAME",
                        help="a submodule tracing keeps as one opaque step (code torch.fx cannot trace; repeatable)")
    parser.add_argument("--output-key", help="the key of the logits when the model returns a dict (default 'out')")
    parser.add_argument("--cost", choices=("flops", "latency"),
                        help="what exits are spread evenly over (default flops)")
    parser.add_argument("--exit-feature", choices=("latest", "highest-resolution"),
                        help="which live feature map an exit reads where several cross a cut (multi-branch models; "
                        "default latest)")


def convert_options_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``convert`` options :func:`add_convert_options`' arguments give (only those set)."""
    options = {"backbone": args.backbone, "leaf_modules": list(args.leaf_module) or None,
               "output_key": args.output_key, "cost": args.cost, "exit_feature": args.exit_feature}
    return {k: v for k, v in options.items() if v is not None}


def eval_dataset(args: argparse.Namespace) -> Any:
    """The evaluation dataset ``--data``, ``--data-root``, ``--split``, ``--size`` and ``--data-option`` name."""
    return build_dataset(args.data, root=args.data_root, split=args.split, transform=eval_transform(size=args.size),
                         **dict(args.data_option))
