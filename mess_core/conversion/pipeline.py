"""The conversion pipeline: :func:`convert` turns a segmentation CNN into a :class:`MultiExitNet`.

Which part of the model carries the early exits (the *backbone*) follows one rule:

1. the submodule the caller names with ``backbone=`` ("" means the whole model);
2. else the submodule called ``backbone`` (torchvision) or ``encoder`` (segmentation_models_pytorch), if present;
3. else the whole model.

Exits are only placed inside the backbone because heads such as DeepLabV3's ASPP can cost most of the model: an
exit inside them would save nothing. The N-1 early exits sit at about k/N of the backbone's cumulative workload
(k = 1..N-1), snapped to cut points (see :mod:`mess_core.conversion.placement`); the N-th exit is the model's own
output.

Example:
    >>> import torch, torchvision
    >>> import mess_core
    >>> model = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=11)
    >>> net = mess_core.convert(model, torch.randn(1, 3, 64, 64), num_exits=4)
    >>> [e.module for e in net.exits]
    ['backbone.layer3.2', 'backbone.layer3', 'backbone.layer4.1']
    >>> outs = net.eval()(torch.randn(2, 3, 96, 80))
    >>> len(outs), tuple(outs[-1].shape)
    (4, (2, 11, 96, 80))
    >>> [(step.index, step.final) for step in net.walk(torch.randn(1, 3, 64, 64), stop=3)]
    [(1, False), (2, False), (3, False)]
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping, Sequence

import torch
from torch import nn

from ..errors import ConversionError
from ..timelimit import time_limit
from .cuts import EXIT_FEATURE_RULES, CutPoint, find_cut_points, split
from .exits import LIGHT_EXIT, ExitSpace, ExitSpec
from .network import ExitPoint, MultiExitNet
from .placement import LATENCY_TOLERANCE, equidistant_targets, snap_stable, snap_to_cuts
from .profiling import COST_KINDS, evaluating
from .tracing import TracedModel, trace
from .workload_profile import WorkloadProfile, profile_workload

__all__ = ["convert", "resolve_backbone", "check_model_output", "check_module_names"]


def resolve_backbone(model: nn.Module, backbone: str | None) -> str:
    """The qualified name of the submodule that carries the exits (see the module docstring for the rule)."""
    modules = dict(model.named_modules())
    if backbone is None:
        for name in ("backbone", "encoder"):
            if isinstance(getattr(model, name, None), nn.Module):
                return name
        return ""
    if backbone not in modules:
        top = [n for n, _ in model.named_children()]
        raise ConversionError(
            f"backbone='{backbone}' is not a submodule of {type(model).__name__}; its top-level submodules are "
            f"{top}. Name the submodule that extracts features (dotted path), or pass backbone='' for the whole model."
        )
    return backbone


def _final_tensor(output: Any, output_key: str | int | None) -> tuple[torch.Tensor, str | int | None]:
    if output_key is None:
        if isinstance(output, torch.Tensor):
            return output, None
        if isinstance(output, Mapping) and "out" in output:
            return output["out"], "out"
        kind = type(output).__name__
        kind = {"immutable_list": "list", "immutable_dict": "dict"}.get(kind, kind)  # torch.fx's containers
        keys = f" with keys {list(output.keys())}" if isinstance(output, Mapping) else ""
        raise ConversionError(
            f"the model returns a {kind}{keys}, not per-pixel logits; pass output_key= naming the entry that holds the "
            "(B, num_classes, H, W) logits"
        )
    try:
        return output[output_key], output_key
    except (KeyError, IndexError, TypeError) as exc:
        raise ConversionError(
            f"output_key={output_key!r} does not select an entry of the model's output: {exc}"
        ) from exc


def _check_logits(logits: Any, example: torch.Tensor) -> int:
    if (
        not isinstance(logits, torch.Tensor)
        or logits.dim() != 4
        or not logits.is_floating_point()
        or logits.shape[0] != example.shape[0]
    ):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConversionError(
            f"the model's output {shape} is not per-pixel logits (B, num_classes, H, W) for an input of shape "
            f"{tuple(example.shape)}; MESS converts semantic-segmentation models"
        )
    if logits.shape[-2:] != example.shape[-2:]:
        raise ConversionError(
            f"the model's logits are {tuple(logits.shape[-2:])} pixels for a {tuple(example.shape[-2:])} input; "
            "exits are compared with the final output per pixel, so wrap the model to upsample its logits to the "
            "input size (F.interpolate(..., mode='bilinear'))"
        )
    return logits.shape[1]


def check_module_names(model: nn.Module, *, backbone: str | None = None, leaf_modules: Iterable[Any] = ()) -> None:
    """Refuse ``backbone`` and ``leaf_modules`` names that are not submodules of ``model`` (what :func:`convert`
    would refuse), so that a study's ``convert:`` block is checked when its YAML is read, not after training."""
    resolve_backbone(model, backbone)
    modules = dict(model.named_modules())
    missing = [m for m in leaf_modules if isinstance(m, str) and m not in modules]
    if missing:
        raise ConversionError(
            f"leaf_modules names {missing} are not submodules of {type(model).__name__}; name "
            "submodules by their dotted path (print(model) lists them)"
        )


