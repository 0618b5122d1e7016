"""Graph cutting: trace a model with torch.fx, find where its execution can be cut, and split it into stages.

Tracing carries the concrete values of the example input alongside the symbolic ones (a "concrete" tracer):

* Python control flow on *shapes* (``if h % 32 != 0: raise ...``, as segmentation_models_pytorch does) is
  specialised to the branch the example takes, and a guard node is left in the graph that raises
  :class:`~mess_core.errors.GuardFailure` if a later input would take the other branch. The graph never silently
  computes something the model would not.
* Python control flow on tensor *values* (``if x.max() > 0``) cannot be captured by a graph and is refused with a
  message naming the module and the source line.
* Reads of ``x.shape`` are metadata: they are moved up to just after the tensor they read, so the graph keeps the
  (small) shape value alive, not the tensor (``F.interpolate(y, size=x.shape[-2:])`` at the end of forward hands
  on the input's size across the cuts, not the image).

A *cut point* is a position in topological order where execution can stop and resume later: everything computed
before it that is used after it (the *live set*) is known, and consists of tensors and shape metadata only. Cuts are
only placed between blocks: a cut inside a call of a module that is not a plain container (``nn.Sequential``,
``nn.ModuleList``, ``nn.ModuleDict`` or the backbone itself) is not a cut point, so exits never split a residual
block from its skip connection. Models with skip connections (U-Net, FPN, DeepLabV3+) carry several live tensors
across their cut points; the exit attaches to the most recent 4-D feature map of the live set, or, with
``exit_feature="highest-resolution"`` (for multi-branch backbones such as HRNet), to the one with the most pixels
(ties: most channels, then most recent).
"""

from __future__ import annotations

import inspect
import math
import operator
import os
import re
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn
from torch.fx.node import map_aggregate, map_arg

from ..errors import GuardFailure, TraceFailure
from ..timelimit import TimeLimitExceeded
from .profiling import evaluating

__all__ = [
    "ValueInfo",
    "TracedModel",
    "CutPoint",
    "trace",
    "find_cut_points",
    "region_span",
    "split",
    "shape_guard",
]

# Classes exported by torchvision.ops are kept as single graph nodes (as torchvision's own feature extractor does):
# Conv2dNormActivation, SqueezeExcitation, FrozenBatchNorm2d, StochasticDepth, ... are units, never cut inside.
TORCHVISION_LEAF_MODULES: tuple[type, ...] = tuple(
    obj for obj in vars(torchvision.ops).values() if isinstance(obj, type) and issubclass(obj, nn.Module)
)

_TORCH_DIR = os.path.dirname(torch.__file__)
_THIS_FILE = os.path.abspath(__file__)


@dataclass(frozen=True)
class ValueInfo:
    """What a graph node produced on the example input.

    ``kind`` is ``"tensor"``, ``"meta"`` (shapes, numbers, None: metadata that costs nothing to keep),
    ``"tensors"`` (a tuple or list of tensors and metadata) or ``"other"`` (anything else: dicts, objects).
    """

    kind: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None

    @property
    def is_feature_map(self) -> bool:
        return self.kind == "tensor" and self.shape is not None and len(self.shape) == 4


def _is_metadata(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, torch.Size, torch.dtype, torch.device)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_metadata(v) for v in value)
    return False


def describe(value: Any) -> ValueInfo:
    if isinstance(value, torch.Tensor):
        return ValueInfo("tensor", tuple(value.shape), str(value.dtype).replace("torch.", ""))
    if _is_metadata(value):
        return ValueInfo("meta")
    if isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) or _is_metadata(v) for v in value):
        return ValueInfo("tensors")
    return ValueInfo("other")


def shape_guard(value: Any, expected: bool, where: str) -> None:
    """Runtime check left in the graph where tracing specialised Python control flow on a shape."""
    if bool(value) != expected:
        raise GuardFailure(
            f"this input takes a different branch at {where} than the example input the network was converted "
            f"with (the condition was {expected} there). Convert the model with an example input of this size, "
            f"or make that code independent of the input size."
        )


