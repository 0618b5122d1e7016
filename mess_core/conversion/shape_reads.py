"""Shape metadata in a traced graph: which values are metadata, and reads of a tensor's metadata moved up to it.

Metadata (shapes, numbers, None, dtypes, devices) costs nothing to keep alive, unlike the tensor it was read from.
Reads of ``x.shape`` and ``x.size()``, and arithmetic or indexing on such reads alone, are moved up to just after the
tensor they read, so that a cut carries the shape, not the tensor (see :func:`hoist_shape_reads`).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx

__all__ = ["is_metadata", "hoist_shape_reads"]


def is_metadata(value: Any) -> bool:
    """Whether ``value`` is metadata: None, a number, a string, a shape, a dtype, a device, or a tuple or list of
    those."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Size, torch.dtype, torch.device)):
        return True
    if isinstance(value, (tuple, list)):
        return all(is_metadata(v) for v in value)
    return False


_SHAPE_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device", "is_cuda"})
_SHAPE_METHODS = frozenset({"size", "dim", "numel", "nelement", "get_device"})
_METADATA_FUNCTIONS = frozenset(
    {
        operator.getitem,
        operator.add,
        operator.sub,
        operator.mul,
        operator.floordiv,
        operator.truediv,
        operator.mod,
        operator.neg,
        len,
        int,
    }
)


def hoist_shape_reads(graph: fx.Graph, values: dict[fx.Node, Any]) -> frozenset[str]:
    """Move every read of a tensor's metadata (``x.shape``, ``x.size()``, ...), and arithmetic or indexing on such
    reads alone, up to just after the values it needs. Returns the names of the nodes moved or eligible.

    fx records ``x.shape`` where it is used: ``F.interpolate(y, size=x.shape[-2:])`` at the end of forward would keep
    the input ``x`` live across every cut, and every stage would carry the image. Read at once, only the (small)
    shape crosses the cuts. These reads are pure, so moving them up changes no result.
    """
    hoisted: set[fx.Node] = set()
    for n in list(graph.nodes):
        inputs = n.all_input_nodes
        if not inputs or not is_metadata(values.get(n)):
            continue
        shape_read = isinstance(values.get(inputs[0]), torch.Tensor) and (
            (n.op == "call_function" and n.target is getattr and len(n.args) == 2 and n.args[1] in _SHAPE_ATTRIBUTES)
            or (n.op == "call_method" and n.target in _SHAPE_METHODS)
        )
        derived = n.op == "call_function" and n.target in _METADATA_FUNCTIONS and all(a in hoisted for a in inputs)
        if not (shape_read or derived):
            continue
        position = {m: i for i, m in enumerate(graph.nodes)}
        anchor = max(inputs, key=position.__getitem__)
        while anchor.next.op == "placeholder":
            anchor = anchor.next
        while anchor.next in hoisted and anchor.next is not n:
            anchor = anchor.next
        if anchor.next is not n:
            anchor.append(n)
        hoisted.add(n)
    return frozenset(n.name for n in hoisted)
