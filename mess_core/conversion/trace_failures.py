"""Trace failure diagnosis: what made torch.fx fail, in words, and how to rewrite the line or work around it.

:func:`explain_trace_failures` turns every failure that tracing met (each failing module kept opaque in turn to find
the next, see :func:`mess_core.conversion.tracing.trace`) into one :class:`~mess_core.errors.TraceFailure` naming
each module and source line, its cause (Python control flow on tensor values, an assignment into part of a traced
tensor, a tensor constructor given traced sizes) and the ``leaf_modules=`` that keeps the failing modules opaque.
"""

from __future__ import annotations

import re
from typing import Sequence

from torch import fx, nn

from ..errors import TraceFailure

__all__ = ["explain_trace_failures"]


# The tracer raises it; its class name shows in the error message, so it keeps its name.
class _DataDependentControlFlow(fx.proxy.TraceError):
    pass


_CONSTRUCTOR = re.compile(r"torch\.(zeros|ones|empty|full|rand|randn|randint|normal|eye|arange|linspace|tensor)\(")


def _cause_and_fix(exc: Exception, where: str) -> tuple[str, str]:
    """What went wrong, in words, and how to rewrite the line."""
    if isinstance(exc, _DataDependentControlFlow):
        return "Python control flow on tensor values", "rewrite that line without Python control flow on tensor values"
    if isinstance(exc, TypeError) and "does not support item assignment" in str(exc):
        return (
            "an assignment into part of a traced tensor (y[...] = value), which torch.fx cannot record",
            "write it without assigning into the tensor, e.g. y = torch.cat([...], 1), y = torch.where(mask, value, "
            "y) or y = y.index_fill(1, index, value)",
        )
    if isinstance(exc, TypeError) and ("Proxy" in str(exc) or _CONSTRUCTOR.search(where)):
        return (
            "a tensor constructor (torch.zeros, torch.rand, ...) was given sizes read from a traced tensor's shape "
            "as separate arguments, which torch.fx cannot pass through",
            "build the tensor from the traced one instead, e.g. x.new_zeros((n, c, h, w)) or "
            "torch.zeros_like(...), or pass the sizes as one tuple: torch.zeros(x.shape)",
        )
    return "code torch.fx cannot trace", "rewrite that line so that torch.fx can trace it"


def explain_trace_failures(model: nn.Module, failures: Sequence[tuple[Exception, str]]) -> TraceFailure:
    parts, paths, fixes = [], [], []
    for exc, where in failures:
        module_path, module_type = getattr(exc, "_mess_module", ("", type(model).__name__))
        shown = f"in module '{module_path}' ({module_type})" if module_path else f"in {module_type}.forward itself"
        cause, fix = _cause_and_fix(exc, where)
        parts.append(f"{shown} at {where}: {type(exc).__name__}: {exc} (cause: {cause})")
        if module_path:
            paths.append(module_path)
        if fix not in fixes:
            fixes.append(fix)
    if paths:
        hint = (
            f"pass leaf_modules={paths!r} to convert() to keep {'that module' if len(paths) == 1 else 'those modules'} "
            "as one opaque step (no exit can be placed inside)"
        )
    else:
        hint = "wrap the offending code in a submodule and pass its name in leaf_modules"
    if paths and len(paths) < len(failures):
        hint += "; code in the model's own forward cannot be kept opaque, so wrap it in a submodule first"
    head = (
        "torch.fx could not trace the model: "
        if len(parts) == 1
        else (f"torch.fx could not trace the model in {len(parts)} places: ")
    )
    body = parts[0] if len(parts) == 1 else "; ".join(f"({i}) {p}" for i, p in enumerate(parts, start=1))
    return TraceFailure(_plain(f"{head}{body}. To work around it, {hint}, or {'; or '.join(fixes)}."))


def _plain(text: str) -> str:
    """torch.fx's own words for the containers it records (``a immutable_list``) in the user's words."""
    return (
        re.sub(r"\ba immutable_(list|dict)\b", r"a \1", text)
        .replace("immutable_list", "list")
        .replace("immutable_dict", "dict")
    )