class _DataDependentControlFlow(fx.proxy.TraceError):
    pass


class _ConcreteTracer(fx.Tracer):
    """An fx tracer that also computes every node's value on the example input (see the module docstring)."""

    def __init__(self, example: torch.Tensor, leaf_types: tuple[type, ...], leaf_names: frozenset[str]):
        super().__init__(autowrap_modules=(math, torchvision.ops))
        self.example = example
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names
        self.values: dict[fx.Node, Any] = {}
        self.specialisations: list[str] = []
        self._placeholders = 0
        self._concrete = False

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):
        if self._concrete:  # computing a leaf module's value: run it for real, record nothing
            return forward(*args, **kwargs)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception as exc:  # remember the innermost module only
            if not hasattr(exc, "_mess_module"):
                try:
                    path = self.path_of_module(m)
                except NameError:
                    path = f"<{type(m).__name__} not registered as a submodule>"
                exc._mess_module = (path, type(m).__name__)
            raise

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if self._concrete:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        self.values[node] = self._compute(node)
        return node

    def _compute(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            self._placeholders += 1
            if self._placeholders == 1:
                return self.example
            if node.args:  # a further argument of forward() with a default value
                return node.args[0]
            raise TraceFailure(
                f"the model's forward() takes more than one input (argument '{node.target}'); mess_core converts "
                "models with a single image input. Wrap the model in a module whose forward(x) supplies the rest."
            )
        args = map_arg(node.args, self.values.__getitem__)
        kwargs = map_arg(node.kwargs, self.values.__getitem__)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            self_obj, *rest = args
            return getattr(self_obj, node.target)(*rest, **kwargs)
        if node.op == "call_module":
            # fx patches Module.__call__ and __getattr__ while tracing; in concrete mode they pass straight through
            self._concrete = True
            try:
                return self.root.get_submodule(node.target)(*args, **kwargs)
            finally:
                self._concrete = False
        if node.op == "get_attr":
            # fx's patched Module.__getattr__ would turn this lookup into another get_attr node, endlessly
            self._concrete = True
            try:
                obj: Any = self.root
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                return obj
            finally:
                self._concrete = False
        return None  # the output node

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = self.values[obj.node]
        where = _user_location(traceback.extract_stack())
        if isinstance(value, torch.Tensor):
            raise _DataDependentControlFlow(
                "Python control flow depends on the values of a tensor, which a static graph cannot capture"
            )
        result = bool(value)
        self.create_proxy("call_function", shape_guard, (obj, result, where), {})
        self.specialisations.append(f"{where}: condition on a shape fixed to {result}")
        return result

    def iter(self, obj: fx.Proxy) -> Iterable:
        value = self.values[obj.node]
        if isinstance(value, torch.Tensor):
            raise _DataDependentControlFlow("iterating over a tensor cannot be captured in a static graph")
        return iter([obj[i] for i in range(len(value))])


def _user_location(frames: Sequence[traceback.FrameSummary]) -> str:
    """The innermost frame outside torch and this file: the user's (or library's) line that tracing stopped on."""
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if not path.startswith(_TORCH_DIR) and path != _THIS_FILE:
            return f"{frame.filename}:{frame.lineno} `{(frame.line or '').strip()}`"
    return "<unknown location>"


@dataclass
class TracedModel:
    """A traced model: its graph module, what every node produced, and which module calls each node belongs to."""

    graph_module: fx.GraphModule
    nodes: list[fx.Node]
    info: dict[str, ValueInfo]
    # per node: the chain of module *calls* it was created in, outermost first, as (call key, qualified name, type)
    module_calls: dict[str, tuple[tuple[str, str, type], ...]]
    specialisations: list[str]
    output: Any
    # shape reads moved up to just after the tensor they read (see _hoist_shape_reads): never a cut of their own
    hoisted: frozenset[str] = frozenset()
    # modules kept opaque because their code differs in training mode (see trace())
    training_leaves: tuple[str, ...] = ()

    def index(self, name: str) -> int:
        for i, n in enumerate(self.nodes):
            if n.name == name:
                return i
        raise KeyError(name)


def trace(
    model: nn.Module,
    example: torch.Tensor,
    *,
    leaf_modules: Iterable[str | type] = (),
) -> TracedModel:
    """Trace ``model`` on ``example`` (in eval mode, without gradients) into an fx graph.

    ``leaf_modules`` lists module classes or qualified names to keep as single opaque nodes (exits are never placed
    inside them); use it for submodules FX cannot trace. When tracing fails, every module that fails is reported
    in one message (each failing module is kept opaque in turn to find the next).

    The model is traced a second time with its modules in training mode. Where that graph differs from the eval
    graph (``if self.training:``, ``F.dropout(x, p, training=self.training)``, a drop-path helper), the module
    whose code differs is kept as a leaf, so it runs its own Python and trains exactly as in the original; its name
    is listed in :attr:`TracedModel.training_leaves`. Code in the model's own forward that depends on the mode is
    refused, since no submodule can hold it.
    """
    leaf_types = TORCHVISION_LEAF_MODULES + tuple(m for m in leaf_modules if isinstance(m, type))
    leaf_names = frozenset(m for m in leaf_modules if isinstance(m, str))
    missing = [n for n in leaf_names if n not in dict(model.named_modules())]
    if missing:
        raise TraceFailure(f"leaf_modules names {missing} are not submodules of {type(model).__name__}")
    training_leaves: list[str] = []
    for _ in range(len(list(model.modules())) + 1):
        names = leaf_names | frozenset(training_leaves)
        tracer, graph = _trace_reporting_all(model, example, leaf_types, names)
        moded = _mode_dependent_module(model, example, leaf_types, names, graph)
        if moded is None:
            break
        training_leaves.append(moded)
    _fix_defaults(graph)
    gm = fx.GraphModule(tracer.root, graph, class_name=type(model).__name__ + "Traced")
    hoisted = _hoist_shape_reads(gm.graph, tracer.values)
    gm.recompile()
    nodes = list(gm.graph.nodes)
    info = {n.name: describe(tracer.values.get(n)) for n in nodes if n.op != "output"}
    output_node = nodes[-1]
    output = map_aggregate(output_node.args[0], lambda a: tracer.values[a] if isinstance(a, fx.Node) else a)
    calls = {}
    for n in nodes:
        stack = n.meta.get("nn_module_stack", {})
        chain = tuple((key, qual, typ) for key, (qual, typ) in stack.items())
        if n.op == "call_module" and chain and chain[-1][1] == n.target:
            chain = chain[:-1]  # a leaf module's own call is the node itself, not something it is inside
        calls[n.name] = chain
    return TracedModel(gm, nodes, info, calls, tracer.specialisations, output, hoisted, tuple(training_leaves))


def _fix_defaults(graph: fx.Graph) -> None:
    """Turn the forward's further arguments (``return_aux=False``) into the constants they default to: the network
    takes one image batch, and the stages must not ask for an argument nobody passes."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node in placeholders[1:]:
        default = node.args[0] if node.args else None
        for user in list(node.users):
            user.args = map_arg(user.args, lambda a, node=node, default=default: default if a is node else a)
            user.kwargs = map_arg(user.kwargs, lambda a, node=node, default=default: default if a is node else a)
        graph.erase_node(node)


def _trace_once(
    model: nn.Module,
    example: torch.Tensor,
    leaf_types: tuple[type, ...],
    leaf_names: frozenset[str],
    *,
    training: bool = False,
) -> tuple[_ConcreteTracer, fx.Graph]:
    """One trace without gradients, leaving the model's modes, buffers and the random state as they were.

    ``training=True`` puts every traced (non-leaf) module in training mode and every leaf in eval mode: the graph
    only depends on the traced modules' Python, and leaves such as BatchNorm must not see a batch of one.
    """
    tracer = _ConcreteTracer(example, leaf_types, leaf_names)
    tracer.record_stack_traces = True
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [example.device.index or 0] if example.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            for name, m in model.named_modules():
                m.training = training and not tracer.is_leaf_module(m, name)
            return tracer, tracer.trace(model)
    finally:
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def _trace_reporting_all(
    model: nn.Module, example: torch.Tensor, leaf_types: tuple[type, ...], leaf_names: frozenset[str]
) -> tuple[_ConcreteTracer, fx.Graph]:
    """Trace in eval mode; on failure keep tracing with each failing module as a leaf to report them all at once."""
    failures: list[tuple[Exception, str]] = []
    names = leaf_names
    while True:
        try:
            result = _trace_once(model, example, leaf_types, names)
        except (TraceFailure, TimeLimitExceeded):
            raise
        except Exception as exc:
            if not failures:
                try:
                    with evaluating(model):
                        model(example)
                except Exception as plain:
                    raise TraceFailure(
                        f"the model fails on example_input {tuple(example.shape)} even without tracing: "
                        f"{type(plain).__name__}: {plain}. Give convert() an input the model accepts."
                    ) from plain
            path = getattr(exc, "_mess_module", ("", ""))[0]
            failures.append((exc, _user_location(traceback.extract_tb(exc.__traceback__))))
            if not path or path in names:
                break
            names = names | {path}
            continue
        if not failures:
            return result
        break
    raise _explain_trace_failures(model, failures) from failures[0][0]


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


def _explain_trace_failures(model: nn.Module, failures: Sequence[tuple[Exception, str]]) -> TraceFailure:
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


def _signature(nodes: Sequence[fx.Node]) -> list[tuple]:
    index = {n: i for i, n in enumerate(nodes)}

    def norm(a: Any) -> Any:
        if isinstance(a, fx.Node):
            return ("node", index.get(a))
        if isinstance(a, (tuple, list)):
            return (type(a).__name__, tuple(norm(v) for v in a))
        if isinstance(a, slice):  # y[:, :, :h, :w] holds nodes inside its slices: compare them by position too
            return ("slice", norm(a.start), norm(a.stop), norm(a.step))
        if isinstance(a, dict):
            return ("dict", tuple((k, norm(v)) for k, v in a.items()))
        if isinstance(a, torch.Tensor):
            return ("tensor", tuple(a.shape))
        return a

    return [(n.op, n.target, norm(n.args), norm(n.kwargs)) for n in nodes]


def _forward_reads_training(typ: type) -> bool:
    try:
        return "training" in inspect.getsource(typ.forward)
    except (OSError, TypeError):
        return False


def _stack_trace_location(stack_trace: str) -> str:
    """The user's frame in a node's recorded stack trace, as ``file:line `code```."""
    lines = stack_trace.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'\s*File "(.+)", line (\d+)', line)
        if m and not os.path.abspath(m[1]).startswith(_TORCH_DIR) and os.path.abspath(m[1]) != _THIS_FILE:
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{m[1]}:{m[2]} `{code}`"
    return ""


def _mode_dependent_module(
    model: nn.Module,
    example: torch.Tensor,
    leaf_types: tuple[type, ...],
    leaf_names: frozenset[str],
    eval_graph: fx.Graph,
) -> str | None:
    """The qualified name of a module whose traced code differs between eval and training mode (None: no module
    does). Raises TraceFailure when the difference is in the model's own forward."""
    stack = lambda n: list(n.meta.get("nn_module_stack", {}).items())  # noqa: E731
    try:
        _, train_graph = _trace_once(model, example, leaf_types, leaf_names, training=True)
    except Exception as exc:  # e.g. a drop-path helper that only builds its random mask in training mode
        path = getattr(exc, "_mess_module", ("", ""))[0]
        if path and path not in leaf_names:
            return path
        where = _user_location(traceback.extract_tb(exc.__traceback__))
        raise TraceFailure(
            f"{type(model).__name__}.forward cannot be traced in training mode at {where}: {type(exc).__name__}: "
            f"{exc}. Code that behaves differently in training mode must live in a submodule, which mess_core keeps "
            "opaque so it trains as in the original."
        ) from exc
    ours, theirs = list(eval_graph.nodes), list(train_graph.nodes)
    a, b = _signature(ours), _signature(theirs)
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if first is None:
        if len(a) == len(b):
            return None
        first = min(len(a), len(b))
    here = [
        n
        for n in (ours[first] if first < len(ours) else None, theirs[first] if first < len(theirs) else None)
        if n is not None and n.op != "output"
    ]
    common = []
    stacks = [stack(n) for n in here]
    if stacks:
        for level in zip(*stacks):
            if any(item[0] != level[0][0] for item in level):
                break
            common.append(level[0])
    candidates = [item for s in stacks for item in s]
    for _, (qual, typ) in sorted(candidates, key=lambda item: -item[1][0].count(".") - len(item[1][0]) / 1e4):
        if qual and qual not in leaf_names and _forward_reads_training(typ):
            return qual
    for _, (qual, typ) in reversed(common):
        if qual and qual not in leaf_names and not _is_container(qual, typ, frozenset()):
            return qual
    where = next((_stack_trace_location(n.stack_trace) for n in here if n.stack_trace), "")
    shown = f" at {where}" if where else ""
    raise TraceFailure(
        f"{type(model).__name__}.forward itself behaves differently in training mode{shown} (its graph in training "
        f"mode differs from eval mode at node '{here[0].name if here else first}'), e.g. it reads self.training or "
        "calls F.dropout(..., training=self.training). Move that code into a submodule: mess_core keeps such "
        "submodules opaque so that the converted network trains like the original."
    )


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


def _hoist_shape_reads(graph: fx.Graph, values: dict[fx.Node, Any]) -> frozenset[str]:
    """Move every read of a tensor's metadata (``x.shape``, ``x.size()``, ...), and arithmetic or indexing on such
    reads alone, up to just after the values it needs. Returns the names of the nodes moved or eligible.

    fx records ``x.shape`` where it is used: ``F.interpolate(y, size=x.shape[-2:])`` at the end of forward would keep
    the input ``x`` live across every cut, and every stage would carry the image. Read at once, only the (small)
    shape crosses the cuts. These reads are pure, so moving them up changes no result.
    """
    hoisted: set[fx.Node] = set()
    for n in list(graph.nodes):
        inputs = n.all_input_nodes
        if not inputs or not _is_metadata(values.get(n)):
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


@dataclass(frozen=True)
class CutPoint:
    """A place where execution can stop after node ``position`` and resume later from the ``live`` values.

    ``node`` is the last node computed before the cut except metadata reads moved up to it (``position`` counts
    those). ``module`` names what has just been computed, never empty: the outermost module call that ends at the cut
    (a block, or a whole layer), else the leaf module just called, else the node's name qualified by the module whose
    forward computes it (``backbone.relu_1``; in the model's own forward the bare node name, ``relu_1``).
    """

    position: int
    node: str
    live: tuple[str, ...]
    feature: str
    module: str
    in_chain: bool = False  # between a convolution and its normalisation/activation (see _inside_chain)


def _is_container(qualname: str, typ: type, transparent: frozenset[str]) -> bool:
    return qualname in transparent or typ is nn.Sequential or issubclass(typ, (nn.ModuleList, nn.ModuleDict))


def live_sets(traced: TracedModel) -> list[tuple[int, ...]]:
    """For every position p, the indices of values computed at or before p and used after p (graph order).

    get_attr nodes (parameters and buffers) are constants, re-read by every stage that needs them, never live.
    """
    index = {n: i for i, n in enumerate(traced.nodes)}
    last_use = {}
    for i, n in enumerate(traced.nodes):
        if n.op in ("get_attr", "output") or not n.users:
            continue
        last_use[i] = max(index[u] for u in n.users)
    live: set[int] = set()
    result = []
    for p in range(len(traced.nodes)):
        if p in last_use:
            live.add(p)
        live = {i for i in live if last_use[i] > p}
        result.append(tuple(sorted(live)))
    return result


def region_span(traced: TracedModel, region: str) -> tuple[int, int]:
    """Indices of the first and last node of the first call of submodule ``region`` ('' = the whole model's
    computing nodes). Raises KeyError if the submodule is never called."""
    nodes = traced.nodes
    if not region:
        return next(i for i, n in enumerate(nodes) if n.op != "placeholder"), len(nodes) - 2
    inside = [i for i, n in enumerate(nodes) if any(q == region for _, q, _ in traced.module_calls[n.name])]
    if not inside:
        raise KeyError(region)
    first_key = next(k for k, q, _ in traced.module_calls[nodes[inside[0]].name] if q == region)
    inside = [i for i in inside if any(k == first_key for k, _, _ in traced.module_calls[nodes[i].name])]
    return inside[0], inside[-1]


def _cut_label(a: fx.Node, ending: Sequence[str], calls: Sequence[tuple[str, str, type]]) -> str:
    """Never empty: the outermost module call ending at the cut, else the leaf module node ``a`` calls, else node
    ``a``'s own name qualified by the module whose forward computes it (a bare node name in the model's forward)."""
    if ending:
        return ending[0]
    if a.op == "call_module":
        return str(a.target)
    return f"{calls[-1][1]}.{a.name}" if calls else a.name


EXIT_FEATURE_RULES = ("latest", "highest-resolution")


_CONVS: tuple[type, ...] = (nn.modules.conv._ConvNd,)
_NORMS: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    torchvision.ops.FrozenBatchNorm2d,
)
_ACTIVATIONS: tuple[type, ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
)
_CONV_FUNCTIONS = frozenset({torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d})
_NORM_FUNCTIONS = frozenset({F.batch_norm, F.group_norm, F.layer_norm, F.instance_norm, torch.batch_norm})
_ACTIVATION_FUNCTIONS = frozenset(
    {
        F.relu,
        torch.relu,
        F.relu_,
        torch.relu_,
        F.relu6,
        F.leaky_relu,
        F.elu,
        F.gelu,
        F.silu,
        F.mish,
        F.hardswish,
        F.hardsigmoid,
        F.hardtanh,
        torch.sigmoid,
        F.sigmoid,
        torch.tanh,
        F.tanh,
    }
)
_ACTIVATION_METHODS = frozenset({"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"})


