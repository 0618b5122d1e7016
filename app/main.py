"""MESS Explorer app: placeholder until the explorer lands (issue 6).

It already shows real numbers from the engine: the workload profile and exit placement of a reference model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mess_core import MessError, models  # noqa: E402
from mess_core.cli import profile_report  # noqa: E402
from mess_core.network import convert  # noqa: E402


@st.cache_data(show_spinner="Profiling...")
def load_profile(model_name: str, height: int, width: int, exits: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = models.create(model_name, num_classes=11)
    net = convert(model, torch.randn(1, 3, height, width), num_exits=exits, exit_head=None)
    return profile_report(net, model_name=model_name)


def profile_page() -> None:
    st.title("MESS Explorer")
    st.info(
        "This is a placeholder: the explorer (confidence maps, thresholds, Pareto search) is not built yet. "
        "Below is what the engine already does: the workload profile of a reference model and where N exits go."
    )
    left, mid, right = st.columns(3)
    name = left.selectbox("Model", models.list_models(), index=models.list_models().index("mobilenetv2_fcn"))
    height, width = mid.selectbox("Input size", [(180, 240), (360, 480)], format_func=lambda s: f"{s[0]}x{s[1]}")
    exits = right.slider("Exits (N)", 2, 8, 6)
    try:
        report = load_profile(name, height, width, exits)
    except MessError as exc:
        st.error(str(exc))
        return
    prof = report["profile"]
    st.metric("Total per image", f"{prof['total_gflops']:.2f} GFLOPs", f"{prof['total_gmacs']:.2f} GMACs", delta_color="off")
    nodes = pd.DataFrame(prof["nodes"])
    nodes["cumulative GFLOPs"] = nodes["flops"].cumsum() / 1e9
    fig = go.Figure(go.Scatter(x=list(range(len(nodes))), y=nodes["cumulative GFLOPs"], name="cumulative", mode="lines"))
    for e in report["exits"]:
        fig.add_vline(x=nodes.index[nodes["name"] == e["node"]][0], line_dash="dot", annotation_text=f"exit {e['index']}")
    fig.update_layout(xaxis_title="graph node (topological order)", yaxis_title="cumulative GFLOPs", height=380)
    st.plotly_chart(fig, width="stretch")
    table = pd.DataFrame(report["exits"])[["index", "node", "module", "cost_fraction", "gflops", "channels", "stride"]]
    st.dataframe(table, hide_index=True)


st.set_page_config(page_title="MESS Explorer", layout="wide")
st.navigation([st.Page(profile_page, title="Workload profile", default=True)]).run()
