"""What the pages share in ``st.session_state`` beyond their own widgets: the current instance (the one the Thresholds
sliders describe or the Pareto page selected last), the instance pinned for comparison, an image sent to the
Confidence explorer (with the explorer's widget keys, which sending it resets) and the report set chosen on the Study
page. Each is kept with the study it belongs to, so switching studies never carries one over."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import streamlit as st

from app.loaders import load_report_set, results
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance
from mess_core.search.report import Row
from mess_core.study import Study

CURRENT, PINNED, SENT, REPORT_SET = "current_instance", "pinned_instance", "explorer_sent", "report_set"
SEARCHED_ROW = Row.MIN_COST_1PP  # the results row whose instance every page starts from


def searched(study: Study) -> Instance | None:
    """The study's searched instance (:data:`SEARCHED_ROW`, MESS input-dependent <= 1 pp), every page's default;
    None when the study has none."""
    table = results(str(study.path), "input-dependent")
    row = table.loc[table["id"] == SEARCHED_ROW, "instance"]
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


@dataclass(frozen=True)
class ExplorerKeys:
    """The keys of the Confidence explorer's widgets: the page reads them from here, and sending it an image drops
    them all (:meth:`owned`), so that its widgets start from what was sent."""

    source: str = "explorer_source"
    index: str = "explorer_index"
    seed: str = "explorer_seed"
    upload: str = "explorer_upload"
    th_pix: str = "explorer_th_pix"
    edge_size: str = "explorer_s"
    window: str = "explorer_w"
    native: str = "explorer_native"
    table: str = "explorer_table"

    @staticmethod
    def config(exit: int) -> str:
        return f"explorer_cfg_{exit}"

    @staticmethod
    def kept(exit: int) -> str:
        return f"explorer_keep_{exit}"

    @staticmethod
    def th_img(exit: int) -> str:
        return f"explorer_th_img_{exit}"

    def owned(self, num_exits: int) -> tuple[str, ...]:
        """Every key of the page on a study with ``num_exits`` exits (the early ones have widgets of their own)."""
        per_exit = (key(e) for e in range(1, num_exits) for key in (self.config, self.kept, self.th_img))
        return tuple(getattr(self, f.name) for f in fields(self)) + tuple(per_exit)


EXPLORER = ExplorerKeys()


def send_to_explorer(study: Study, index: int, instance: Instance | None) -> None:
    """Ask the Confidence explorer to open image ``index`` of the study's split with ``instance``'s settings (its
    own widgets are dropped, so that they start from these)."""
    for key in EXPLORER.owned(study.cache.num_exits):
        st.session_state.pop(key, None)
    st.session_state[SENT] = (str(study.path), (int(index), instance))


def sent(study: Study) -> tuple[int, Instance | None] | None:
    return _get(SENT, study)


def start_from_study(study: Study, keys: tuple[str, ...], *, marker: str) -> None:
    """Drop the widget ``keys`` when the study changed since they were last drawn (``marker`` holds the study they
    belong to): a widget's ``value=`` counts only when its key is new, so defaults taken from a study (its promise
    rule) would otherwise stay those of the study shown before."""
    if st.session_state.get(marker) != str(study.path):
        for key in keys:
            st.session_state.pop(key, None)
        st.session_state[marker] = str(study.path)


def keep_report_set(study: Study, path: str | None) -> None:
    """The report set chosen on the Study page for this study: a cache file's path, or None for none."""
    st.session_state.setdefault(REPORT_SET, {})[str(study.path)] = path


def report_set(study: Study) -> tuple[str, EvaluationCache] | None:
    """The report set chosen on the Study page for this study (its path and cache), or None."""
    path = st.session_state.get(REPORT_SET, {}).get(str(study.path))
    return (path, load_report_set(str(study.path), path)) if path else None