def _layer_kind(traced: TracedModel, n: fx.Node) -> str | None:
    """``"conv"``, ``"norm"``, ``"act"`` or None for a graph node."""
    if n.op == "call_module":
        m = traced.graph_module.get_submodule(str(n.target))
        for kind, types in (("conv", _CONVS), ("norm", _NORMS), ("act", _ACTIVATIONS)):
            if isinstance(m, types):
                return kind
    elif n.op == "call_function":
        for kind, targets in (("conv", _CONV_FUNCTIONS), ("norm", _NORM_FUNCTIONS), ("act", _ACTIVATION_FUNCTIONS)):
            if n.target in targets:
                return kind
    elif n.op == "call_method" and n.target in _ACTIVATION_METHODS:
        return "act"
    return None


def _inside_chain(traced: TracedModel, a: fx.Node, b: fx.Node) -> bool:
    """Whether a cut between ``a`` and ``b`` splits a convolution from its normalisation or activation (conv|BN,
    BN|ReLU, conv|ReLU): ``b`` is the only consumer of ``a`` and takes it as its input. An exit there reads a map
    that is not yet normalised or activated, at the same FLOPs as after the chain, and latency noise would move it."""
    if not b.args or b.args[0] is not a or len(a.users) != 1:
        return False
    kinds = (_layer_kind(traced, a), _layer_kind(traced, b))
    return kinds in {("conv", "norm"), ("conv", "act"), ("norm", "act")}


