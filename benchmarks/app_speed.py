"""How fast the app answers, on this machine, with the shipped default study: prints measurements, asserts nothing.

* cold start: the first run of the app's default page in a fresh process, after the imports (timed separately);
* slider changes: a threshold slider (Thresholds page) and the allowed-drop slider (Pareto page, which re-runs the
  search and its peers), each as the whole app rerun Streamlit's test harness performs and as the engine call alone;
* an uploaded 360x480 image through every exit: decoding, every exit's head and the final exit, the per-exit maps,
  and the whole page rerun with the upload at its own size.

Usage: .venv/bin/python -m benchmarks.app_speed [--repeats 5] [--browser-only]
(``--browser-only``: only the Chromium part, which runs when ``/usr/bin/chromium`` exists.)
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

from benchmarks import REPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--study", default=None, help="a study of precomputed/ (default: the app's default)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import cv2
    import numpy as np
    import torch
    from streamlit.testing.v1 import AppTest

    from app.routes import route
    from app.state import EXPLORER

    for name in ("study", "explorer", "thresholds", "pareto"):  # what the app imports
        importlib.import_module(f"app.screens.{name}")
    from app.views.one_image import (
        colorize,
        exit_views,
        heatmap,
        measure_early_exit,
        palette_for,
        path_gflops,
        run_exits,
    )
    from app.views.pareto import live_search
    from app.views.thresholds import instance_from_settings, threshold_summary
    from app.views.upload import decode_image, to_input
    from mess_core.deploy.bench import machine
    from mess_core.evaluate.policy import EdgeMasking
    from mess_core.search.problem import Objective
    from mess_core.study import DEFAULT_STUDY, open_study

    imports = time.perf_counter() - t0
    args.study = args.study or DEFAULT_STUDY
    os.environ["MESS_DEFAULT_STUDY"] = args.study
    print(f"machine: {machine()}; study {args.study}")
    print(f"imports (streamlit, torch, engine, pages): {imports:.2f} s")

    def timed(fn, repeats=args.repeats):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), max(times)

    def goto(app, url_path):  # Streamlit's public page switch (the pages are files: app/routes)
        return app.switch_page(route(url_path)).run()

    t = time.perf_counter()
    app = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=300).run()
    cold = time.perf_counter() - t
    assert not app.exception, app.exception
    print(f"cold start, Study page with the default study, after imports: {cold:.2f} s (target <= 5 s)")

    goto(app, "thresholds")
    exits = app.multiselect(key="thr_exits").value
    slider = app.slider(key=f"thr_th_img_{exits[0]}")
    values = [0.3, 0.7]

    def move_threshold():
        values.reverse()
        slider.set_value(values[0]).run()

    median, worst = timed(move_threshold)
    print(
        f"Thresholds slider, whole app rerun: median {1e3 * median:.0f} ms, worst {1e3 * worst:.0f} ms "
        f"(target <= 300 ms)"
    )
    study = open_study(REPO / "precomputed" / args.study)
    cache = study.cache
    inst = instance_from_settings(
        "input-dependent", {exits[0]: 0.5}, {exits[0]: cache.configs[0]}, th_pix=0.8, edges=EdgeMasking()
    )
    median, worst = timed(lambda: threshold_summary(cache, inst))
    print(f"  engine alone (threshold_summary): median {1e3 * median:.1f} ms")

    goto(app, "pareto")
    drops = [0.5, 2.0]

    def move_drop():
        drops.reverse()
        app.slider(key="par_drop").set_value(drops[0]).run()

    median, worst = timed(move_drop)
    print(
        f"Pareto allowed-drop slider, whole app rerun (search + peers + plot): median {1e3 * median:.0f} ms, "
        f"worst {1e3 * worst:.0f} ms (target <= 300 ms)"
    )
    median, worst = timed(lambda: live_search(cache, Objective("min-cost", max_drop=1.0), mode="input-dependent"))
    print(f"  engine alone (search + uniform-exit + naive + oracle): median {1e3 * median:.1f} ms")

    rng = np.random.default_rng(0)
    png = cv2.imencode(".png", rng.integers(0, 256, (360, 480, 3), dtype=np.uint8))[1].tobytes()
    net, _ = study.load_network()
    torch.set_grad_enabled(False)
    configs = {i: cache.configs[0] for i in range(1, cache.num_exits)}
    inst_all = instance_from_settings("input-dependent", {1: 0.7, 4: 0.7}, configs, th_pix=0.8, edges=EdgeMasking())

    palette = palette_for(cache.meta["dataset"], cache.num_classes)

    def upload_through_every_exit():
        image = decode_image(png, name="upload.png")
        logits, _ = run_exits(net, to_input(image.rgb), configs)
        for view in exit_views(logits, configs, th_pix=0.8, edges=EdgeMasking()):
            colorize(view.labels, palette), heatmap(view.confidence), heatmap(view.masked_confidence)

    upload_through_every_exit()
    median, worst = timed(upload_through_every_exit)
    print(
        f"upload 360x480 through every exit (decode, 5 heads + final, every map coloured): median "
        f"{1e3 * median:.0f} ms, worst {1e3 * worst:.0f} ms (target <= 1 s)"
    )
    t = time.perf_counter()
    path_gflops(net, (360, 480), {1: cache.configs[0]}, cache.num_exits)
    print(
        f"  + counting GFLOPs at a size seen for the first time: {1e3 * (time.perf_counter() - t):.0f} ms (then cached)"
    )
    x = to_input(decode_image(png, name="upload.png").rgb)
    median, worst = timed(lambda: measure_early_exit(net, inst_all, x, repeats=3), repeats=3)
    print(
        f"  then, below the maps: timing the deployed early exit against the full model: median {1e3 * median:.0f} ms"
    )

    goto(app, "explorer")
    app.radio(key=EXPLORER.source).set_value("upload").run()
    counter = iter(range(10**6))

    def page_with_a_new_upload():  # a different file each time: nothing is served from the cache
        image = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
        image[0, 0, 0] = next(counter) % 256
        data = cv2.imencode(".png", image)[1].tobytes()
        app.file_uploader(key=EXPLORER.upload).set_value((f"u{next(counter)}.png", data, "image/png")).run()
        assert not app.exception and not app.error, (app.exception, app.error)

    page_with_a_new_upload()
    app.toggle(key=EXPLORER.native).set_value(True).run()  # the upload's own 360x480, not the study's size
    median, worst = timed(page_with_a_new_upload, repeats=max(3, args.repeats // 2))
    print(
        f"Explorer page with a new 360x480 upload, whole rerun (maps, then the timing below them): "
        f"median {1e3 * median:.0f} ms, worst {1e3 * worst:.0f} ms"
    )


def in_browser(study: str, repeats: int) -> None:
    """The same interactions as a person makes them: Chromium against `streamlit run`, timed from the key press to the
    changed figure on screen with Streamlit's run finished."""
    from playwright.sync_api import sync_playwright

    from app.server import served

    idle = '[data-testid="stApp"][data-test-script-state="notRunning"]'
    start = time.perf_counter()
    with served({**os.environ, "MESS_DEFAULT_STUDY": study}) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.locator('[data-testid="stPlotlyChart"] .main-svg').first.wait_for(timeout=120_000)
            page.wait_for_selector(idle)
            print(
                f"in Chromium: `streamlit run` to the Study page drawn, imports included: "
                f"{time.perf_counter() - start:.2f} s"
            )

            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def busy() -> float:
                """Seconds the page's renderer main thread has spent on tasks so far (Chrome's TaskDuration): the
                browser's own work, which other processes on a loaded machine do not inflate the way they do wall
                time."""
                return next(
                    m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration"
                )

            def timed_change(action, changed_js: str, arg: str) -> tuple[float, float, float]:
                """(seconds until the new figure is on screen, until Streamlit also reports the run finished, of
                browser main-thread work meanwhile)"""
                b0, t = busy(), time.perf_counter()
                action()
                page.wait_for_function(changed_js, arg=arg, timeout=60_000, polling="raf")
                shown = time.perf_counter() - t
                page.wait_for_selector(idle)
                return shown, time.perf_counter() - t, busy() - b0

            def report(what: str, times: list[tuple[float, float, float]]) -> None:
                shown, done, work = ([1e3 * row[i] for row in times] for i in range(3))
                print(
                    f"in Chromium: {what}: new figure on screen median {statistics.median(shown):.0f} ms (worst "
                    f"{max(shown):.0f}); run finished median {statistics.median(done):.0f} ms (worst {max(done):.0f}); "
                    f"browser main-thread work median {statistics.median(work):.0f} ms; load average "
                    f"{os.getloadavg()[0]:.1f}"
                )

            page.goto(f"{url}/thresholds")
            page.get_by_text("where images leave").wait_for()
            page.wait_for_selector(idle)
            thumb = page.locator('[data-testid="stSlider"]').filter(has_text="th_img").first.get_by_role("slider")
            metric_js = (
                "(old) => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
                ".find(e => e.innerText.includes('average GFLOPs')); return m && !m.innerText.includes(old); }"
            )
            times = []
            for i in range(repeats):
                thumb.focus()
                old = page.locator('[data-testid="stMetric"]').filter(has_text="average GFLOPs").inner_text()
                old = [line for line in old.splitlines() if line.strip()][1]
                times.append(timed_change(lambda: thumb.press("Home" if i % 2 == 0 else "End"), metric_js, old))
            report("Thresholds th_img slider -> average GFLOPs", times)

            page.goto(f"{url}/pareto")
            page.get_by_text("searched").first.wait_for()
            page.wait_for_selector(idle)
            thumb = page.locator('[data-testid="stSlider"]').filter(has_text="allowed mIoU drop").get_by_role("slider")
            found_js = (
                '(old) => { const a = document.querySelector(\'[data-testid="stAlertContentSuccess"], '
                '[data-testid="stAlertContentWarning"]\'); return a && a.innerText !== old; }'
            )
            times = []
            for i in range(repeats):
                thumb.focus()
                old = page.locator(
                    '[data-testid="stAlertContentSuccess"], [data-testid="stAlertContentWarning"]'
                ).first.inner_text()
                times.append(timed_change(lambda: thumb.press("PageUp" if i % 2 == 0 else "PageDown"), found_js, old))
            report("Pareto allowed-drop slider, back and forth between two values -> search result", times)
            times = []
            # the constraint line's label on the plot names the allowed drop: it changes with every value
            line_js = (
                "(old) => { const a = [...document.querySelectorAll('.js-plotly-plot .annotation-text')]"
                ".map(e => e.textContent).find(t => t.includes('below the backbone')); return a && a !== old; }"
            )
            for i in range(repeats):  # 0.1 pp up each time: a value the slider has not had, nothing served from a cache
                thumb.focus()
                old = page.evaluate(
                    "() => [...document.querySelectorAll('.js-plotly-plot .annotation-text')]"
                    ".map(e => e.textContent).find(t => t.includes('below the backbone'))"
                )
                times.append(timed_change(lambda: thumb.press("ArrowRight"), line_js, old))
            report("Pareto allowed-drop slider, a new value each time -> search result", times)
            browser.close()


if __name__ == "__main__":
    if "--browser-only" in sys.argv:
        from mess_core.deploy.bench import machine
        from mess_core.study import DEFAULT_STUDY

        print(f"machine: {machine()}")
        in_browser(DEFAULT_STUDY, repeats=8)
    else:
        main()
        if os.path.exists("/usr/bin/chromium"):
            in_browser(os.environ["MESS_DEFAULT_STUDY"], repeats=6)