def check_model_output(
    model: nn.Module, example: torch.Tensor, *, num_classes: int | None = None, output_key: str | int | None = None
) -> str | int | None:
    """Run ``model`` once on ``example`` (eval mode, no gradients) and refuse an output that is not per-pixel logits
    of the input's size (with ``num_classes`` channels when given), as :func:`convert` does; returns the key of the
    logits in the output (None: the output is the tensor)."""
    was_training = model.training
    try:
        with torch.no_grad(), time_limit(f"running {type(model).__name__} on {tuple(example.shape)}"):
            output = model.eval()(example)
    finally:
        model.train(was_training)
    logits, key = _final_tensor(output, output_key)
    classes = _check_logits(logits, example)
    if num_classes is not None and classes != num_classes:
        raise ConversionError(
            f"the model predicts {classes} classes but the dataset has {num_classes}; build the "
            f"model with num_classes={num_classes} (its callable takes num_classes=)"
        )
    return key


def convert(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    num_exits: int = 4,
    cost: Literal["flops", "latency"] = "flops",
    backbone: str | None = None,
    leaf_modules: Iterable[str | type] = (),
    output_key: str | int | None = None,
    exit_head: ExitSpec | str | ExitSpace | None = LIGHT_EXIT,
    verify: bool = True,
    exit_feature: Literal["latest", "highest-resolution"] = "latest",
) -> MultiExitNet:
    """Turn ``model`` into a :class:`MultiExitNet` with ``num_exits`` exits (``num_exits - 1`` early ones).

    Args:
        model: a segmentation CNN returning (B, classes, H, W) logits, or a dict holding them under ``"out"``.
        example_input: an input batch; tracing, profiling and verification use it (profiling: its first image).
        num_exits: N, counting the model's own output as the last exit.
        cost: ``"flops"`` (torch.utils.flop_counter) or ``"latency"`` (median time per node on the model's
            device) for placing exits at equidistant workload.
        backbone: the submodule that carries the exits; see the module docstring for the default.
        leaf_modules: module classes or qualified names that tracing keeps opaque (for code FX cannot trace).
        output_key: which entry of a dict/tuple output holds the logits, if not ``"out"``.
        exit_head: configuration(s) to attach at every early exit right away (None: attach later).
        verify: check that running the stages reproduces the model's output on ``example_input``.
        exit_feature: which live 4-D feature map an exit reads where several cross a cut: ``"latest"`` (the most
            recently computed; right for single-path backbones and U-Net encoders) or ``"highest-resolution"`` (the
            most pixels, ties broken by most channels, then most recent; for multi-branch backbones such as HRNet,
            whose coarsest branch is often computed last).
    """
    _check_arguments(num_exits, cost, exit_feature, example_input)
    backbone_name = resolve_backbone(model, backbone)
    with time_limit(f"tracing {type(model).__name__} on an example input {tuple(example_input.shape)}"):
        traced = trace(model, example_input, leaf_modules=leaf_modules)
    logits, key = _final_tensor(traced.output, output_key)
    num_classes = _check_logits(logits, example_input)
    cuts = _backbone_cut_points(traced, model, backbone_name, exit_feature)
    profile = profile_workload(traced, example_input, cost, backbone_name, cuts)
    _check_enough_cut_points(cuts, num_exits, model, backbone_name)
    chosen = _place_exits(cuts, profile, num_exits)
    exits = _exit_points(traced, profile, chosen, example_input)
    net = MultiExitNet(
        stages=split(traced, [c.position for c in chosen]),
        exits=exits,
        feature_slots=[c.live.index(c.feature) for c in chosen],
        profile=profile,
        num_classes=num_classes,
        output_key=key,
        specialisations=traced.specialisations,
        example_shape=tuple(example_input.shape[1:]),
        value_info=traced.info,
    )
    net.train(model.training)
    if verify:
        _verify(net, model, key, example_input)
    if exit_head is not None:
        net.attach(exit_head)
    return net


