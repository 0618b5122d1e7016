"""Check settings against their type annotations before any work starts: one checker for every settings dataclass
(:class:`~mess_core.train.TrainConfig`, :class:`~mess_core.study.StudyConfig`) and for keyword arguments (dataset
options), so that ``batch_size: 1.5`` in a YAML file is refused when the file is read, not hours into training.

    >>> from dataclasses import dataclass
    >>> from mess_core.errors import MessError
    >>> @dataclass
    ... class Demo:
    ...     batch: int = 8
    ...     lr: float | None = None
    ...     crop: tuple[int, int] = (96, 128)
    ...     names: tuple[str, ...] = ()
    >>> check_fields(Demo(lr=1), where="demo.yaml", error=MessError)  # an int is a fine float
    >>> check_fields(Demo(batch=1.5), where="demo.yaml", error=MessError)
    Traceback (most recent call last):
    mess_core.errors.MessError: demo.yaml: batch: expected a whole number, got 1.5
    >>> check_fields(Demo(lr="fast"), where="demo.yaml", error=MessError)
    Traceback (most recent call last):
    mess_core.errors.MessError: demo.yaml: lr: expected a number or null, got 'fast'
    >>> check_fields(Demo(crop=(96,)), where="demo.yaml", error=MessError)
    Traceback (most recent call last):
    mess_core.errors.MessError: demo.yaml: crop: expected a list of 2 whole numbers, got (96,)
    >>> check_value(float("nan"), float, where="demo.yaml", name="lr", error=MessError)
    Traceback (most recent call last):
    mess_core.errors.MessError: demo.yaml: lr: expected a finite number, got nan
    >>> check_value([True], tuple[int, ...], where="cli", name="prune_at", error=MessError)
    Traceback (most recent call last):
    mess_core.errors.MessError: cli: prune_at: expected a list of whole numbers, got [True]
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Callable

__all__ = ["check_fields", "check_arguments", "check_value", "describe"]


def describe(annotation: Any) -> str | None:
    """What ``annotation`` asks for, in words (None: a type this checker does not check)."""
    if annotation is Any:
        return "anything"
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "text"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        words = [describe(a) for a in args if a is not type(None)]
        if None in words:
            return None
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            inner = describe(args[0])
            return None if inner is None else f"a list of {_plural(inner)}"
        inner = {describe(a) for a in args}
        return None if None in inner or len(inner) != 1 else f"a list of {len(args)} {_plural(inner.pop())}"
    if origin in (dict, Mapping) or annotation is dict:
        return "a mapping"
    return None


def _plural(words: str) -> str:
    return {
        "a whole number": "whole numbers",
        "a number": "numbers",
        "text": "texts",
        "true or false": "true/false values",
    }.get(words, words)


def _fits(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        # True is an int to Python, but 'batch_size: true' is a mistake, not a batch of 1
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        # an int is a fine number (lr: 1); nan and inf are not (they poison training silently)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if annotation is type(None):
        return value is None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, a) for a in args)
    if origin is tuple:
        # YAML gives lists where the dataclass keeps tuples: both are accepted
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if origin in (dict, Mapping) or annotation is dict:
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
    return True  # a type this checker does not know: the code using it checks it


def check_value(value: Any, annotation: Any, *, where: str, name: str, error: Callable[[str], Exception]) -> None:
    """Raise ``error`` naming ``where`` (when not empty), ``name``, the value and what was expected unless ``value``
    fits ``annotation``."""
    if _fits(value, annotation):
        return
    expected = describe(annotation) or str(annotation)
    if isinstance(value, float) and not math.isfinite(value):
        expected = expected.replace("a number", "a finite number")
    raise error(
        f"{where}: {name}: expected {expected}, got {value!r}"
        if where
        else f"{name}: expected {expected}, got {value!r}"
    )


# the largest whole number any setting takes unless its class declares less (LIMITS): beyond it, torch and numpy
# overflow (seed: 2**80) instead of saying what is wrong
MAX_WHOLE = 2**63 - 1


def check_fields(obj: Any, *, where: str, error: Callable[[str], Exception]) -> None:
    """Check every field of dataclass instance ``obj`` against its annotation (see :func:`check_value`), and numbers
    against the largest value the class allows (its ``LIMITS``: field name to maximum, for a number or each number of
    a list), so that ``epochs: 1e20`` or ``crop: [1000000000, 1000000000]`` is refused when the file is read."""
    hints = typing.get_type_hints(type(obj))
    limits = getattr(type(obj), "LIMITS", {})
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        check_value(value, hints[f.name], where=where, name=f.name, error=error)
        most = limits.get(f.name, MAX_WHOLE)
        many = isinstance(value, (list, tuple))
        if any(
            isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) > most
            for v in (value if many else [value])
        ):
            prefix = f"{where}: " if where else ""
            shown = list(value) if many else value
            raise error(
                f"{prefix}{f.name}: {shown!r} is beyond what this setting allows (at most {most:,}"
                f"{' each' if many else ''})"
            )


def check_arguments(
    func: Callable[..., Any], values: Mapping[str, Any], *, where: str, error: Callable[[str], Exception]
) -> None:
    """Check keyword arguments ``values`` against the annotations of ``func`` (a class: its ``__init__``); names it
    does not annotate are left to it."""
    target = func.__init__ if inspect.isclass(func) else func
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # annotations that do not resolve here: nothing to check against
        return
    for name, value in values.items():
        if name in hints:
            check_value(value, hints[name], where=where, name=name, error=error)
