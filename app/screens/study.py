"""Study: the model, its workload profile with the candidate exits, the exit space's cost and accuracy, and the
results table in the paper's shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import state
from app.boundaries import guarded
from app.consent import code_allowed
from app.loaders import class_iou, report_rows, results, transfer
from app.views.formats import pct
from app.views.study_figures import SpaceTable, profile_figure, profile_table, space_heatmap, space_table
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import MODES
from mess_core.search.heldout import mix_text
from mess_core.search.report import interval_name, interval_texts
from mess_core.study import Study, end_to_end_table, headline, policy_comparison
from mess_core.study.protocol import protocol_table, protocol_warning


def choose_report_set(study: Study) -> tuple[str, EvaluationCache] | None:
    """The report set's chooser: none, the study's own report split, or a cache `study evaluate --cache` wrote; the
    choice is kept for the other pages (:func:`app.state.report_set`)."""
    options = {"none": None}
    if study.manifest.get("report_cache"):
        shipped = study.manifest["report_cache"]
        options[f"its report split ({shipped})"] = str(study.path / shipped)
    options["a cache written by `study evaluate --cache`..."] = ""
    chosen = st.selectbox(
        "report set: other labelled images to score every row on, as shipped", list(options), key="report_set_choice"
    )
    path = options[chosen]
    if path == "":
        path = st.text_input(
            "cache file (.npz)",
            key="report_set_path",
            placeholder="python -m mess_core study evaluate STUDY --data ... --cache FILE",
        ).strip()
    state.keep_report_set(study, path or None)
    return state.report_set(study)


def report_set_section(study: Study) -> None:
    st.subheader("On other images")
    st.caption(
        "Every row as shipped (nothing re-tuned) on labelled images it was not tuned on: the study's report "
        "split, or your own deployment images evaluated with `python -m mess_core study evaluate STUDY --data "
        "... --data-root ... --cache FILE`. The Pareto page shows the selected instance there too."
    )
    chosen = choose_report_set(study)
    if chosen is None:
        return
    path, other = chosen
    rows = report_rows(str(study.path), path)
    st.markdown(
        f"**{other.meta.get('dataset')} {other.split_label}**: {other.num_images} images, "
        f"backbone {pct(float(other.head_miou()[other.final_head]))}; "
        f"{int(rows['held'].dropna().sum())} of {len(rows['held'].dropna())} promises held"
    )
    shown = pd.DataFrame(
        {
            "mode": rows["mode"],
            "": rows["row"],
            "tuned mIoU %": 100 * rows["tuned_miou"],
            "tuned speedup": rows["tuned_speedup"],
            "mIoU % here": 100 * rows["miou"],
            f"drop pp [{interval_name(rows)}]": [
                f"{r.drop_pp:.2f} [{r.drop_low:.2f}, {r.drop_high:.2f}]" for r in rows.itertuples()
            ],
            "speedup here": rows["speedup"],
            "images leave": [mix_text(m) for m in rows["exit_mix"]],
            "promise": rows["promise"],
            "held": rows["held"].map({True: "yes", False: "no", None: ""}),
        }
    )
    st.dataframe(
        shown.style.format(
            {"tuned mIoU %": "{:.2f}", "mIoU % here": "{:.2f}", "tuned speedup": "{:.2f}x", "speedup here": "{:.2f}x"},
            na_rep="-",
        ),
        hide_index=True,
        key="report_rows",
    )


def overview_section(study: Study, space: SpaceTable) -> None:
    manifest, cache = study.manifest, study.cache
    if manifest.get("description"):
        st.write(manifest["description"])
    st.markdown(
        f"**{cache.meta.get('model', '?')}** on **{cache.meta.get('dataset')}**, figures on its tuning images "
        f"`{cache.split_label}` ({cache.num_images} images)"
    )
    cols = st.columns(5)
    cols[0].metric("input", "x".join(map(str, cache.meta.get("input_size", []))))
    cols[1].metric("backbone mIoU", pct(space.final_miou))
    cols[2].metric("backbone GFLOPs", f"{space.backbone_gflops:.3f}")
    cols[3].metric("exits (N)", cache.num_exits)
    cols[4].metric("configurations per exit", len(cache.configs))
    data = protocol_table(manifest)
    if data is not None:
        st.markdown(
            "**Which images fed which step** (groups are scenes: CamVid's drive, Cityscapes' city; a promise "
            "holds on new scenes only when it was tuned on scenes the network did not train on)"
        )
        st.dataframe(data, hide_index=True, key="protocol_table")
    if (warning := protocol_warning(manifest)) is not None and study.is_packed:
        st.warning(warning)


def space_section(study: Study, space: SpaceTable) -> None:
    cache = study.cache
    st.subheader("Workload profile")
    if study.is_packed or code_allowed(study, where="study"):  # a run folder's profile is computed from its network
        workload = profile_table(study.profile(consent=True))
        st.plotly_chart(profile_figure(workload), key="profile_chart", width="stretch")
        st.dataframe(
            workload.exits.rename(
                columns={"index": "exit", "cost_fraction": "share of workload", "gflops": "GFLOPs to here"}
            ),
            hide_index=True,
            key="exit_table",
        )

    st.subheader("Exit space")
    st.caption(
        f"{len(cache.configs)} configurations at each of {cache.num_exits - 1} early exits: GFLOPs to reach the "
        f"exit and run its head, and the exit's mIoU on {cache.split_label} "
        f"(final exit {pct(space.final_miou)}, {space.backbone_gflops:.3f} GFLOPs)"
    )
    left, right = st.columns(2)
    left.plotly_chart(space_heatmap(space.cost, "GFLOPs per image", "Blues", ".3f"), key="space_cost", width="stretch")
    right.plotly_chart(space_heatmap(100 * space.miou, "mIoU (%)", "Greens", ".1f"), key="space_miou", width="stretch")


def results_section(study: Study) -> None:
    st.subheader("Results")
    mode = st.radio("mode", MODES, index=2, horizontal=True, key="study_mode")
    if mode == "input-dependent" and study.latency() is not None:
        st.caption(
            "Latency measured in one run against the original model (eager, this study's build machine): "
            "ms per image at each batch size; speedups against the original."
        )
        st.dataframe(end_to_end_table(study, intervals=True), hide_index=True, key="end_to_end")
    table = results(str(study.path), mode)
    rule = study.promise_rule
    if rule["confidence"] is not None:
        st.caption(
            f"The min-cost rows and the naive policy were chosen to keep their drop at "
            f"{100 * rule['confidence']:g}% confidence on a fresh set of as many images"
            + (f", resampling scene blocks of {rule['block']} frames" if rule["block"] else "")
            + ", not only on the tuning images."
        )
    shown = pd.DataFrame(
        {
            "": table["row"],
            "mIoU %": 100 * table["miou"],
            f"drop pp [{interval_name(table)}]": interval_texts(table),
            "GFLOPs": table["gflops"],
            "CPU ms": table["latency_ms"],
            "speedup (GFLOPs)": table["speedup"],
            "speedup (ms)": table.get("latency_speedup", np.nan),
            "exits used": table["exits"],
        }
    )
    if "eval_miou" in table and study.report_cache is not None:
        shown.insert(2, f"mIoU % ({study.report_cache.split_label})", 100 * table["eval_miou"])
    st.dataframe(
        shown.style.format(
            {c: "{:.2f}" for c in shown.columns if c.startswith("mIoU")}
            | {"GFLOPs": "{:.3f}", "CPU ms": "{:.2f}", "speedup (GFLOPs)": "{:.2f}x", "speedup (ms)": "{:.2f}x"},
            na_rep="-",
        ),
        hide_index=True,
        key="results_table",
    )
    transfer_section(study, mode)
    if mode == "input-dependent":
        input_dependent_section(study)


def transfer_section(study: Study, mode: str) -> None:
    st.markdown(
        f"**Transfer check** ({mode}): each row's objective searched on one scene part of the tuning images and "
        "scored on the other (both ways), against that part's final exit; a promise that only holds "
        "where it was tuned will not hold on new scenes"
    )
    # the build stores it; for a study built before that, it is computed from the cache (1-10 s, once per study)
    check = transfer(str(study.path), mode)
    if check is not None:
        st.dataframe(check, hide_index=True, key="transfer_table")


def input_dependent_section(study: Study) -> None:
    st.markdown(
        "**Exit policies at equal accuracy** (speedup in average GFLOPs against the backbone, read off "
        "each policy's front), against the oracle bound: the least cost any per-image exit choice over "
        "the same instances reaches when it knows the labels"
    )
    st.dataframe(policy_comparison(study), hide_index=True, key="policy_table")
    st.markdown(
        "**Targets on this study** (the paper's figures for context)\n\n"
        + "\n".join(f"- {line}" for line in headline(study))
    )


def classes_and_build_section(study: Study) -> None:
    st.markdown("**Where exits lose**: IoU per class of each exit's most accurate head and of the final exit")
    per_class = class_iou(str(study.path))
    percent = [c for c in per_class.columns if c not in ("exit", "config", "gflops")]
    st.dataframe(
        per_class.style.format({c: "{:.1%}" for c in percent} | {"gflops": "{:.3f}"}, na_rep="-"),
        hide_index=True,
        key="class_iou",
    )
    training = study.training_table()
    if training is not None:
        st.subheader("Stage 2 training variants")
        st.caption(
            "mIoU of every exit on the tuning split with one configuration: exit loss (cross-entropy, "
            "distillation, Positive Filtering Distillation), with or without exit-aware pre-training (stage 1)"
        )
        st.dataframe(training, hide_index=True, key="training_table")
    if study.is_packed:
        with st.expander("how this study was built"):
            st.code(study.manifest.get("command", ""), language="bash")
            st.json(
                {k: study.manifest.get(k) for k in ("built", "machine", "versions", "wall_seconds")}, expanded=False
            )


@guarded
def page(study: Study) -> None:
    st.title(study.name)
    space = space_table(study.cache)
    overview_section(study, space)
    space_section(study, space)
    results_section(study)
    report_set_section(study)
    classes_and_build_section(study)
