"""Argument types and arguments more than one command shares: each written once here.

>>> size("180x240"), floats("0.5, 0.9"), ints("1,3"), key_value("size=[48, 64]")
((180, 240), (0.5, 0.9), (1, 3), ('size', [48, 64]))
>>> positive_int("0")
Traceback (most recent call last):
argparse.ArgumentTypeError: expected a whole number above 0, got '0'
>>> positive_float("1e-3"), fraction("1"), non_negative_int("0"), fractions("0.5,0.9"), odd_positive_int("3")
(0.001, 1.0, 0, (0.5, 0.9), 3)
>>> positive_float("nan")
Traceback (most recent call last):
argparse.ArgumentTypeError: expected a number above 0, got 'nan'
>>> fractions("0.5,2")
Traceback (most recent call last):
argparse.ArgumentTypeError: expected comma-separated numbers from 0 to 1, e.g. 0.5,0.9, got '0.5,2'
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, NoReturn, Sequence

import yaml

from ..data import build_dataset, eval_transform
from ..data.selection import SPLIT_SEPARATOR, parse_splits
from ..errors import MessError
from ..io import OutputError, output_target
from ..models.trust import CONSENT_FLAG
from ..train.distributed import device_problem

__all__ = [
    "Parser",
    "size",
    "floats",
    "fractions",
    "ints",
    "positive_int",
    "non_negative_int",
    "odd_positive_int",
    "positive_float",
    "non_negative_float",
    "side",
    "class_count",
    "fraction",
    "confidence_level",
    "device",
    "folder",
    "output_file",
    "key_value",
    "add_data_option",
    "add_trust",
    "declare_files",
    "check_outputs",
    "eval_dataset",
    "MODEL_HELP",
    "add_convert_options",
    "convert_options_of",
]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (which command, which argument, what it got) instead of a usage
    block; ``add_subparsers`` makes its sub-parsers of this class too (argparse's default ``parser_class`` is the
    parent's type)."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"error: {self.prog}: {text} (--help lists the arguments)\n")


def _number(
    text: str, *, whole: bool, low: float | None = None, above: bool = False, high: float | None = None, expected: str
) -> Any:
    """``text`` as a finite number (an int when ``whole``) from ``low`` (excluded when ``above``) to ``high``, or an
    ArgumentTypeError saying ``expected``."""
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    ok = (
        value is not None
        and math.isfinite(value)
        and (low is None or value > low or (not above and value == low))
        and (high is None or value <= high)
    )
    if not ok:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


MODEL_HELP = (
    "a registered model ({}), an import path package.module:callable or a file path/to/file.py:callable "
    "(the callable returns an nn.Module; it may take num_classes)"
)


MAX_SIDE = 16_384  # pixels a side, as a study's crop (mess_core.train.config.SIZE_LIMIT)
MAX_CLASSES = 4_096  # more than any segmentation dataset has; 10**8 would ask for terabytes of logits


def size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``180x240``) as (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and 0 < int(p) <= MAX_SIDE for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected HxW in pixels (1 to {MAX_SIDE:,} a side), e.g. 180x240, got {text!r}"
        )
    return int(parts[0]), int(parts[1])


def side(text: str) -> int:
    """One side of an image in pixels."""
    return _number(text, whole=True, low=1, high=MAX_SIDE, expected=f"a whole number of pixels from 1 to {MAX_SIDE:,}")


def class_count(text: str) -> int:
    """A number of classes."""
    return _number(text, whole=True, low=1, high=MAX_CLASSES, expected=f"a whole number from 1 to {MAX_CLASSES:,}")


def floats(text: str) -> tuple[float, ...]:
    """Comma-separated finite numbers (empty items skipped)."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = (math.nan,)
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 0.5,0.9, got {text!r}")
    return values


