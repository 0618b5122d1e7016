"""MESS Explorer: choose a study, explore per-exit confidence on any image, pick thresholds with live dataset
figures, and search accuracy-vs-cost fronts under constraints. Start it with ``./mess.sh app``.

The pages are thin: every figure comes from a tested ``mess_core`` function (``mess_core.explore``,
``mess_core.study``, ``mess_core.search``) on the study the sidebar chooses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# Streamlit runs this file as a script: its folder holds the page modules, the repository the engine
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

st.set_page_config(page_title="MESS Explorer", layout="wide")
st.navigation([
    st.Page("views/study.py", title="Study", url_path="study", default=True),
    st.Page("views/explorer.py", title="Confidence explorer", url_path="explorer"),
    st.Page("views/thresholds.py", title="Thresholds", url_path="thresholds"),
    st.Page("views/pareto.py", title="Pareto and search", url_path="pareto"),
]).run()
