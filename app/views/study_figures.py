"""The figures of a study's overview, computed without Streamlit: where the workload sits layer by layer and where
the candidate exits cut it (from :meth:`mess_core.study.Study.profile`), and the exit space, what every exit costs
and scores with every configuration (from the evaluation cache), as tables and as the plotly figures the Study page
shows.

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> space = space_table(EvaluationCache.random(images=8, exits=3, configs=2, classes=3, seed=0))
    >>> space.cost.shape, list(space.cost.columns)
    ((2, 2), ['exit 1', 'exit 2'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mess_core.evaluate.cache import EvaluationCache

__all__ = ["ProfileTable", "profile_table", "profile_figure", "SpaceTable", "space_table", "space_heatmap"]


@dataclass(frozen=True)
class ProfileTable:
    """The workload of one image layer by layer, in execution order, and where the candidate exits sit in it."""

    layers: pd.DataFrame  # name, gflops (of the layer), cumulative (GFLOPs up to and including it); index: position
    exit_positions: dict[int, int]  # exit index -> position of the layer it branches from (exits found in layers)
    exits: pd.DataFrame  # one row per exit: index, node, module, cost_fraction, gflops (to here), channels, stride


def profile_table(profile: Mapping[str, Any]) -> ProfileTable:
    """The Study page's workload figure from a study's profile (``{"profile": {"nodes": [...]}, "exits": [...]}``,
    :meth:`mess_core.study.Study.profile`): GFLOPs per layer and cumulated, and the layer each exit branches from."""
    nodes = pd.DataFrame(profile["profile"]["nodes"])
    layers = pd.DataFrame({"name": nodes["name"], "gflops": nodes["flops"] / 1e9})
    layers["cumulative"] = layers["gflops"].cumsum()
    positions = {}
    for e in profile["exits"]:
        hit = layers.index[layers["name"] == e["node"]]
        if len(hit):
            positions[int(e["index"])] = int(hit[0])
    exits = pd.DataFrame(profile["exits"])[["index", "node", "module", "cost_fraction", "gflops", "channels", "stride"]]
    return ProfileTable(layers, positions, exits)


@dataclass(frozen=True)
class SpaceTable:
    """Every early exit with every configuration on the cache's split: rows are configurations, columns exits
    ("exit 1" ...)."""

    cost: pd.DataFrame  # GFLOPs per image to reach the exit and run its head
    miou: pd.DataFrame  # the exit's mIoU (a fraction)
    final_miou: float  # the final exit's (the backbone's) mIoU
    backbone_gflops: float  # the backbone's GFLOPs per image


def space_table(cache: EvaluationCache) -> SpaceTable:
    """The exit space's cost and accuracy from an evaluation cache, beside the backbone's."""
    reach = cache.reach_cost("gflops")
    exits = [f"exit {i}" for i in range(1, cache.num_exits)]
    cost = pd.DataFrame(reach[1 : cache.num_exits, None] + cache.head_gflops, index=exits, columns=cache.configs).T
    miou = cache.head_miou()[:-1].reshape(cache.num_exits - 1, len(cache.configs))
    return SpaceTable(
        cost=cost,
        miou=pd.DataFrame(miou, index=exits, columns=cache.configs).T,
        final_miou=float(cache.head_miou()[cache.final_head]),
        backbone_gflops=float(cache.stage_gflops.sum()),
    )


def profile_figure(workload: ProfileTable) -> go.Figure:
    """The workload layer by layer (bars) and summed up (a line, on its own axis), with a dotted line where each
    candidate exit branches off."""
    layers = workload.layers
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(
            x=layers.index,
            y=layers["gflops"],
            name="GFLOPs of the layer",
            marker_color="#9aa5b1",
            customdata=layers[["name"]],
            hovertemplate="%{customdata[0]}<br>%{y:.4f} GFLOPs<extra></extra>",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            x=layers.index,
            y=layers["cumulative"],
            name="cumulative GFLOPs",
            mode="lines",
            line={"color": "#1f77b4", "width": 2},
        ),
        secondary_y=True,
    )
    for index, position in workload.exit_positions.items():
        fig.add_vline(
            x=position,
            line_dash="dot",
            line_color="#d62728",
            annotation_text=f"exit {index}",
            annotation_position="top",
        )
    fig.update_layout(
        height=380,
        margin={"t": 30, "b": 10},
        legend={"orientation": "h", "y": -0.2},
        xaxis_title="layer (graph node, in execution order)",
    )
    fig.update_yaxes(title_text="GFLOPs per layer", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="cumulative GFLOPs", secondary_y=True, rangemode="tozero", showgrid=False)
    return fig


def space_heatmap(frame: pd.DataFrame, title: str, scale: str, fmt: str) -> go.Figure:
    """A :class:`SpaceTable` table (configurations x exits) as a heatmap, each cell written in ``fmt``, in the
    colours of plotly's ``scale``."""
    fig = go.Figure(
        go.Heatmap(
            z=frame.to_numpy(),
            x=list(frame.columns),
            y=list(frame.index),
            colorscale=scale,
            texttemplate=f"%{{z:{fmt}}}",
            hovertemplate="%{y} at %{x}: %{z:" + fmt + "}<extra></extra>",
        )
    )
    fig.update_layout(title=title, height=90 + 28 * len(frame), margin={"t": 40, "b": 10, "l": 10, "r": 10})
    fig.update_yaxes(autorange="reversed")
    return fig
