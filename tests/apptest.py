"""Driving the app through Streamlit's test harness, shared by the app's test files."""

from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

from .paths import APP

PAGES = ["study", "explorer", "thresholds", "pareto", "images"]  # the URL paths app/main.py gives its pages


def goto(app, url_path):
    """Open the page at ``url_path`` and run it, as a browser at ``/url_path`` does. ``AppTest.switch_page`` only
    finds pages that are files; the app's pages are callables, which Streamlit knows by the hash of their URL path,
    so the request carries that hash (``_page_hash`` is what ``switch_page`` itself sets)."""
    app._page_hash = calc_hash(url_path)
    app.run()
    assert app._finished_page_script_hash == calc_hash(url_path), f"did not land on /{url_path}"
    return app


def start(monkeypatch, root, default=None):
    """The app on the studies under ``root``, opening ``default`` (None: the one a fresh clone opens)."""
    monkeypatch.setenv("MESS_STUDIES", str(root))
    if default is None:
        monkeypatch.delenv("MESS_DEFAULT_STUDY", raising=False)
    else:
        monkeypatch.setenv("MESS_DEFAULT_STUDY", default)
    return AppTest.from_file(str(APP), default_timeout=180).run()


def problems(app):
    return [e.value for e in app.exception] + [e.value for e in app.error]


def metrics(app):
    return {m.label: m.value for m in app.metric}
