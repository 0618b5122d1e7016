"""The sidebar's study chooser: a study of the studies folder (:func:`app.settings.studies_root`) or any folder the
user types, opened, checked against its manifest and summed up in a caption."""

from __future__ import annotations

import streamlit as st

from app.loaders import load_study, study_problems
from app.settings import default_study, studies_root
from mess_core.errors import MessError
from mess_core.io import expand_home
from mess_core.study import Study, StudyError, list_studies

OTHER = "another folder..."


def _typed_folder() -> str | None:
    """The resolved path of the folder typed in the sidebar, or None (with a message in the page)."""
    typed = st.sidebar.text_input(
        "Folder",
        key="study_folder",
        placeholder="/path/to/study or run folder",
        help="a study (manifest.json) or a run folder with multi_exit.pt and a *.npz cache",
    )
    if not typed:
        st.info(
            "Type the path of a study folder (or a run folder with multi_exit.pt and an evaluation cache) "
            "in the sidebar."
        )
        return None
    try:
        return str(expand_home(typed, StudyError).resolve())
    except (ValueError, OSError) as exc:  # a NUL byte, an unknown ~user, a loop of links: not a path at all
        shown = typed if len(typed) <= 120 else f"{typed[:120]}... ({len(typed)} characters)"
        st.error(f"The folder {shown!r} is not a usable path ({exc}); type the path of a study folder.")
        return None


def _caption(study: Study) -> None:
    meta = study.cache.meta
    st.sidebar.caption(
        f"**{study.name}**  \n{meta.get('model')} on {meta.get('dataset')} {study.cache.split_label}, "
        f"{'x'.join(map(str, meta.get('input_size', [])))}, {study.cache.num_images} images, "
        f"{study.cache.num_exits} exits x {len(study.cache.configs)} configurations"
    )


def choose_study() -> Study | None:
    """The sidebar chooser's study; None (with a message in the page) when nothing usable is chosen."""
    root = studies_root()
    found = {p.name: p for p in list_studies(root)}
    names = list(found) + [OTHER]
    default = names.index(default_study()) if default_study() in found else 0
    choice = st.sidebar.selectbox(
        "Study", names, index=default, key="study_choice", help=f"studies in {root}, or a study/run folder of your own"
    )
    path = _typed_folder() if choice == OTHER else str(found[choice].resolve())
    if path is None:
        return None
    try:
        study = load_study(path)
    except MessError as exc:
        st.error(f"This study cannot be opened: {exc}")
        return None
    problems = study_problems(path) if study.is_packed else []
    if problems:
        st.warning(
            "This study's files differ from its manifest (the figures may not match the weights): "
            + "; ".join(problems)
        )
    _caption(study)
    st.session_state["study_path"] = path
    return study
