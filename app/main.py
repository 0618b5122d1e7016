"""MESS Explorer: choose a study, explore per-exit confidence on any image, pick thresholds with live dataset
figures, search accuracy-vs-cost fronts under constraints and browse the split image by image. Start it with
``./mess.sh app``, which runs
``python -m streamlit run app/main.py`` from the repository root: ``python -m`` puts that folder on ``sys.path``,
so the ``app`` package and ``mess_core`` import as they are, with no path set up here.

The pages (``app/screens``, one module each, registered in ``app/routes``) only lay out: every figure comes from a
tested Streamlit-free function of ``app/views`` or ``mess_core`` on the study the sidebar chooses
(``app/sidebar.py``); the heavy objects are cached in ``app/loaders.py``, what the pages share per session is in
``app/state.py``, and every page runs inside an error boundary (``app/boundaries.py``).
"""

from __future__ import annotations

import streamlit as st

from app.heap import settle_heap
from app.routes import PAGES, route

st.set_page_config(page_title="MESS Explorer", layout="wide")
st.navigation(
    [st.Page(route(name), title=title, url_path=name, default=i == 0) for i, (name, title) in enumerate(PAGES.items())]
).run()
settle_heap()
