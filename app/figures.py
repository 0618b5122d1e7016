"""Streamlit drawing that more than one page does: an instance's exit histogram and per-class IoU bars
(:mod:`app.views.instance_bars`), wide on the Thresholds page and narrow in the Pareto page's linked views."""

from __future__ import annotations

import streamlit as st

from app.views.instance_bars import BarsLayout, class_iou_figure, exit_mix_figure
from app.views.thresholds import ThresholdFigures


def instance_bars(figures: ThresholdFigures, key: str, layout: BarsLayout) -> None:
    """Where the instance's images leave and its IoU per class beside the backbone's, under the chart keys
    ``{key}_hist`` and ``{key}_classes``."""
    mix_at, classes_at = st.columns(2) if layout.side_by_side else (st, st)
    mix_at.plotly_chart(exit_mix_figure(figures.histogram, layout), key=f"{key}_hist", width="stretch")
    classes_at.plotly_chart(class_iou_figure(figures.per_class, layout), key=f"{key}_classes", width="stretch")
