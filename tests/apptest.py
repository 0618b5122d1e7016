"""Driving the app through Streamlit's test harness, shared by the app's test files."""

from streamlit.testing.v1 import AppTest

from app.routes import PAGES as REGISTERED
from app.routes import route
from tests.paths import APP

PAGES = list(REGISTERED)  # the URL paths app/main.py gives its pages


def goto(app, url_path):
    """Open the page at ``url_path`` and run it, as a browser at ``/url_path`` does (Streamlit's public
    ``AppTest.switch_page``, which refuses a page the app did not register)."""
    return app.switch_page(route(url_path)).run()


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
