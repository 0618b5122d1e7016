"""Study: the model, its workload profile with the candidate exits, the exit space's cost and accuracy, and the
results table in the paper's shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app.common import class_iou, guarded, pct, results
from mess_core.instance import MODES
from mess_core.study import Study, end_to_end_table, headline, policy_comparison


def profile_figure(profile: dict) -> go.Figure:
    nodes = pd.DataFrame(profile["profile"]["nodes"])
    nodes["gflops"] = nodes["flops"] / 1e9
    nodes["cumulative"] = nodes["gflops"].cumsum()
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=nodes.index, y=nodes["gflops"], name="GFLOPs of the layer", marker_color="#9aa5b1",
                         customdata=nodes[["name"]], hovertemplate="%{customdata[0]}<br>%{y:.4f} GFLOPs<extra></extra>"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=nodes.index, y=nodes["cumulative"], name="cumulative GFLOPs", mode="lines",
                             line={"color": "#1f77b4", "width": 2}), secondary_y=True)
    for e in profile["exits"]:
        hit = nodes.index[nodes["name"] == e["node"]]
        if len(hit):
            fig.add_vline(x=int(hit[0]), line_dash="dot", line_color="#d62728",
                          annotation_text=f"exit {e['index']}", annotation_position="top")
    fig.update_layout(height=380, margin={"t": 30, "b": 10}, legend={"orientation": "h", "y": -0.2},
                      xaxis_title="layer (graph node, in execution order)")
    fig.update_yaxes(title_text="GFLOPs per layer", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="cumulative GFLOPs", secondary_y=True, rangemode="tozero", showgrid=False)
    return fig


def exit_space_frames(study: Study) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(GFLOPs to reach each exit with each configuration, mIoU of each exit x configuration) on the study's split."""
    cache = study.cache
    reach = cache.reach_cost("gflops")
    exits = [f"exit {i}" for i in range(1, cache.num_exits)]
    cost = pd.DataFrame(reach[1:cache.num_exits, None] + cache.head_gflops, index=exits, columns=cache.configs).T
    miou = cache.head_miou()[:-1].reshape(cache.num_exits - 1, len(cache.configs))
    acc = pd.DataFrame(100 * miou, index=exits, columns=cache.configs).T
    return cost, acc


def heatmap(frame: pd.DataFrame, title: str, scale: str, fmt: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=frame.to_numpy(), x=list(frame.columns), y=list(frame.index), colorscale=scale,
                               texttemplate=f"%{{z:{fmt}}}", hovertemplate="%{y} at %{x}: %{z:" + fmt + "}<extra></extra>"))
    fig.update_layout(title=title, height=90 + 28 * len(frame), margin={"t": 40, "b": 10, "l": 10, "r": 10})
    fig.update_yaxes(autorange="reversed")
    return fig


@guarded
def page(study: Study) -> None:
    st.title(study.name)
    manifest, cache = study.manifest, study.cache
    if manifest.get("description"):
        st.write(manifest["description"])
    final_miou = float(cache.head_miou()[cache.final_head])
    st.markdown(f"**{cache.meta.get('model', '?')}** on **{cache.meta.get('dataset')}**, figures on its "
                f"`{cache.meta.get('split')}` split ({cache.num_images} images)")
    cols = st.columns(5)
    cols[0].metric("input", "x".join(map(str, cache.meta.get("input_size", []))))
    cols[1].metric("backbone mIoU", pct(final_miou))
    cols[2].metric("backbone GFLOPs", f"{cache.stage_gflops.sum():.3f}")
    cols[3].metric("exits (N)", cache.num_exits)
    cols[4].metric("configurations per exit", len(cache.configs))

    st.subheader("Workload profile")
    profile = study.profile()
    st.plotly_chart(profile_figure(profile), key="profile_chart", width="stretch")
    exits = pd.DataFrame(profile["exits"])[["index", "node", "module", "cost_fraction", "gflops", "channels", "stride"]]
    st.dataframe(exits.rename(columns={"index": "exit", "cost_fraction": "share of workload",
                                       "gflops": "GFLOPs to here"}), hide_index=True, key="exit_table")

    st.subheader("Exit space")
    st.caption(f"{len(cache.configs)} configurations at each of {cache.num_exits - 1} early exits: GFLOPs to reach the "
               f"exit and run its head, and the exit's mIoU on {cache.meta.get('split')} "
               f"(final exit {pct(final_miou)}, {cache.stage_gflops.sum():.3f} GFLOPs)")
    cost, acc = exit_space_frames(study)
    left, right = st.columns(2)
    left.plotly_chart(heatmap(cost, "GFLOPs per image", "Blues", ".3f"), key="space_cost", width="stretch")
    right.plotly_chart(heatmap(acc, "mIoU (%)", "Greens", ".1f"), key="space_miou", width="stretch")

    st.subheader("Results")
    mode = st.radio("mode", MODES, index=2, horizontal=True, key="study_mode")
    if mode == "input-dependent" and study.latency() is not None:
        st.caption("Latency measured in one run against the original model (eager, this study's build machine): "
                   "ms per image at each batch size; speedups against the original.")
        st.dataframe(end_to_end_table(study), hide_index=True, key="end_to_end")
    table = results(str(study.path), mode)
    shown = pd.DataFrame({
        "": table["row"], "mIoU %": 100 * table["miou"], "GFLOPs": table["gflops"],
        "CPU ms": table["latency_ms"], "speedup (GFLOPs)": table["speedup"],
        "speedup (ms)": table.get("latency_speedup", np.nan), "exits used": table["exits"],
    })
    if "eval_miou" in table and study.report_cache is not None:
        shown.insert(2, f"mIoU % ({study.report_cache.meta.get('split')})", 100 * table["eval_miou"])
    st.dataframe(shown.style.format({c: "{:.2f}" for c in shown.columns if c.startswith("mIoU")}
                                    | {"GFLOPs": "{:.3f}", "CPU ms": "{:.2f}", "speedup (GFLOPs)": "{:.2f}x",
                                       "speedup (ms)": "{:.2f}x"}, na_rep="-"),
                 hide_index=True, key="results_table")
    if mode == "input-dependent":
        st.markdown("**Exit policies at equal accuracy** (speedup in average GFLOPs against the backbone, read off "
                    "each policy's front), against the oracle bound: the least cost any per-image exit choice over "
                    "the same instances reaches when it knows the labels")
        st.dataframe(policy_comparison(study), hide_index=True, key="policy_table")
        st.markdown("**Targets on this study** (the paper's figures for context)\n\n"
                    + "\n".join(f"- {line}" for line in headline(study)))
    st.markdown("**Where exits lose**: IoU per class of each exit's most accurate head and of the final exit")
    per_class = class_iou(str(study.path))
    percent = [c for c in per_class.columns if c not in ("exit", "config", "gflops")]
    st.dataframe(per_class.style.format({c: "{:.1%}" for c in percent} | {"gflops": "{:.3f}"}, na_rep="-"),
                 hide_index=True, key="class_iou")
    training = study.training_table()
    if training is not None:
        st.subheader("Stage 2 training variants")
        st.caption("mIoU of every exit on the tuning split with one configuration: exit loss (cross-entropy, "
                   "distillation, Positive Filtering Distillation), with or without exit-aware pre-training (stage 1)")
        st.dataframe(training, hide_index=True, key="training_table")
    if study.is_packed:
        with st.expander("how this study was built"):
            st.code(manifest.get("command", ""), language="bash")
            st.json({k: manifest.get(k) for k in ("built", "machine", "versions", "wall_seconds")}, expanded=False)
