"""The Thresholds page's figures, computed without Streamlit from an evaluation cache: an instance's accuracy,
cost, exit mix and per-class IoU on the cache's split, the instance the sliders describe, and where they start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pandas as pd

from mess_core.conversion.exits import ExitSpec
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, KeptExit, evaluate, exit_histogram
from mess_core.evaluate.policy import (
    ConfidencePolicy,
    EdgeMasking,
)
from mess_core.search.uncertainty import DropInterval, drop_interval


@dataclass(frozen=True)
class ThresholdFigures:
    """An instance's exact figures on a split, beside the backbone's (the final exit's)."""

    miou: float
    gflops: float  # average per image
    speedup: float  # backbone GFLOPs / this instance's
    backbone_miou: float
    backbone_gflops: float
    drop_pp: float  # mIoU points lost against the backbone (negative: gained)
    histogram: pd.DataFrame  # where images leave: exit, config, images, fraction (final exit last)
    per_class: pd.DataFrame  # class, IoU, backbone IoU
    latency_ms: float | None = None  # the cache's measured CPU latency, when it has one
    backbone_ms: float | None = None
    latency_speedup: float | None = None
    # the drop's 90% bootstrap interval over the cache's images (mess_core.search.uncertainty), for the page to show
    drop_interval: DropInterval | None = None

    @property
    def measured(self) -> bool:
        """Whether the latency figures are there (the cache holds measured latencies)."""
        return self.latency_ms is not None

    @property
    def left_early(self) -> float:
        """The fraction of images that leave before the final exit."""
        return 1 - float(self.histogram["fraction"].iloc[-1])

    def scalars(self) -> dict[str, float]:
        """The single-number figures by name (the latency ones only when measured), as a downloaded instance
        records them."""
        names = ["miou", "gflops", "speedup", "backbone_miou", "backbone_gflops", "drop_pp"]
        names += ["latency_ms", "backbone_ms", "latency_speedup"] if self.measured else []
        return {name: getattr(self, name) for name in names}


def threshold_summary(cache: EvaluationCache, instance: Instance) -> ThresholdFigures:
    """The Thresholds page's figures for ``instance`` on ``cache``: mIoU, average GFLOPs (and ms when measured),
    speedup vs the backbone, the drop from the final exit (with its bootstrap interval), the exit histogram and the
    per-class IoU."""
    out = evaluate(cache, instance, unit="gflops")
    base = evaluate(cache, Instance(instance.mode), unit="gflops")
    classes = cache.meta.get("classes") or [f"class {k}" for k in range(cache.num_classes)]
    latency: dict[str, float] = {}
    if cache.has_latency:
        ms, base_ms = evaluate(cache, instance, unit="ms"), evaluate(cache, Instance(instance.mode), unit="ms")
        latency = {"latency_ms": ms.cost, "backbone_ms": base_ms.cost, "latency_speedup": base_ms.cost / ms.cost}
    return ThresholdFigures(
        miou=out.miou,
        gflops=out.cost,
        speedup=base.cost / out.cost,
        backbone_miou=base.miou,
        backbone_gflops=base.cost,
        drop_pp=100 * (base.miou - out.miou),
        histogram=exit_histogram(cache, instance),
        per_class=pd.DataFrame({"class": classes, "IoU": out.iou, "backbone IoU": base.iou}),
        **latency,
        drop_interval=drop_interval(cache, instance),
    )


def instance_from_settings(
    mode: str, th_img: Mapping[int, float], configs: Mapping[int, str], *, th_pix: float, edges: EdgeMasking | None
) -> Instance:
    """An input-dependent instance keeping the exits of ``th_img`` with their ``configs``: what the Thresholds and
    Explorer sliders describe."""
    kept = tuple(KeptExit(int(e), ExitSpec.coerce(configs[e]).id, float(th_img[e])) for e in sorted(th_img))
    return Instance(mode, kept, ConfidencePolicy(th_pix=th_pix, edges=edges))


@dataclass(frozen=True)
class ThresholdDefaults:
    """What the Thresholds page's widgets start from when there is no searched instance to load."""

    kept: list[int]  # kept exits
    th_pix: float  # on the cache's th_pix grid
    th_img: float  # for an exit just added
    edges: EdgeMasking  # the edge masking the cache was evaluated with


def threshold_defaults(cache: EvaluationCache) -> ThresholdDefaults:
    """One exit half way down the network, th_pix 0.8 (the middle of the cache's grid where 0.8 is not on it),
    th_img 0.8, and the cache's own edge masking (s=3, w=7 where its meta does not say)."""
    grid = list(cache.th_pix_grid)
    edges = cache.meta.get("edge_masking", {"size": 3, "window": 7})
    return ThresholdDefaults(
        kept=[max(1, (cache.num_exits - 1) // 2)],
        th_pix=0.8 if 0.8 in grid else grid[len(grid) // 2],
        th_img=0.8,
        edges=EdgeMasking(size=edges["size"], window=edges["window"]),
    )
