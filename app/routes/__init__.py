"""The app's one page registry: each page is a file here that runs its screen (``app/screens``), registered by
``app/main.py`` with ``st.navigation`` under its URL path. Files, not callables, so that Streamlit's public API finds
them: ``st.switch_page(route("explorer"))`` in the app and ``AppTest.switch_page(route("explorer"))`` in the tests.
(Not named ``pages/``: a ``pages/`` folder beside the main script switches Streamlit to its old file-based
multipage mode.)"""

from __future__ import annotations

# URL path -> title, in the order the sidebar lists them; the first is the default page
PAGES = {
    "study": "Study",
    "explorer": "Confidence explorer",
    "thresholds": "Thresholds",
    "pareto": "Pareto and search",
    "images": "Image browser",
    "drive": "Drive",
}


def route(name: str) -> str:
    """The page file of ``name`` (a key of :data:`PAGES`), relative to ``app/main.py``."""
    if name not in PAGES:
        raise KeyError(f"no page {name!r}; the pages are {', '.join(PAGES)}")
    return f"routes/{name}.py"