def _exit_feature(traced: TracedModel, features: Sequence[str], rule: str) -> str:
    """The feature map an exit reads among the live 4-D ``features`` (graph order), by ``rule``:

    * ``"latest"``: the most recently computed one (the deepest, for a single-path backbone; in a U-Net the newest
      encoder output, not an older skip);
    * ``"highest-resolution"``: the one with the most pixels, ties broken by the most channels, then the most
      recent. For multi-branch backbones (HRNet) where the coarsest branch is often computed last.
    """
    if rule == "latest":
        return features[-1]
    if rule == "highest-resolution":

        def key(item: tuple[int, str]) -> tuple[int, int, int]:
            shape = traced.info[item[1]].shape
            return shape[2] * shape[3], shape[1], item[0]

        return max(enumerate(features), key=key)[1]
    raise ValueError(f"exit_feature must be one of {EXIT_FEATURE_RULES}, not {rule!r}")


def find_cut_points(traced: TracedModel, *, region: str = "", exit_feature: str = "latest") -> list[CutPoint]:
    """Every valid cut point inside the call of submodule ``region`` ('' = the whole model), in graph order.
    ``exit_feature`` is the rule that chooses the feature map an exit reads (see :func:`_exit_feature`)."""
    if exit_feature not in EXIT_FEATURE_RULES:
        raise ValueError(f"exit_feature must be one of {EXIT_FEATURE_RULES}, not {exit_feature!r}")
    nodes = traced.nodes
    transparent = frozenset({region, ""})
    start, end = region_span(traced, region)
    if not region:
        end -= 1  # leave at least the last computing node after the cut, or the exit saves nothing
    live = live_sets(traced)
    batch = traced.info[nodes[0].name].shape[0]
    cuts = []
    for p in range(start, end + 1):
        if nodes[p].name in traced.hoisted:
            continue  # a shape read moved up: it belongs to the cut before it
        q = p  # the cut falls after the shape reads that follow node p, so that only the shapes cross it
        while nodes[q + 1].name in traced.hoisted:
            q += 1
        if nodes[q + 1].op == "output":
            continue
        a, b = nodes[p], nodes[q + 1]
        calls_a, calls_b = traced.module_calls[a.name], traced.module_calls[b.name]
        shared = [c for c, d in zip(calls_a, calls_b) if c[0] == d[0]]
        if any(not _is_container(qual, typ, transparent) for _, qual, typ in shared):
            continue  # inside a block: cutting here would split it from its own skip path
        names = tuple(nodes[i].name for i in live[q])
        infos = [traced.info[n] for n in names]
        if not names or any(i.kind == "other" for i in infos):
            continue
        features = [
            n
            for n, i in zip(names, infos)
            if i.is_feature_map and i.shape[0] == batch and nodes[traced.index(n)].op != "placeholder"
        ]
        if not features:
            continue
        ending = [qual for key, qual, _ in calls_a if key not in {c[0] for c in shared} and qual != region]
        module = _cut_label(a, ending, calls_a)
        feature = _exit_feature(traced, features, exit_feature)
        cuts.append(CutPoint(q, a.name, names, feature, module, _inside_chain(traced, a, b)))
    return cuts


