"""What the pages share in ``st.session_state`` beyond their own widgets: the current instance (the one the Thresholds
sliders describe or the Pareto page selected last), the instance pinned for comparison, and an image sent to the
Confidence explorer. Each is kept with the study it belongs to, so switching studies never carries one over."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.common import results
from mess_core.evaluate.instance import Instance
from mess_core.search.report import Row
from mess_core.study import Study

CURRENT, PINNED, SENT = "current_instance", "pinned_instance", "explorer_sent"


def searched(study: Study) -> Instance | None:
    """The study's searched instance (MESS input-dependent, <= 1 pp), every page's default."""
    table = results(str(study.path), "input-dependent")
    row = table.loc[table["id"] == Row.MIN_COST_1PP, "instance"]
    return row.iloc[0] if len(row) and row.iloc[0] is not None else None


def _get(key: str, study: Study) -> Any:
    held = st.session_state.get(key)
    return held[1] if held is not None and held[0] == str(study.path) else None


def remember(study: Study, instance: Instance, source: str) -> None:
    """Make ``instance`` the current one (``source`` says which page chose it)."""
    st.session_state[CURRENT] = (str(study.path), (instance, source))


def current(study: Study) -> tuple[Instance | None, str]:
    """(the current instance, where it comes from): the last one the Thresholds or Pareto page chose, else the
    study's searched instance."""
    held = _get(CURRENT, study)
    if held is not None:
        return held
    return searched(study), "the study's searched instance (MESS <= 1 pp)"


def pin(study: Study, instance: Instance | None) -> None:
    if instance is None:
        st.session_state.pop(PINNED, None)
    else:
        st.session_state[PINNED] = (str(study.path), instance)


def pinned(study: Study) -> Instance | None:
    return _get(PINNED, study)


def send_to_explorer(study: Study, index: int, instance: Instance | None) -> None:
    """Ask the Confidence explorer to open image ``index`` of the study's split with ``instance``'s settings (its
    own widgets are dropped, so that they start from these)."""
    for key in [k for k in st.session_state if str(k).startswith("explorer_")]:
        del st.session_state[key]
    st.session_state[SENT] = (str(study.path), (int(index), instance))


def sent(study: Study) -> tuple[int, Instance | None] | None:
    return _get(SENT, study)
