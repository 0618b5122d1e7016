"""A MESS instance (which exits are kept, their configurations, the exit policy) and its exact outcome on a cache.

Three deployment modes:

* ``budgeted``: one exit, a static submodel (the stages up to it plus its head); no exit at all = the backbone.
* ``anytime``: every kept exit runs in sequence, then the final exit; each output refines the previous one. Its
  headline figures are those of its first output (the earliest actionable result: its mIoU, and the cost until it is
  ready); :attr:`Outcome.steps` lists mIoU and cumulative cost after every output, and ``total_cost`` what running
  everything costs.
* ``input-dependent``: each image stops at the first kept exit whose rule fires (image confidence >= that exit's
  ``th_img``), else at the final exit; its cost is the stages it ran plus every head it evaluated.

The instance file is small, validated JSON that deployment and the app load::

    {"format": "mess-instance/1", "mode": "input-dependent",
     "exits": [{"exit": 2, "config": "crm25p-b1-fcn", "th_img": 0.9}],
     "policy": {"th_pix": 0.8, "edges": {"size": 3, "window": 7}, "naive": false}, ...}

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> cache = EvaluationCache.random(images=8, exits=3, configs=2, seed=1)
    >>> inst = Instance.input_dependent([KeptExit(1, cache.configs[0], th_img=0.5)], th_pix=0.7)
    >>> out = evaluate(cache, inst)
    >>> int(out.exit_taken.max()) <= 1 and 0.0 <= out.miou <= 1.0
    True
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from ..conversion.exits import ExitSpec
from ..errors import MessError
from ..io import atomic_write_text, read_json
from .cache import EvaluationCache
from .policy import ConfidencePolicy, EdgeMasking

__all__ = [
    "KeptExit",
    "Instance",
    "Outcome",
    "InstanceError",
    "evaluate",
    "exit_histogram",
    "outcome_figures",
    "output_costs",
    "output_rows",
    "iou_of_counts",
    "mean_iou",
    "MODES",
    "INSTANCE_FORMAT",
]

INSTANCE_FORMAT = "mess-instance/1"
MODES = ("budgeted", "anytime", "input-dependent")
Mode = Literal["budgeted", "anytime", "input-dependent"]


class InstanceError(MessError):
    """An instance file or description that is not valid."""


@dataclass(frozen=True)
class KeptExit:
    """An early exit kept in an instance: its index (1..N-1), configuration id and image threshold
    (input-dependent mode only)."""

    exit: int
    config: str
    th_img: float | None = None


@dataclass(frozen=True)
class Instance:
    mode: str
    exits: tuple[KeptExit, ...] = ()
    policy: ConfidencePolicy = field(default_factory=ConfidencePolicy)
    # what it was searched on (model, dataset, split, input size, class and exit counts): deployment checks it
    source: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InstanceError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        object.__setattr__(self, "exits", tuple(self.exits))
        indices = [e.exit for e in self.exits]
        if indices != sorted(set(indices)):
            raise InstanceError(f"exits must be distinct and listed shallowest first, got {indices}")
        if self.mode == "budgeted" and len(self.exits) > 1:
            raise InstanceError(f"a budgeted instance keeps one exit (or none: the backbone), not {len(self.exits)}")
        for e in self.exits:
            ExitSpec.parse(e.config)  # raises SpecError naming a malformed id
            if self.mode == "input-dependent":
                if e.th_img is None or not 0.0 <= e.th_img <= 1.0 or math.isnan(e.th_img):
                    raise InstanceError(f"exit {e.exit}: th_img must be a number in [0, 1], not {e.th_img!r}")
        if not 0.0 < self.policy.th_pix <= 1.0:
            raise InstanceError(f"policy th_pix must lie in (0, 1], not {self.policy.th_pix}")

    @classmethod
    def input_dependent(
        cls,
        exits: Sequence[KeptExit],
        *,
        th_pix: float = 0.8,
        edges: EdgeMasking | None = EdgeMasking(),
        naive: bool = False,
    ) -> "Instance":
        return cls("input-dependent", tuple(exits), ConfidencePolicy(th_pix=th_pix, edges=edges, naive=naive))

    @property
    def policy_name(self) -> str:
        """The cache's name for the policy: "mess" (edge-masked), "plain" (no masking) or "naive"."""
        if self.policy.naive:
            return "naive"
        return "plain" if self.policy.edges is None else "mess"

    def describe(self) -> str:
        """A one-line summary, e.g. ``2:crm25p-b1-fcn@0.90 > 6 (th_pix 0.8)``."""
        parts = [f"{e.exit}:{e.config}" + (f"@{e.th_img:.2f}" if e.th_img is not None else "") for e in self.exits]
        parts.append("final")
        policy = ""
        if self.mode == "input-dependent" and self.exits:
            policy = (
                " (naive)"
                if self.policy.naive
                else f" (th_pix {self.policy.th_pix:g}" + (", no edge masking)" if self.policy.edges is None else ")")
            )
        return " > ".join(parts) + policy

    # ------------------------------------------------------------------------------------------------ JSON
    def to_dict(self, **extra: Any) -> dict[str, Any]:
        edges = self.policy.edges
        return {
            "format": INSTANCE_FORMAT,
            "mode": self.mode,
            "exits": [
                {"exit": e.exit, "config": e.config, **({"th_img": e.th_img} if e.th_img is not None else {})}
                for e in self.exits
            ],
            "policy": {
                "th_pix": self.policy.th_pix,
                "naive": self.policy.naive,
                "edges": None if edges is None else {"size": edges.size, "window": edges.window},
            },
            **({"source": self.source} if self.source is not None else {}),
            **extra,
        }

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "instance") -> "Instance":
        if not isinstance(data, dict):
            raise InstanceError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != INSTANCE_FORMAT:
            raise InstanceError(f"{where}: 'format' is {data.get('format')!r}, expected {INSTANCE_FORMAT!r}")
        try:
            policy = data.get("policy", {})
            if not isinstance(policy, dict):
                raise InstanceError(f"{where}: 'policy' must be an object")
            edges = policy.get("edges", {"size": 3, "window": 7})
            if edges is not None and not (isinstance(edges, dict) and {"size", "window"} <= set(edges)):
                raise InstanceError(
                    f"{where}: policy.edges must be null or an object with 'size' and 'window', not {edges!r}"
                )
            exits = data.get("exits", [])
            if not isinstance(exits, list):
                raise InstanceError(f"{where}: 'exits' must be a list")
            kept = []
            for n, e in enumerate(exits):
                if not isinstance(e, dict) or "exit" not in e or "config" not in e:
                    raise InstanceError(f"{where}: exits[{n}] needs 'exit' (int) and 'config' (an exit id)")
                if not isinstance(e["exit"], int) or isinstance(e["exit"], bool) or e["exit"] < 1:
                    raise InstanceError(
                        f"{where}: exits[{n}].exit must be an early exit's number (1, 2, ...), not {e['exit']!r}"
                    )
                th = e.get("th_img")
                if th is not None and not isinstance(th, (int, float)):
                    raise InstanceError(f"{where}: exits[{n}].th_img must be a number, not {th!r}")
                kept.append(KeptExit(e["exit"], str(e["config"]), None if th is None else float(th)))
            source = data.get("source")
            if source is not None and not isinstance(source, dict):
                raise InstanceError(f"{where}: 'source' must be an object")
            return cls(
                mode=data.get("mode"),
                exits=tuple(kept),
                source=source,
                policy=ConfidencePolicy(
                    th_pix=float(policy.get("th_pix", 0.8)),
                    edges=None if edges is None else EdgeMasking(size=int(edges["size"]), window=int(edges["window"])),
                    naive=bool(policy.get("naive", False)),
                ),
            )
        except InstanceError as exc:
            if str(exc).startswith(where):
                raise
            raise InstanceError(f"{where}: {exc}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise InstanceError(f"{where}: {exc}") from None

    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write the instance (plus ``extra`` fields, e.g. the figures measured for it) atomically."""
        return atomic_write_text(path, json.dumps(self.to_dict(**extra), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Instance":
        data = read_json(path, InstanceError, "no such instance file")
        return cls.from_dict(data, where=str(path))

    def check_against(self, cache: EvaluationCache) -> None:
        """Raise unless every exit and configuration exists in ``cache`` (and th_pix is on its grid)."""
        for e in self.exits:
            if not 1 <= e.exit < cache.num_exits:
                raise InstanceError(
                    f"exit {e.exit} is not an early exit of {cache.meta.get('model')} "
                    f"(early exits are 1..{cache.num_exits - 1})"
                )
            cache.config_index(e.config)
        if self.mode == "input-dependent" and self.exits and not self.policy.naive:
            cache.th_pix_index(self.policy.th_pix)


@dataclass
class Outcome:
    """An instance's exact figures on one cache. ``cost`` is per image, averaged, in ``unit``."""

    miou: float
    iou: np.ndarray  # (K,) per class, NaN where a class is absent from labels and predictions
    cost: float
    unit: str
    exit_taken: np.ndarray  # (B,) per image: position of the output it used (0 = first kept exit, len(exits) = final)
    head_taken: np.ndarray  # (B,) per image: the cache head (row of tp/pred) that output comes from
    image_cost: np.ndarray  # (B,)
    steps: list[dict[str, Any]]  # per output: exit, config, miou, cumulative cost (anytime: after each output)
    total_cost: float  # anytime: everything run; otherwise equal to cost

    @property
    def exit_left_at(self) -> np.ndarray:
        """(B,) per image: the exit it left at (1..N, N = the final exit), as ``deploy()`` reports it."""
        return np.asarray([s["exit"] for s in self.steps])[self.exit_taken]


def output_costs(cache: EvaluationCache, instance: Instance, *, unit: str = "gflops") -> np.ndarray:
    """Per-image cost of reaching each output of ``instance`` (its kept exits, then the final exit): the stages up
    to it plus every kept head up to and including its own, and, input-dependent, the decision at each of them."""
    cum = cache.reach_cost(unit)  # type: ignore[arg-type]
    if instance.mode == "input-dependent":
        head = cache.exit_cost(instance.policy_name, unit)  # type: ignore[arg-type]
    else:
        head = cache.head_cost(unit)  # type: ignore[arg-type]
    paid = (
        np.cumsum([head[e.exit - 1, cache.config_index(e.config)] for e in instance.exits])
        if instance.exits
        else np.zeros(0)
    )
    return np.asarray(
        [cum[e.exit] + paid[m] for m, e in enumerate(instance.exits)] + [cum[-1] + (paid[-1] if len(paid) else 0.0)]
    )


def iou_of_counts(label: np.ndarray, tp: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU per class (last axis) from summed label, true-positive and prediction counts of any matching leading
    shape (one split, or many resamples of it at once): tp / (label + pred - tp), NaN where the union is 0 (a class
    absent from labels and predictions)."""
    union = label + pred - tp
    return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(iou: np.ndarray) -> np.ndarray:
    """mIoU over the last axis, leaving out NaN classes; NaN where every class is NaN (no warning)."""
    present = np.isfinite(iou)
    total = np.where(present, iou, 0.0).sum(-1)
    count = present.sum(-1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _iou(cache: EvaluationCache, tp: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return iou_of_counts(cache.label.sum(0), tp, pred)


def _miou(iou: np.ndarray) -> float:
    return float(mean_iou(iou))


def output_rows(cache: EvaluationCache, instance: Instance) -> list[int]:
    """The cache heads (rows of ``tp``/``pred``) of ``instance``'s outputs: its kept exits' heads, then the final
    exit's."""
    return [cache.head_index(e.exit, e.config) for e in instance.exits] + [cache.final_head]


def evaluate(cache: EvaluationCache, instance: Instance, *, unit: str = "gflops") -> Outcome:
    """The exact mIoU and cost of ``instance`` on ``cache``'s split, from integer counts (no network)."""
    instance.check_against(cache)
    n_exits = cache.num_exits
    kept = [(e.exit, cache.config_index(e.config)) for e in instance.exits]
    rows = output_rows(cache, instance)
    reach = output_costs(cache, instance, unit=unit)
    b = cache.num_images
    steps = []
    for m, row in enumerate(rows):
        tp, pred = cache.tp[:, row].sum(0), cache.pred[:, row].sum(0)
        steps.append(
            {
                "exit": kept[m][0] if m < len(kept) else n_exits,
                "config": instance.exits[m].config if m < len(kept) else "final",
                "miou": _miou(_iou(cache, tp, pred)),
                "cost": float(reach[m]),
            }
        )
    if instance.mode == "input-dependent" and kept:
        taken = np.full(b, len(kept))
        c_img = cache.image_confidence(policy=instance.policy_name, th_pix=instance.policy.th_pix)
        for m in reversed(range(len(kept))):  # the shallowest firing exit wins
            fires = c_img[:, rows[m]] >= instance.exits[m].th_img
            taken[fires] = m
    else:
        taken = np.zeros(b, dtype=int)  # budgeted / anytime: the first output is the headline
    chosen = np.asarray(rows)[taken]
    tp = cache.tp[np.arange(b), chosen].sum(0)
    pred = cache.pred[np.arange(b), chosen].sum(0)
    iou = _iou(cache, tp, pred)
    image_cost = reach[taken]
    total = float(reach[-1]) if instance.mode == "anytime" else float(image_cost.mean())
    return Outcome(
        miou=_miou(iou),
        iou=iou,
        cost=float(image_cost.mean()),
        unit=unit,
        exit_taken=taken,
        head_taken=chosen,
        image_cost=image_cost,
        steps=steps,
        total_cost=total,
    )


def exit_histogram(cache: EvaluationCache, instance: Instance) -> pd.DataFrame:
    """How many images leave at each output of ``instance`` on ``cache``: columns output, exit, config, images,
    fraction (a DataFrame the app plots)."""
    out = evaluate(cache, instance)
    counts = np.bincount(out.exit_taken, minlength=len(out.steps))
    return pd.DataFrame(
        {
            "output": np.arange(len(out.steps)),
            "exit": [s["exit"] for s in out.steps],
            "config": [s["config"] for s in out.steps],
            "images": counts,
            "fraction": counts / max(cache.num_images, 1),
        }
    )


def outcome_figures(cache: EvaluationCache, instance: Instance) -> dict[str, Any]:
    """mIoU, GFLOPs and (when the cache measured it) latency of ``instance`` as JSON-ready numbers."""
    flops = evaluate(cache, instance, unit="gflops")
    figures: dict[str, Any] = {
        "miou": flops.miou,
        "gflops": flops.cost,
        "total_gflops": flops.total_cost,
        "exit_fractions": (np.bincount(flops.exit_taken, minlength=len(flops.steps)) / cache.num_images).tolist(),
    }
    if cache.has_latency:
        ms = evaluate(cache, instance, unit="ms")
        figures.update(latency_ms=ms.cost, total_latency_ms=ms.total_cost)
    return figures
