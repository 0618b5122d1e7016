"""Image browser: every image of the study's split under the current instance, where it leaves, its own IoU there
against the final exit's, what leaving early cost it and its confidence at each kept exit; presets and a class
filter; a chosen image opens in the Confidence explorer with the same instance."""

from __future__ import annotations

import streamlit as st

from app import state
from app.boundaries import guarded
from app.loaders import dataset_of, dataset_origin
from app.routes import route
from app.views.image_table import PRESETS, image_table, select_images
from app.views.one_image import enlarge
from app.views.upload import dataset_sample
from mess_core.evaluate.instance import Instance
from mess_core.study import Study

ANY_CLASS = "any class"


@st.cache_data(show_spinner=False, max_entries=16)
def table_of(study_path: str, instance: Instance, _study: Study):
    return image_table(_study.cache, instance)


def filters(study: Study) -> tuple[str, str | None]:
    cols = st.columns([2, 1])
    preset = cols[0].radio(
        "show",
        list(PRESETS),
        horizontal=True,
        key="img_preset",
        captions=None,
        help="; ".join(f"{k}: {v}" for k, v in PRESETS.items()),
    )
    classes = list(study.cache.meta.get("classes") or [])
    chosen = cols[1].selectbox(
        "containing", [ANY_CLASS] + classes, key="img_class", help="only images whose labels hold this class"
    )
    return preset, (None if chosen == ANY_CLASS else chosen)


def chosen_image(study: Study, instance: Instance | None, row) -> None:
    """The selected image: a preview where the dataset is here, and the button that opens it in the explorer."""
    origin = dataset_origin(study)
    index = int(row["image"])
    left, right = st.columns([1, 2])
    if not origin.on_disk:
        right.info(
            f"The study's dataset ({origin.name} at {origin.root}) is not on this machine, so image {index} "
            "cannot be shown or opened in the explorer here; its figures above come from the study's cache."
        )
        return
    rgb, _ = dataset_sample(dataset_of(origin), index)
    left.image(enlarge(rgb), caption=f"image {index}: {row['name']}")
    right.markdown(
        f"**image {index}** leaves at exit {row['exit']} ({row['config']}): IoU {100 * row['IoU']:.1f}% "
        f"there, {100 * row['final IoU']:.1f}% at the final exit"
    )
    if right.button(
        "open in the Confidence explorer",
        key="img_open",
        type="primary",
        help="every exit's maps for this image, with the same instance",
    ):
        state.send_to_explorer(study, index, instance)
        st.switch_page(route("explorer"))


@guarded
def page(study: Study) -> None:
    st.title("Image browser")
    instance, source = state.current(study)
    if instance is None:
        instance, source = Instance("input-dependent"), "the backbone (the study has no searched instance)"
    cache = study.cache
    st.caption(
        f"Every image of {cache.split_label} ({cache.num_images}) under `{instance.describe()}` "
        f"({instance.mode}), {source}: change it on the Thresholds or Pareto page. IoU is the image's own mIoU "
        "(classes in its labels or prediction); loss = final IoU - IoU."
    )
    table = table_of(str(study.path), instance, study)
    preset, contains = filters(study)
    shown = select_images(cache, table, preset, contains)
    st.caption(f"{len(shown)} images: {PRESETS[preset]}" + (f", containing {contains}" if contains else ""))
    percent = {c: st.column_config.NumberColumn(c, format="%.3f") for c in shown.columns if c.startswith("c_img")}
    percent |= {
        c: st.column_config.ProgressColumn(c, format="percent", min_value=0.0, max_value=1.0)
        for c in ("IoU", "final IoU", "best IoU")
    }
    percent["loss"] = st.column_config.NumberColumn("loss", format="percent")
    event = st.dataframe(
        shown,
        hide_index=True,
        key="img_table",
        on_select="rerun",
        selection_mode="single-row",
        column_config=percent,
        height=420,
        width="stretch",
    )
    # one chooser per list (a widget keeps its value in the browser): a new preset or class shows its first image
    index = pick(shown, event.selection.rows if event else [], f"img_pick:{preset}:{contains or ''}")
    if index is None:
        st.info("No image matches: choose another preset or class.")
        return
    chosen_image(study, instance, shown.set_index("image").loc[index].to_dict() | {"image": index})


def pick(shown, rows: list[int], key: str) -> int | None:
    """The image the page shows below the table: a row selected in the table (it sets the chooser), else the
    chooser's, else the first row."""
    options = [int(i) for i in shown["image"]]
    if not options:
        return None
    selected = options[rows[0]] if rows and rows[0] < len(options) else None
    if selected is not None and selected != st.session_state.get("img_table_last"):
        st.session_state[key] = selected
    st.session_state["img_table_last"] = selected
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    names = dict(zip(options, shown["name"]))
    return st.selectbox("image (or select a row)", options, key=key, format_func=lambda i: f"{i}: {names[i]}")