def fractions(text: str) -> tuple[float, ...]:
    """Comma-separated numbers from 0 to 1 (thresholds such as ``--th-pix``)."""
    try:
        values = floats(text)
    except argparse.ArgumentTypeError:
        values = (math.nan,)
    if not values or not all(0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers from 0 to 1, e.g. 0.5,0.9, got {text!r}")
    return values


def ints(text: str) -> tuple[int, ...]:
    """Comma-separated whole numbers (empty items skipped)."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, e.g. 1,3, got {text!r}") from None


def positive_int(text: str) -> int:
    """A count: a whole number above 0."""
    return _number(text, whole=True, low=0, above=True, expected="a whole number above 0")


def non_negative_int(text: str) -> int:
    """A whole number from 0 (a seed, a number of worker processes)."""
    return _number(text, whole=True, low=0, expected="a whole number from 0 up")


def odd_positive_int(text: str) -> int:
    """An odd whole number above 0 (a window with a centre pixel)."""
    value = _number(text, whole=True, low=0, above=True, expected="an odd whole number above 0, e.g. 3")
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd whole number above 0, e.g. 3, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0 (a learning rate, a temperature, a budget)."""
    return _number(text, whole=False, low=0, above=True, expected="a number above 0")


def non_negative_float(text: str) -> float:
    """A finite number from 0 (a weight decay, a jitter strength, an allowed drop)."""
    return _number(text, whole=False, low=0, expected="a number from 0 up")


def fraction(text: str) -> float:
    """A number from 0 to 1."""
    return _number(text, whole=False, low=0, high=1, expected="a number from 0 to 1")


def confidence_level(text: str) -> float:
    """A confidence level: a number from 0.5 up to (not including) 1."""
    expected = "a confidence level from 0.5 to below 1, e.g. 0.9"
    value = _number(text, whole=False, low=0.5, high=1.0, expected=expected)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def device(text: str) -> str:
    """A device PyTorch knows and this machine has (cuda without a GPU is refused now, not after loading)."""
    if problem := device_problem(text, fix="use --device cpu"):
        raise argparse.ArgumentTypeError(problem)
    return text


def folder(text: str) -> str:
    """A folder to write into: it may not exist yet, but it may not be a file."""
    try:
        if Path(text).exists() and not Path(text).is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; name a new or existing folder")
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte: say so instead of a traceback
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise argparse.ArgumentTypeError(f"{text[:120]!r}: cannot be used as a folder ({reason})") from None
    return text


def output_file(text: str) -> str:
    """A file to write: it may not exist yet, but it may not be a folder, a device or another special file."""
    try:
        output_target(text)
    except OutputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise argparse.ArgumentTypeError(f"{text[:120]!r}: cannot be written ({reason})") from None
    return text


def groups(text: str) -> tuple[str, ...]:
    """``0016E5,0001TP``: the groups (scenes) a selection keeps."""
    names = tuple(v.strip() for v in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected group names separated by commas, e.g. 0016E5,0001TP, got {text!r}")
    return names


def split_expression(text: str) -> str:
    """``train`` or pooled splits ``train+val``."""
    try:
        return SPLIT_SEPARATOR.join(parse_splits(text))
    except MessError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_selection(parser: argparse.ArgumentParser, *, default: str | None = "val", default_help: str = "") -> None:
    """``--split`` (pooled with '+') and ``--groups``: which images of the dataset a command reads."""
    parser.add_argument(
        "--split",
        default=default,
        type=split_expression,
        help=f"split, or splits pooled with '+' (train+val); default {default_help or default}",
    )
    parser.add_argument(
        "--groups",
        type=groups,
        default=(),
        metavar="G1,G2",
        help="keep only images of these groups (scenes: CamVid's sequence, Cityscapes' city)",
    )


def declare_files(parser: argparse.ArgumentParser, *, reads: Sequence[str], writes: Sequence[str]) -> None:
    """Name the arguments (their ``dest``) a command reads files or folders from and those it writes; before the
    command runs, :func:`check_outputs` refuses an output that is one of its inputs or lies inside or around one."""
    parser.set_defaults(reads=tuple(reads), writes=tuple(writes))


def _paths(value: Any, *, model: bool = False) -> list[Path]:
    """The paths an argument's value names: a path or a list of them; for ``model``, only a model named by file
    (``net.py:Net``: a registered name or an import path is no file)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    paths = []
    for v in values:
        if not isinstance(v, str) or not v:
            continue
        where, sep, attr = v.rpartition(":")
        if sep and where.endswith(".py") and attr.isidentifier():
            paths.append(Path(where))
        elif not model:
            paths.append(Path(v))
    return paths


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return path.absolute()


def _flag(name: str) -> str:
    """How an argument is spelled on the command line (positional ones by their name)."""
    return name if name in ("study", "config") else "--" + name.replace("_", "-")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse to run a command whose output would overwrite one of its inputs: the same file (through links too), an
    output inside an input folder (a study), or an output folder that holds an input."""
    reads = [
        (name, p)
        for name in getattr(args, "reads", ())
        for p in _paths(getattr(args, name, None), model=name == "model")
    ]
    for out_name in getattr(args, "writes", ()):
        for out in _paths(getattr(args, out_name, None)):
            o = _real(out)
            for in_name, given in reads:
                i = _real(given)
                if o == i or i in o.parents or o in i.parents:
                    how = "is" if o == i else ("lies inside" if i in o.parents else "holds")
                    raise MessError(
                        f"{_flag(out_name)} {out} {how} {_flag(in_name)} {given}: a command never writes "
                        f"over or into what it reads; write {_flag(out_name)} somewhere else"
                    )


def add_trust(parser: argparse.ArgumentParser) -> None:
    """``--trust-model-code``: consent to build a recorded model that runs Python this machine did not record."""
    parser.add_argument(
        CONSENT_FLAG,
        action="store_true",
        dest="trust_model_code",
        help="build the model even when its recorded source (an import path or a model file, in a "
        "study or weights file made elsewhere) runs Python this machine did not record; read that "
        "code first: it runs with your permissions",
    )


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
    parser.add_argument(
        "--leaf-module",
        action="append",
        default=[],
        metavar="NAME",
        help="a submodule tracing keeps as one opaque step (code torch.fx cannot trace; repeatable)",
    )
    parser.add_argument("--output-key", help="the key of the logits when the model returns a dict (default 'out')")
    parser.add_argument(
        "--cost", choices=("flops", "latency"), help="what exits are spread evenly over (default flops)"
    )
    parser.add_argument(
        "--exit-feature",
        choices=("latest", "highest-resolution"),
        help="which live feature map an exit reads where several cross a cut (multi-branch models; default latest)",
    )


def convert_options_of(args: argparse.Namespace) -> dict[str, Any]:
    """The ``convert`` options :func:`add_convert_options`' arguments give (only those set)."""
    options = {
        "backbone": args.backbone,
        "leaf_modules": list(args.leaf_module) or None,
        "output_key": args.output_key,
        "cost": args.cost,
        "exit_feature": args.exit_feature,
    }
    return {k: v for k, v in options.items() if v is not None}


def eval_dataset(args: argparse.Namespace) -> Any:
    """The evaluation dataset ``--data``, ``--data-root``, ``--split``, ``--size`` and ``--data-option`` name."""
    return build_dataset(
        args.data,
        root=args.data_root,
        split=args.split,
        groups=args.groups,
        transform=eval_transform(size=args.size),
        **dict(args.data_option),
    )
