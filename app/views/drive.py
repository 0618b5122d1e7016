"""The Drive page's figures, computed without Streamlit: the frames a drive page can play (a sequence of the study's
dataset, a generated drive, a video or a folder of frames), each played frame drawn as the annotated video draws it,
and the timeline under it (the exit per frame, both models' latency per frame, the frames whose early prediction
differs most from the original model's), which is also where a click seeks.

Example:
    >>> from mess_core.deploy.drive import FrameResult
    >>> r = [FrameResult(i, f"f{i}", e, (0.9,), 10.0, 30.0, 0.5, 2.0, a, None, None)
    ...      for i, (e, a) in enumerate([(1, 0.90), (3, 1.0), (1, 0.97)])]
    >>> most_changed(r, count=1)
    [0]
    >>> figure = timeline_figure(r, num_exits=3, current=1)
    >>> [t.name for t in figure.data]
    ['exit taken', 'most changed', 'deployed instance', 'original model']
    >>> frame_of_click({"selection": {"points": [{"customdata": [2]}]}})
    2
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mess_core.deploy.annotate import exit_colour
from mess_core.deploy.drive import DriveTotals, FrameResult

__all__ = ["DriveSource", "most_changed", "timeline_figure", "frame_of_click", "totals_metrics", "RATES"]

RATES = (2, 5, 10, 15, 30)  # playback rates offered, frames per second


@dataclass(frozen=True)
class DriveSource:
    """What a drive plays, as a cache key: ``kind`` is "sequence" (``name``: the group of the study's dataset),
    "generated", "video" (``name``: the uploaded file's name, ``digest`` its SHA-256) or "folder" (``name``: the
    folder)."""

    kind: str
    name: str
    digest: str = ""

    @property
    def label(self) -> str:
        return {"sequence": f"sequence {self.name}", "generated": "a generated drive"}.get(self.kind, self.name)


def most_changed(results: Sequence[FrameResult], *, count: int = 5) -> list[int]:
    """Positions of the ``count`` early-exit frames whose prediction agrees least with the original model's: where
    leaving early cost the most pixels."""
    early = [i for i, r in enumerate(results) if r.agreement < 1.0]
    return sorted(sorted(early, key=lambda i: results[i].agreement)[:count])


def timeline_figure(
    results: Sequence[FrameResult], *, num_exits: int, current: int | None = None, marked: Sequence[int] = ()
) -> go.Figure:
    """Two rows over the frame index: the exit each frame took (coloured as the video's badge; the frames that
    changed most ringed) and the milliseconds of the deployed instance and of the original model. Every point
    carries its frame's position in ``customdata``, so a click seeks; a vertical line marks ``current``."""
    marked = list(marked) if marked else most_changed(results)
    index = [r.index for r in results]
    positions = list(range(len(results)))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.45, 0.55])
    colours = [f"rgb{exit_colour(r.exit, num_exits)}" for r in results]
    fig.add_trace(
        go.Scatter(
            x=index,
            y=[r.exit for r in results],
            mode="markers",
            marker={"color": colours, "size": 9, "symbol": "square"},
            customdata=[[p] for p in positions],
            name="exit taken",
            hovertemplate="frame %{x}: exit %{y}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=[results[p].index for p in marked],
            y=[results[p].exit for p in marked],
            mode="markers",
            marker={"color": "rgba(0,0,0,0)", "size": 16, "line": {"color": "black", "width": 2}},
            customdata=[[p] for p in marked],
            name="most changed",
            hovertemplate="frame %{x}: agrees least with the original model<extra></extra>",
        ),
        row=1,
        col=1,
    )
    for name, values, colour in (
        ("deployed instance", [r.ms for r in results], "#1f77b4"),
        ("original model", [r.original_ms for r in results], "#7f7f7f"),
    ):
        fig.add_trace(
            go.Scatter(
                x=index,
                y=values,
                mode="lines+markers",
                marker={"size": 4},
                line={"color": colour},
                customdata=[[p] for p in positions],
                name=name,
                hovertemplate="frame %{x}: %{y:.1f} ms<extra>" + name + "</extra>",
            ),
            row=2,
            col=1,
        )
    if current is not None and 0 <= current < len(results):
        fig.add_vline(x=results[current].index, line={"color": "red", "width": 1})
    fig.update_yaxes(title_text="exit", range=[0.5, num_exits + 0.5], dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="ms", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(title_text="frame", row=2, col=1)
    fig.update_layout(height=330, margin={"l": 50, "r": 10, "t": 10, "b": 40}, clickmode="event+select")
    return fig


def frame_of_click(event: Mapping[str, Any] | None) -> int | None:
    """The frame position a click on the timeline chose (Streamlit's plotly selection event), None without one."""
    points = ((event or {}).get("selection") or {}).get("points") or []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and data:
            return int(data[0])
        if isinstance(data, (int, float)):
            return int(data)
    return None


def totals_metrics(totals: DriveTotals) -> dict[str, str]:
    """The running totals as the page's metrics: time and GFLOPs saved, frames per second of each model."""
    return {
        "frames played": f"{totals.frames}",
        "time saved": f"{totals.ms_saved / 1000:.2f} s ({totals.speedup:.2f}x)" if totals.frames else "-",
        "GFLOPs saved": f"{totals.gflops_saved:.1f}" if totals.frames else "-",
        "fps (instance / original)": f"{totals.fps:.1f} / {totals.original_fps:.1f}" if totals.frames else "-",
    }
