"""Running a study's model code: a model whose code this machine did not record (an import path or a model file in a
study from elsewhere) runs only after the user consents, once per session and study; the network a session loads
follows that consent."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.loaders import network, untrusted_code
from mess_core.errors import MessError
from mess_core.study import Study

CONSENT_KEY = "code_consent"  # the set of study paths this session consented to


def consented(path: str) -> bool:
    return path in st.session_state.get(CONSENT_KEY, set())


def code_allowed(study: Study, *, where: str) -> bool:
    """Whether this session may build the study's model, asking for consent where it is needed: the confirmation
    names what will run. ``where`` keeps each page's button apart."""
    path = str(study.path)
    try:
        code = untrusted_code(path)
    except MessError as exc:  # a model this machine cannot build at all (a package not installed)
        st.error(str(exc))
        return False
    if code is None or consented(path):
        return True
    st.warning(
        f"Building this study's model runs {code}. It was not recorded on this machine (the study comes from "
        "elsewhere), and it would run with this server's permissions. Read that code before you allow it; "
        "the figures stored in the study need no code and are shown without it."
    )
    if st.button("I have read it: run this study's model code", key=f"consent_{where}"):
        st.session_state.setdefault(CONSENT_KEY, set()).add(path)
        st.rerun()
    return False


def load_network(path: str) -> tuple[Any, dict[str, Any]]:
    """The study's network, shared by every session that may build it (see :func:`code_allowed`)."""
    return network(path, consented(path))
