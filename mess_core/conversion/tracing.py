"""Tracing: a model becomes a torch.fx graph whose every node's value on the example input is known.

Tracing carries the concrete values of the example input alongside the symbolic ones (a "concrete" tracer):

* Python control flow on *shapes* (``if h % 32 != 0: raise ...``, as segmentation_models_pytorch does) is
  specialised to the branch the example takes, and a guard node is left in the graph that raises
  :class:`~mess_core.errors.GuardFailure` if a later input would take the other branch. The graph never silently
  computes something the model would not.
* Python control flow on tensor *values* (``if x.max() > 0``) cannot be captured by a graph and is refused with a
  message naming the module and the source line.
* Reads of ``x.shape`` are metadata: they are moved up to just after the tensor they read, so the graph keeps the
  (small) shape value alive, not the tensor (``F.interpolate(y, size=x.shape[-2:])`` at the end of forward hands
  on the input's size across the cuts, not the image; see :mod:`.shape_reads`).

A model that fails to trace is explained by :mod:`.trace_failures`; modules whose code differs in training mode are
kept opaque (see :func:`trace`).
"""

from __future__ import annotations

import inspect
import math
import os
import re
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
import torchvision
from torch import fx, nn
from torch.fx.node import map_aggregate, map_arg

from ..errors import GuardFailure, TraceFailure
from ..timelimit import TimeLimitExceeded
from .profiling import evaluating
from .shape_reads import hoist_shape_reads, is_metadata
from .trace_failures import _DataDependentControlFlow, explain_trace_failures

__all__ = [
    "ValueInfo",
    "TracedModel",
    "trace",
    "shape_guard",
    "is_container",
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


def value_info(value: Any) -> ValueInfo:
    """What a traced value is: a tensor (with its shape and dtype), metadata, a sequence of tensors, or other."""
    if isinstance(value, torch.Tensor):
        return ValueInfo("tensor", tuple(value.shape), str(value.dtype).replace("torch.", ""))
    if is_metadata(value):
        return ValueInfo("meta")
    if isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) or is_metadata(v) for v in value):
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
    # shape reads moved up to just after the tensor they read (see hoist_shape_reads): never a cut of their own
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
    hoisted = hoist_shape_reads(gm.graph, tracer.values)
    gm.recompile()
    nodes = list(gm.graph.nodes)
    info = {n.name: value_info(tracer.values.get(n)) for n in nodes if n.op != "output"}
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
    raise explain_trace_failures(model, failures) from failures[0][0]


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
        if qual and qual not in leaf_names and not is_container(qual, typ, frozenset()):
            return qual
    where = next((_stack_trace_location(n.stack_trace) for n in here if n.stack_trace), "")
    shown = f" at {where}" if where else ""
    raise TraceFailure(
        f"{type(model).__name__}.forward itself behaves differently in training mode{shown} (its graph in training "
        f"mode differs from eval mode at node '{here[0].name if here else first}'), e.g. it reads self.training or "
        "calls F.dropout(..., training=self.training). Move that code into a submodule: mess_core keeps such "
        "submodules opaque so that the converted network trains like the original."
    )


def is_container(qualname: str, typ: type, transparent: frozenset[str]) -> bool:
    """Whether a call of module ``qualname`` of type ``typ`` is a plain container, which a cut may fall inside:
    ``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``, or a name in ``transparent``."""
    return qualname in transparent or typ is nn.Sequential or issubclass(typ, (nn.ModuleList, nn.ModuleDict))
