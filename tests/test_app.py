"""The app runs headless through Streamlit's own test harness (a browser test comes with the real app)."""

from streamlit.testing.v1 import AppTest


def test_placeholder_app_shows_the_engine_profile():
    app = AppTest.from_file("../app/main.py", default_timeout=120).run()
    assert not app.exception
    assert "placeholder" in app.info[0].value
    table = app.dataframe[0].value
    assert list(table["index"]) == [1, 2, 3, 4, 5]
    assert table["cost_fraction"].is_monotonic_increasing
