"""What a drive costs and saves on this machine, in one run (BENCHMARKS.md, "Watch it drive").

Usage:
    .venv/bin/python -m benchmarks.drive_speed [--study precomputed/camvid-mobilenetv2-fcn] [--row min_cost_1pp]
        [--sequence NAME] [--frames N] [--rounds 3] [--rates 10 30] [--count 60]

On one sequence of the study's dataset (default: the sequence the study tuned on, scenes the network never trained
on), every frame at batch 1, rounds interleaved so that load on the machine falls on every variant alike:

1. The page's loop, without the browser: per frame, the deployed instance and the original model (the Driver),
   drawing the annotated frame, and encoding it as the PNG Streamlit sends; the frames per second this leaves, and
   the share of each part.
2. The annotated-video command's loop (read, run, draw, encode into the video) against the deployed runtime's own
   loop on the same frames (only ``deploy(net, instance)(x)``), and against the model work the command has to do
   (the instance and the original model): the ratios of their frame rates.
3. The time the instance saved over the sequence, measured (original model minus instance, frame by frame), against
   what the study's evaluation cache predicts from its measured stage and head latencies for the same exits.
4. The Drive page itself in Chromium (where ``/usr/bin/chromium`` and Playwright are here) against ``streamlit run``
   on the same study: a fresh session plays the page's default sequence at each offered rate; the frames per second
   shown on screen, the browser's own main-thread work per frame, and the split of a frame's time between the
   models, drawing, the JPEG, Streamlit's run and transport, and the browser.

Prints measurements only; nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks import REPO
from mess_core.conversion.profiling import evaluating
from mess_core.data.frames import DatasetSequence, sequences
from mess_core.data.registry import palette_for
from mess_core.data.transforms import frame_tensor
from mess_core.deploy.annotate import AnnotatedVideo, annotate
from mess_core.deploy.drive import Driver, DriveTotals
from mess_core.deploy.runtime import deploy
from mess_core.evaluate.cache_build import measure_decisions, measure_latency
from mess_core.evaluate.instance import evaluate
from mess_core.evaluate.policy import EdgeMasking
from mess_core.search.report import Row
from mess_core.study import open_study
from mess_core.study.config import StudyConfig


def _frames(study, name: str | None, limit: int | None):
    cfg = StudyConfig.from_dict(study.manifest["config"])
    size = tuple(int(s) for s in study.cache.meta["input_size"])
    split = study.cache.meta.get("split", "train")
    groups = study.cache.meta.get("groups") or []
    dataset = cfg.eval_dataset(split, size)
    name = name or (groups[0] if groups else next(iter(sequences(dataset))))
    source = DatasetSequence(dataset, name, size=size, max_frames=limit or 10**6)
    return source.read_all(), name, size


def _time(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def page_loop(driver: Driver, frames, palette) -> dict[str, float]:
    """Seconds per frame of each part of the page's loop."""
    parts = {"models": 0.0, "draw": 0.0, "encode": 0.0}
    totals = DriveTotals()
    for frame in frames:
        start = time.perf_counter()
        result, prediction = driver.run(frame)
        parts["models"] += time.perf_counter() - start
        totals.add(result)
        start = time.perf_counter()
        image = annotate(frame.rgb, prediction, result, totals, palette, kept=driver.kept, num_exits=driver.num_exits)
        parts["draw"] += time.perf_counter() - start
        start = time.perf_counter()
        Image.fromarray(image).save(io.BytesIO(), format="JPEG", quality=90)  # what st.image(output_format="JPEG") does
        parts["encode"] += time.perf_counter() - start
    return {k: v / len(frames) for k, v in parts.items()}


def command_loop(driver: Driver, frames, palette, size, scale: int) -> float:
    """Seconds for the command's loop over ``frames`` (video written to a temporary folder)."""
    totals = DriveTotals()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with AnnotatedVideo(Path(tmp) / "out.mp4", fps=30, size=(size[0] * scale, size[1] * scale)) as video:
            for frame in frames:
                result, prediction = driver.run(frame)
                totals.add(result)
                video.write(
                    annotate(
                        frame.rgb,
                        prediction,
                        result,
                        totals,
                        palette,
                        kept=driver.kept,
                        num_exits=driver.num_exits,
                        scale=scale,
                    )
                )
            video.close()
        return time.perf_counter() - start


