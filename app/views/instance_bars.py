"""An instance's two bar charts, built without Streamlit from its :class:`~app.views.thresholds.ThresholdFigures`:
where the images leave, and the IoU of every class beside the backbone's. The Thresholds page shows them wide, side
by side; the Pareto page's linked views narrow, one above the other (:class:`BarsLayout`)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go

__all__ = ["BarsLayout", "WIDE", "NARROW", "exit_mix_figure", "class_iou_figure"]


@dataclass(frozen=True)
class BarsLayout:
    """How a page sizes the two charts."""

    side_by_side: bool  # in two columns, else one above the other
    mix_height: int  # pixels
    class_height: int
    legend_y: float  # the class chart's legend, below its axis (a fraction of the plot's height)
    name_configs: bool  # the exit histogram names each exit's configuration


WIDE = BarsLayout(side_by_side=True, mix_height=340, class_height=340, legend_y=-0.25, name_configs=True)
NARROW = BarsLayout(side_by_side=False, mix_height=260, class_height=300, legend_y=-0.35, name_configs=False)


def exit_mix_figure(histogram: pd.DataFrame, layout: BarsLayout) -> go.Figure:
    """Where images leave: images per exit (the final exit last), each bar labelled with its share.

    Example:
        >>> frame = pd.DataFrame({"exit": [2, 4], "config": ["a", "final"], "images": [3, 1], "fraction": [.75, .25]})
        >>> list(exit_mix_figure(frame, WIDE).data[0].x), exit_mix_figure(frame, NARROW).data[0].text
        (['exit 2 (a)', 'exit 4 (final)'], ('75%', '25%'))
    """
    if layout.name_configs:
        labels = [f"exit {e} ({c})" for e, c in zip(histogram["exit"], histogram["config"])]
    else:
        labels = [f"exit {e}" for e in histogram["exit"]]
    fig = go.Figure(go.Bar(x=labels, y=histogram["images"], text=[f"{100 * f:.0f}%" for f in histogram["fraction"]]))
    fig.update_layout(
        title="where images leave", height=layout.mix_height, margin={"t": 40, "b": 10}, yaxis_title="images"
    )
    return fig


def class_iou_figure(per_class: pd.DataFrame, layout: BarsLayout) -> go.Figure:
    """The IoU of every class (%), this instance's beside the backbone's."""
    fig = go.Figure(
        [
            go.Bar(x=per_class["class"], y=100 * per_class["IoU"], name="this instance"),
            go.Bar(x=per_class["class"], y=100 * per_class["backbone IoU"], name="backbone"),
        ]
    )
    fig.update_layout(
        title="IoU per class (%)",
        height=layout.class_height,
        margin={"t": 40, "b": 10},
        barmode="group",
        legend={"orientation": "h", "y": layout.legend_y},
    )
    return fig
