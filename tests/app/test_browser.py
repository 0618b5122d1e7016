"""The app in a real browser: Debian's Chromium driven by Playwright against ``streamlit run`` on localhost, on the
shipped default study. Every wait is on Streamlit's own run-state marker (``data-test-script-state``) or on the
figure the interaction must change; there are no fixed sleeps. Screenshots of every page land in
``$MESS_SCREENSHOTS`` (``MESS_SCREENSHOTS=docs/screenshots`` refreshes the README's) or a temporary folder.

Without Chromium or Playwright these tests are skipped, unless ``MESS_REQUIRE_BROWSER=1`` (set by CI), where their
absence is a failure.
"""

import os
import re

import cv2
import numpy as np
import pytest

from app.server import served
from tests.paths import REPO, SHOTS

CHROMIUM = os.environ.get("MESS_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 120_000

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

_missing = (
    "playwright is not installed"
    if sync_playwright is None
    else f"no Chromium at {CHROMIUM}"
    if not os.path.exists(CHROMIUM)
    else None
)
if _missing and os.environ.get("MESS_REQUIRE_BROWSER") == "1":
    raise RuntimeError(
        f"browser tests are required here but {_missing} (apt-get install -y chromium; pip install playwright)"
    )
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")


@pytest.fixture(scope="module")
def server():
    env = {k: v for k, v in os.environ.items() if k != "MESS_DEFAULT_STUDY"}  # the default a fresh clone opens
    env["MESS_STUDIES"] = str(REPO / "precomputed")
    with served(env) as url:
        yield url


@pytest.fixture(scope="module")
def browser(server):
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def settle(page) -> None:
    """Wait until Streamlit has finished the current run and nothing in the page is an exception."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=WAIT_MS)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)
    page.wait_for_function(  # plotly draws after the run: every chart has its svg
        "() => [...document.querySelectorAll('[data-testid=\"stPlotlyChart\"]')]"
        ".every(c => c.querySelector('.main-svg'))",
        timeout=WAIT_MS,
    )
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()


def click_point(page, point, answer) -> None:
    """Click a plotly ``point`` until ``answer`` (a locator) appears, then settle. Plotly clicks the point it hovers,
    and a redraw under load can move the point or swallow the click, so hover and click again until it answers."""
    for attempt in range(6):
        box = point.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 6, y - 6)
        page.mouse.move(x, y, steps=3)
        try:
            page.locator(".hoverlayer .hovertext").first.wait_for(timeout=10_000)
            page.mouse.down()
            page.mouse.up()
            answer.wait_for(timeout=20_000)
            break
        except Exception:
            if attempt == 5:
                raise
            settle(page)
    settle(page)


def open_page(page, server, path: str, ready: str, drawn: str = '[data-testid="stPlotlyChart"] .main-svg') -> None:
    """Open a page and wait for its run to finish with ``ready`` text and a ``drawn`` element on screen."""
    page.goto(f"{server}/{path}")
    page.get_by_text(ready, exact=False).first.wait_for()
    page.locator(drawn).first.wait_for()
    assert page.get_by_text("Page not found").count() == 0
    settle(page)
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0


def metric(page, label: str) -> str:
    box = (
        page.locator('[data-testid="stMetric"]')
        .filter(has=page.locator('[data-testid="stMetricLabel"]', has_text=label))
        .first
    )
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_every_page_opens(page, server):
    for path, ready, drawn in [
        ("", "Workload profile", '[data-testid="stPlotlyChart"] .main-svg'),
        ("explorer", "Anytime", '[data-testid="stImage"] img'),
        ("thresholds", "where images leave", '[data-testid="stPlotlyChart"] .main-svg'),
        ("pareto", "searched", '[data-testid="stPlotlyChart"] .main-svg'),
        ("images", "Image browser", '[data-testid="stDataFrame"]'),
    ]:
        open_page(page, server, path, ready, drawn)
        expect(page.locator('[data-testid="stSidebarNav"]')).to_be_visible()
        shoot(page, path or "study")


def test_moving_a_threshold_slider_changes_the_figures(page, server):
    open_page(page, server, "thresholds", "where images leave")
    before = (metric(page, "average GFLOPs"), metric(page, "images leaving early"))
    thumbs = page.locator('[data-testid="stSlider"]').filter(has_text="th_img")
    # th_img 0 at the first exit: every image is sure enough and leaves there; where the study's own instance already
    # lets every image leave early, th_img 1 at every exit keeps back each image not sure of every pixel
    everyone = before[1] == "100.00%"
    for i in range(thumbs.count() if everyone else 1):
        thumb = thumbs.nth(i).get_by_role("slider")
        thumb.focus()
        thumb.press("End" if everyone else "Home")
        if everyone:
            settle(page)
    page.wait_for_function(
        "(old) => [...document.querySelectorAll('[data-testid=\"stMetric\"]')].some(m => "
        "m.innerText.includes('images leaving early') && !m.innerText.includes(old))",
        arg=before[1],
    )
    settle(page)
    after = (metric(page, "average GFLOPs"), metric(page, "images leaving early"))
    assert after != before
    assert (float(after[1].rstrip("%")) < 100.0) if everyone else after[1] == "100.00%"


def test_an_uploaded_image_shows_every_exits_maps(page, server, tmp_path):
    open_page(page, server, "explorer", "Anytime", '[data-testid="stImage"] img')
    page.get_by_text("upload", exact=True).click()
    page.get_by_text("Upload an image").wait_for()
    settle(page)
    image = np.random.default_rng(3).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), image)
    page.locator('input[type="file"]').set_input_files(str(path))
    page.get_by_text("edge-masked confidence (w=7)").first.wait_for()
    settle(page)
    exits = page.get_by_text("c_img =").count()
    assert exits >= 6  # five early exits and the final one, each with its row of maps
    assert page.get_by_text("edge mask M (s=3)").count() == exits
    assert "ms" in metric(page, "measured, early exit")
    shoot(page, "explorer-upload")


def test_clicking_a_point_on_the_pareto_plot_selects_it(page, server):
    open_page(page, server, "pareto", "searched")
    assert page.get_by_text("selected instance").count() == 0
    page.get_by_role("button", name="pin for comparison").click()  # the searched instance, kept as A
    page.get_by_text("A: pinned").wait_for()
    settle(page)
    # the budgeted front: its points are instances with one exit; click the first one plotly drew
    trace = page.locator(".js-plotly-plot .scatterlayer .trace").nth(1)
    point = trace.locator("path.point").first
    # the whole plot in view (a point at the very top would lie under Streamlit's header bar)
    page.locator('[data-testid="stPlotlyChart"]').first.evaluate("e => e.scrollIntoView({block: 'center'})")
    click_point(page, point, page.get_by_text("selected instance"))
    assert page.get_by_text("back to the searched instance").count() == 1
    shoot(page, "pareto-selected")
    # the linked views: the pinned instance (A) beside the clicked one (B), each with where its images leave
    page.get_by_text("B: selected").wait_for()
    assert page.get_by_text("where images leave").count() == 2
    assert page.get_by_text("images leaving at exit").count() >= 2
    page.get_by_text("pinned (A) and selected (B), side by side").scroll_into_view_if_needed()
    settle(page)
    shoot(page, "pareto-linked")
    page.get_by_text("back to the searched instance").click()
    page.get_by_text("searched instance", exact=True).wait_for()
    settle(page)


def test_the_image_browser_opens_an_image_in_the_explorer(page, server):
    open_page(page, server, "images", "Image browser", '[data-testid="stDataFrame"]')
    page.get_by_text("left early and lost most", exact=True).click()
    page.get_by_text("images that leave before the final exit").wait_for()
    settle(page)
    page.locator('[data-testid="stImage"] img').first.wait_for()
    chosen = page.locator('[data-testid="stMarkdownContainer"]').filter(has_text="leaves at exit").first.inner_text()
    index = int(re.search(r"image (\d+) leaves at exit", chosen).group(1))  # the image shown below the table
    shoot(page, "images")
    page.get_by_role("button", name="open in the Confidence explorer").click()
    page.get_by_text("Anytime").wait_for()
    settle(page)
    assert page.url.endswith("/explorer")
    assert page.get_by_text(f"image {index}:", exact=False).count() >= 1
    assert metric(page, "leaves at").startswith("exit")


def _frames_played(page) -> int:
    return int(metric(page, "frames played"))


def test_the_drive_page_plays_frames_and_its_timeline_seeks(page, server):
    open_page(page, server, "drive", "frames played", '[data-testid="stImage"] img')
    assert metric(page, "exit taken").startswith("exit") and _frames_played(page) == 1
    page.get_by_role("button", name="step", exact=True).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stMetric\"]')].some(m => "
        "m.innerText.includes('frames played') && m.innerText.includes('2'))"
    )
    settle(page)
    page.get_by_role("button", name="play", exact=True).click()  # the fragment plays on its own from here
    page.wait_for_function(  # while playing the frame alone is redrawn: its caption says which it is
        "() => [...document.querySelectorAll('[data-testid=\"stImageCaption\"]')].some(c => "
        "parseInt((/frame (\\d+) of/.exec(c.textContent) || [0, 0])[1]) >= 5)",
        timeout=WAIT_MS,
    )
    page.get_by_role("button", name="pause", exact=True).click()
    page.get_by_role("button", name="play", exact=True).wait_for()
    settle(page)
    played = _frames_played(page)
    assert played >= 5
    shoot(page, "drive")
    # the timeline of the frames played: click its first frame's point, and the page seeks there
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.evaluate("e => e.scrollIntoView({block: 'center'})")
    point = chart.locator(".scatterlayer .trace").first.locator("path.point").first
    click_point(page, point, page.get_by_text("frame 1 of", exact=False).first)
    assert _frames_played(page) == played  # seeking shows a frame already run: nothing runs again


def test_shots_are_where_the_readme_points():
    readme = (REPO / "README.md").read_text()
    for name in ("study", "explorer", "thresholds", "pareto", "images", "pareto-linked", "drive", "drive-frames"):
        assert f"docs/screenshots/{name}.png" in readme