def runtime_loop(deployed, frames) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        for frame in frames:
            deployed(frame_tensor(frame.rgb))
        return time.perf_counter() - start


# the frame the Drive page shows, from its image's caption ("frame N of M: name")
SHOWN_JS = """() => { for (const c of document.querySelectorAll('[data-testid="stImageCaption"]')) {
    const m = /frame (\\d+) of/.exec(c.textContent); if (m) return parseInt(m[1]); } return 0; }"""


def in_browser(study: str, rates: list[int], count: int, page_parts: dict[str, float]) -> None:
    """4. The Drive page in Chromium: frames per second on screen at each rate, from a fresh session each time."""
    from playwright.sync_api import sync_playwright

    from app.server import served

    idle = '[data-testid="stApp"][data-test-script-state="notRunning"]'
    print(
        "\n4. the Drive page in Chromium against `streamlit run` (a fresh session per rate; the page's default "
        "sequence and instance, the study's searched <= 1 pp row):"
    )
    with served({**os.environ, "MESS_DEFAULT_STUDY": study}) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(300_000)
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")

        def busy() -> float:  # seconds of the renderer's main thread on tasks so far (Chrome's TaskDuration)
            return next(
                m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration"
            )

        def reached(frame: int) -> tuple[float, float]:
            page.wait_for_function(f"() => ({SHOWN_JS})() >= {frame}", polling=5)
            return time.perf_counter(), busy()

        for rate in rates:
            page.goto(f"{url}/drive")  # a new session: nothing played yet
            page.locator('[data-testid="stImage"] img').first.wait_for()
            page.wait_for_selector(idle)
            total = int(
                page.locator('[data-testid="stImageCaption"]').first.inner_text().split(" of ")[1].split(":")[0]
            )
            frames = min(count, total - 4)
            page.locator('[data-testid="stSelectbox"]').filter(has_text="frames per second").click()
            page.get_by_role("option", name=str(rate), exact=True).click()
            page.wait_for_selector(idle)
            page.get_by_role("button", name="play", exact=True).click()
            t0, b0 = reached(4)  # the first frames pay for the fragment's first timer
            t1, b1 = reached(4 + frames)
            page.get_by_role("button", name="pause", exact=True).click()
            period, work = (t1 - t0) / frames, (b1 - b0) / frames
            print(
                f"   at {rate:2d} frames per second asked: {1 / period:5.1f} shown per second over {frames} frames; "
                f"browser main-thread work {1000 * work:.1f} ms per frame"
            )
        browser.close()
    server = sum(page_parts.values())
    rest = period - server - work
    print(f"   a frame's {1000 * period:.1f} ms at {rates[-1]} frames per second asked:")
    for name, seconds in [*page_parts.items(), ("Streamlit's run and transport (the rest)", rest), ("browser", work)]:
        print(f"     {name:<42} {1000 * seconds:7.1f} ms  ({100 * seconds / period:4.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(REPO / "precomputed" / "camvid-mobilenetv2-fcn"))
    parser.add_argument("--row", default=Row.MIN_COST_1PP.value)
    parser.add_argument("--sequence")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rates", type=int, nargs="+", default=[10, 30], help="playback rates asked in the browser")
    parser.add_argument("--count", type=int, default=60, help="frames timed in the browser at each rate")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    study = open_study(args.study)
    table = study.results("input-dependent")
    instance = table.loc[[r is Row(args.row) for r in table["id"]], "instance"].iloc[0]
    net, meta, model = study.load_network_and_model()
    frames, name, size = _frames(study, args.sequence, args.frames)
    palette = palette_for(str(meta.get("dataset", "")), net.num_classes)
    driver = Driver(net, model, instance, ignore_index=int(meta.get("ignore_index", 255)))
    deployed = deploy(net, instance)
    scale = 3
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"study {study.name}, {instance.describe()}, sequence {name}: {len(frames)} frames at {size[0]}x{size[1]}")

    pages, commands, runtimes, models = [], [], [], []
    for _ in range(args.rounds):  # interleaved: every variant sees the same load
        pages.append(page_loop(driver, frames, palette))
        commands.append(command_loop(driver, frames, palette, size, scale))
        runtimes.append(runtime_loop(deployed, frames))
        models.append(pages[-1]["models"] * len(frames))
    page = {k: statistics.median(p[k] for p in pages) for k in pages[0]}
    per_frame = sum(page.values())
    print("\n1. the page's loop without the browser (median of rounds, ms per frame):")
    for k, v in page.items():
        print(f"   {k:<7} {1000 * v:7.1f} ms  ({100 * v / per_frame:4.1f}%)")
    print(f"   total   {1000 * per_frame:7.1f} ms  -> {1 / per_frame:.1f} frames per second before the browser")

    command, runtime, model_work = (statistics.median(x) for x in (commands, runtimes, models))
    print("\n2. the annotated-video command (median of rounds, frames per second):")
    print(
        f"   command {len(frames) / command:6.1f}   deployed runtime alone {len(frames) / runtime:6.1f}   "
        f"instance + original model {len(frames) / model_work:6.1f}"
    )
    print(
        f"   command / runtime alone: {runtime / command:.2f}x;  command / its model work: {model_work / command:.2f}x"
    )

    results = [driver.run(f)[0] for f in frames]
    measured = sum(r.original_ms - r.ms for r in results)
    exits = [r.exit for r in results]
    if study.cache.has_latency and study.cache.num_images == len(frames):
        outcome = evaluate(study.cache, instance, unit="ms")
        cached_exits = outcome.exit_left_at.tolist()
        full = float(study.cache.reach_cost("ms")[-1])
        predicted = float(np.sum(full - outcome.image_cost))
        agree = sum(a == b for a, b in zip(exits, cached_exits))
        # the cache's own way of measuring (per stage, per head and per decision, batch 1), run again now on this
        # machine: the stored figures were measured when the study was built, under whatever load it had then
        with evaluating(net), torch.inference_mode():
            stage_ms, head_ms = measure_latency(net, study.cache.configs, size, torch.device("cpu"), repeats=20)
        edges = EdgeMasking(**study.cache.meta.get("edge_masking", {}))
        decisions = measure_decisions(net, size, edges, torch.device("cpu"), repeats=20)
        meta = {**study.cache.meta, "decision_ms": decisions}
        now = dataclasses.replace(study.cache, meta=meta, stage_ms=stage_ms, head_ms=head_ms, _derived={})
        full_now = float(now.reach_cost("ms")[-1])
        predicted_now = float(np.sum(full_now - evaluate(now, instance, unit="ms").image_cost))
        stored = (
            "the decision at each exit counted"
            if "decision_ms" in study.cache.meta
            else "the decision at each exit not counted: the cache predates its measurement"
        )
        print("\n3. time saved over the sequence:")
        print(
            f"   measured {measured / 1000:.2f} s, predicted by the cache {predicted / 1000:.2f} s "
            f"({100 * (measured - predicted) / predicted:+.1f}%; {stored}); the same exit on {agree} of "
            f"{len(frames)} frames"
        )
        print(
            f"   predicted from the cache's latency table measured again now, the decision at each exit "
            f"({decisions[instance.policy_name]:.2f} ms) included: {predicted_now / 1000:.2f} s "
            f"({100 * (measured - predicted_now) / predicted_now:+.1f}%); original model per frame: measured "
            f"{statistics.median(r.original_ms for r in results):.1f} ms, the cache {full:.1f} ms, "
            f"measured again now {full_now:.1f} ms"
        )
    else:
        print(f"\n3. measured time saved {measured / 1000:.2f} s; the cache has no latency or other images to compare")
    if os.path.exists("/usr/bin/chromium"):
        in_browser(str(study.path), args.rates, args.count, page)


if __name__ == "__main__":
    main()