def split(traced: TracedModel, positions: Sequence[int]) -> list[fx.GraphModule]:
    """Split the graph after each position into len(positions)+1 sequential stages.

    Stage k takes the live values at cut k-1 (stage 0 takes the model's input) and returns the live values at cut k
    as a tuple in graph order; the last stage returns whatever the model returns. Stages share the model's
    submodules and parameters (no copies).
    """
    nodes = traced.nodes
    live = live_sets(traced)
    bounds = [-1, *positions, len(nodes) - 1]
    placeholders = [n for n in nodes if n.op == "placeholder"]
    stages = []
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        inputs = placeholders if k == 0 else [nodes[i] for i in live[lo]]
        for n in inputs:
            env[n] = graph.placeholder(n.name)

        def lookup(a: fx.Node) -> fx.Node:
            if a not in env:
                if a.op != "get_attr":
                    raise AssertionError(f"stage {k} uses {a.name}, which is neither live nor a constant")
                env[a] = graph.get_attr(a.target)
            return env[a]

        for n in nodes[lo + 1 : hi + 1]:
            if n.op == "placeholder":
                continue
            if n.op == "output":
                graph.output(map_arg(n.args[0], lookup))
            else:
                env[n] = graph.node_copy(n, lookup)
        if k < len(bounds) - 2:
            graph.output(tuple(lookup(nodes[i]) for i in live[hi]))
        graph.lint()
        stages.append(fx.GraphModule(traced.graph_module, graph, class_name=f"Stage{k + 1}"))
    return stages