def _check_arguments(num_exits: int, cost: str, exit_feature: str, example_input: torch.Tensor) -> None:
    """Refuse convert() arguments outside what it accepts, before any work is done."""
    if not isinstance(num_exits, int) or num_exits < 2:
        raise ConversionError(f"num_exits must be an int >= 2 (early exits plus the final one), not {num_exits!r}")
    if cost not in COST_KINDS:
        raise ConversionError(f"cost must be one of {COST_KINDS}, not {cost!r}")
    if exit_feature not in EXIT_FEATURE_RULES:
        raise ConversionError(f"exit_feature must be one of {EXIT_FEATURE_RULES}, not {exit_feature!r}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise ConversionError(f"example_input must be an image batch (B, C, H, W), not {shape}")


def _backbone_label(model: nn.Module, backbone_name: str) -> str:
    """How messages name the part of the model that carries the exits."""
    return f"the backbone '{backbone_name}'" if backbone_name else f"{type(model).__name__}"


def _backbone_cut_points(
    traced: TracedModel, model: nn.Module, backbone_name: str, exit_feature: str
) -> list[CutPoint]:
    """The cut points inside the backbone's call; refuses a backbone that is never called or has none."""
    try:
        cuts = find_cut_points(traced, region=backbone_name, exit_feature=exit_feature)
    except KeyError:
        raise ConversionError(
            f"the backbone '{backbone_name}' is never called in {type(model).__name__}.forward; name the submodule "
            "that computes the features with backbone="
        ) from None
    if not cuts:
        where = _backbone_label(model, backbone_name)
        raise ConversionError(
            f"{where} has no place where a 4-D feature map (B, C, H, W) can be taken between blocks; MESS exits need "
            "spatial features. If the features live in another submodule, name it with backbone="
        )
    return cuts


def _check_enough_cut_points(cuts: Sequence[CutPoint], num_exits: int, model: nn.Module, backbone_name: str) -> None:
    """Refuse a ``num_exits`` that needs more early exits than the backbone has cut points."""
    if len(cuts) < num_exits - 1:
        where = _backbone_label(model, backbone_name)
        raise ConversionError(
            f"num_exits={num_exits} needs {num_exits - 1} early exits, but {where} has only {len(cuts)} valid cut "
            f"points; use num_exits <= {len(cuts) + 1}, or name a deeper backbone"
        )


def _exit_points(
    traced: TracedModel, profile: WorkloadProfile, chosen: Sequence[CutPoint], example: torch.Tensor
) -> list[ExitPoint]:
    """Where each early exit attaches (one per ``chosen`` cut point, shallowest first) and what the path to it costs."""
    cumulative = profile.cumulative()
    flops_cumulative = profile.cumulative("flops")
    seconds_cumulative = profile.cumulative("latency") if profile.cost == "latency" else None
    height = example.shape[-2]
    exits = []
    for index, cut in enumerate(chosen, start=1):
        shape = traced.info[cut.feature].shape
        exits.append(
            ExitPoint(
                index=index,
                node=cut.node,
                feature_node=cut.feature,
                module=cut.module,
                live=cut.live,
                flops=flops_cumulative[cut.position],
                seconds=seconds_cumulative[cut.position] if seconds_cumulative else None,
                cost_fraction=cumulative[cut.position] / profile.total if profile.total else 0.0,
                channels=shape[1],
                stride=max(1, round(height / shape[2])),
                feature_shape=tuple(shape[1:]),
            )
        )
    return exits


def _place_exits(cuts: list[CutPoint], profile: WorkloadProfile, num_exits: int) -> list[CutPoint]:
    """The cut points of the N-1 early exits (see :mod:`mess_core.conversion.placement`). Cut points inside a
    conv-normalisation-activation chain are only used when the other cut points are too few for ``num_exits``."""
    pool = [c for c in cuts if not c.in_chain]
    if len(pool) < num_exits - 1:
        pool = cuts
    cumulative = profile.cumulative()
    targets = equidistant_targets(profile.backbone_cost, num_exits)
    costs = [cumulative[c.position] for c in pool]
    if profile.cost != "latency":
        return [pool[i] for i in snap_to_cuts(costs, targets)]
    flops = profile.cumulative("flops")
    flop_targets = equidistant_targets(flops[profile.backbone_end], num_exits)
    tolerance = LATENCY_TOLERANCE * profile.backbone_cost * (num_exits - 1)
    return [pool[i] for i in snap_stable(costs, targets, [flops[c.position] for c in pool], flop_targets, tolerance)]


def _verify(net: MultiExitNet, model: nn.Module, key: str | int | None, example: torch.Tensor) -> None:
    with evaluating(net), evaluating(model):
        ours = net.walk_to(example).logits
        theirs = _final_tensor(model(example), key)[0]
    if not torch.isfinite(theirs).all():
        bad = [
            name
            for name, t in [*model.named_parameters(), *model.named_buffers()]
            if t.is_floating_point() and not torch.isfinite(t).all()
        ]
        raise ConversionError(
            "the model's output on the example input is not finite (NaN or infinite)"
            + (
                f": its weights hold non-finite values ({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); "
                "load weights from before training diverged"
                if bad
                else "; check its forward for a division by zero or a log of zero"
            )
        )
    if not torch.allclose(ours, theirs, atol=1e-5, rtol=0):
        raise ConversionError(
            "running the model stage by stage does not reproduce its output on the example input (max difference "
            f"{(ours - theirs).abs().max().item():.3g}); the model may be nondeterministic in eval mode"
        )
