"""The app driven headless through Streamlit's own test harness: every page runs, widgets change the figures,
uploads work and bad input gets a message in the page, never a traceback."""

import shutil

import cv2
import numpy as np
import pytest

from app.views.pareto import PointId, PointKind
from mess_core.study import DEFAULT_STUDY, list_studies
from mess_core.study.report import TARGETS
from tests.apptest import PAGES, goto, metrics, problems, start
from tests.paths import PRECOMPUTED


@pytest.fixture
def tiny_app(tiny_study, monkeypatch):
    _, _, out, _ = tiny_study
    return start(monkeypatch, out.parent, out.name)


def test_the_shipped_default_study_opens_on_every_page(monkeypatch):
    studies = list_studies(PRECOMPUTED)
    assert studies, f"no study in {PRECOMPUTED}: the app would start empty on a fresh clone"
    app = start(monkeypatch, PRECOMPUTED)
    for page in PAGES:
        goto(app, page)
        assert not problems(app), page
    assert app.sidebar.selectbox[0].value == DEFAULT_STUDY


def test_every_page_shows_engine_figures(tiny_app):
    goto(tiny_app, "study")
    assert not problems(tiny_app)
    assert metrics(tiny_app)["exits (N)"] == "6"
    assert any("**mobilenetv2_fcn** on **synthetic**" in m.value for m in tiny_app.markdown)
    table = next(d.value for d in tiny_app.dataframe if "CPU ms" in d.value.columns)
    assert list(table[""])[0] == "Backbone"
    goto(tiny_app, "explorer")
    assert not problems(tiny_app)
    assert {"leaves at", "GFLOPs", "measured, early exit", "every exit, once"} <= set(metrics(tiny_app))
    assert len(tiny_app.dataframe[-1].value) == 6


def test_moving_a_threshold_slider_changes_the_dataset_figures(tiny_app):
    app = goto(tiny_app, "thresholds")
    app.multiselect(key="thr_exits").set_value([2]).run()
    app.slider(key="thr_th_img_2").set_value(1.0).run()
    strict = metrics(app)
    app.slider(key="thr_th_img_2").set_value(0.0).run()
    loose = metrics(app)
    assert not problems(app)
    assert strict["average GFLOPs"] != loose["average GFLOPs"]
    assert any("2:" in c.value and "@0.00" in c.value for c in app.caption)


def test_the_search_reruns_when_the_constraint_moves(tiny_app):
    app = goto(tiny_app, "pareto")
    first = app.success[0].value if app.success else app.warning[0].value
    app.radio(key="par_objective").set_value("max mIoU, cost at most").run()
    app.slider(key="par_budget_x").set_value(0.3).run()
    tight = app.success[0].value if app.success else app.warning[0].value
    app.radio(key="par_mode").set_value("budgeted").run()
    assert not problems(app)
    assert first != tight
    assert app.download_button(key="par_json") is not None
    app.button(key="par_onnx").click().run()
    assert not problems(app)
    assert app.download_button(key="par_onnx_zip") is not None


def test_every_drop_shown_carries_its_interval_and_the_search_takes_a_confidence(tiny_app):
    app = goto(tiny_app, "pareto")
    # the page's search starts from the study's own rule (the default: 90%, scene blocks of 10 images; its 10 images
    # make one block, too few to resample, so single images, as the study's rows were chosen)
    assert app.toggle(key="par_sure").value and app.number_input(key="par_block").value == 1
    assert app.number_input(key="par_block").max == 2  # 10 images make at least 5 blocks of at most 2
    sure = app.success[0].value if app.success else app.warning[0].value
    assert "% interval" in sure and "% confidence" in sure
    app.toggle(key="par_sure").set_value(False).run()
    assert not problems(app) and app.number_input(key="par_block").disabled
    plain = app.success[0].value if app.success else app.warning[0].value
    assert "% interval" in plain
    app.toggle(key="par_sure").set_value(True).run()
    app.select_slider(key="par_confidence").set_value(0.95).run()
    app.number_input(key="par_block").set_value(2).run()
    assert not problems(app)
    app.toggle(key="par_sure").set_value(False).run()
    app.session_state["par_rule_study"] = "another study"  # as after choosing another study in the sidebar
    app.run()
    assert app.toggle(key="par_sure").value and app.number_input(key="par_block").value == 1  # this study's rule
    goto(app, "thresholds")
    assert any("% interval" in c.value for c in app.caption)
    goto(app, "study")
    assert not problems(app)
    columns = [c for frame in app.dataframe for c in frame.value.columns]
    assert "drop pp [90% interval]" in columns


def test_uploads_run_through_every_exit_and_bad_files_get_a_message(tiny_app):
    app = goto(tiny_app, "explorer")
    app.radio(key="explorer_source").set_value("upload").run()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    app.file_uploader(key="explorer_upload").set_value(
        ("scene.png", cv2.imencode(".png", image)[1].tobytes(), "image/png")
    ).run()
    assert not problems(app)
    assert "measured, early exit" in metrics(app)
    deep = cv2.imencode(".png", (image.astype(np.uint16) * 257)[:, :, 0])[1].tobytes()
    app.file_uploader(key="explorer_upload").set_value(("deep.png", deep, "image/png")).run()
    assert not problems(app) and any("16-bit" in i.value for i in app.info)
    app.file_uploader(key="explorer_upload").set_value(("notes.txt", b"not an image", "text/plain")).run()
    assert [e.value for e in app.error] and "notes.txt: not an image" in app.error[0].value
    assert not app.exception


def test_a_broken_study_folder_gets_a_message_and_the_app_keeps_working(tiny_app, tiny_study, tmp_path):
    _, _, out, _ = tiny_study
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "val.npz").unlink()
    app = goto(tiny_app, "thresholds")
    app.sidebar.selectbox(key="study_choice").set_value("another folder...").run()
    app.sidebar.text_input(key="study_folder").input(str(broken)).run()
    assert not app.exception
    assert "missing val.npz" in app.error[0].value
    app.sidebar.text_input(key="study_folder").input(str(tmp_path / "nowhere")).run()
    assert "no such folder" in app.error[0].value
    app.sidebar.selectbox(key="study_choice").set_value(out.name).run()
    assert not problems(app) and "mIoU" in metrics(app)


def test_the_study_page_shows_test_figures_latency_and_the_training_table(tiny_app):
    app = goto(tiny_app, "study")
    assert not problems(app)
    columns = [list(d.value.columns) for d in app.dataframe]
    assert any("mIoU % (test)" in c for c in columns)
    assert any("ms/img b1" in c for c in columns)
    assert any("stage 2 loss" in c for c in columns)
    assert any("naive (mean confidence)" in c for c in columns)
    # every headline target is checked on the page, with its bar
    assert any(all(f"target >= {t.at_least:g}x" in m.value for t in TARGETS if t.unit == "x") for m in app.markdown)


def test_the_image_browser_lists_every_image_and_sends_one_to_the_explorer(tiny_app):
    app = goto(tiny_app, "images")
    assert not problems(app)
    table = app.dataframe[0].value
    assert {"image", "name", "exit", "IoU", "final IoU", "loss"} <= set(table.columns)
    assert list(table["image"]) == sorted(table["image"]) and len(table) > 0
    app.radio(key="img_preset").set_value("hardest at the final exit").run()
    hardest = app.dataframe[0].value
    assert list(hardest["final IoU"]) == sorted(hardest["final IoU"]) and len(hardest) == len(table)
    app.radio(key="img_preset").set_value("all images").run()
    classes = app.selectbox(key="img_class").options
    app.selectbox(key="img_class").set_value(classes[-1]).run()
    assert not problems(app) and len(app.dataframe[0].value) <= len(table)
    app.selectbox(key="img_class").set_value(classes[0]).run()
    # the Thresholds page's instance is the one the browser uses: every image at exit 2 with th_img 0
    goto(app, "thresholds")
    app.multiselect(key="thr_exits").set_value([2]).run()
    app.slider(key="thr_th_img_2").set_value(0.0).run()
    goto(app, "images")
    assert set(app.dataframe[0].value["exit"]) == {2}
    assert any("set on the Thresholds page" in c.value for c in app.caption)
    pick = int(app.dataframe[0].value["image"].iloc[-1])
    next(b for b in app.selectbox if b.label.startswith("image (or select a row)")).set_value(pick).run()
    assert not problems(app) and len(app.image) == 1
    app.button(key="img_open").click().run()
    assert not problems(app)
    assert any(t.value == "Confidence explorer" for t in app.title)  # the button switched pages
    assert app.slider(key="explorer_index").value == pick
    assert metrics(app)["leaves at"] == "exit 2" and metrics(app)["kept exits"] == "2"


def test_the_pareto_page_links_a_selected_instance_and_compares_it_with_a_pinned_one(tiny_app):
    app = goto(tiny_app, "pareto")
    assert any("Click a point" in i.value for i in app.info)
    app.button(key="par_pin").click().run()  # the searched instance
    app.session_state["par_selected"] = PointId(PointKind.FRONT, index=0)  # what a click on the plot sets
    app.run()
    assert not problems(app)
    titles = [m.value for m in app.markdown if m.value.startswith("**A: pinned**") or m.value.startswith("**B: ")]
    assert len(titles) == 2
    compare = next(d.value for d in app.dataframe if "B - A" in d.value.columns)
    assert list(compare["figure"])[0] == "mIoU (%)"
    assert any("images leaving at exit" in m.value for m in app.markdown)
    app.button(key="par_reset").click().run()
    assert not problems(app) and not any(m.value.startswith("**B: ") for m in app.markdown)


def test_the_study_page_shows_protocol_transfer_and_rows_on_a_report_set_which_the_pareto_page_follows(
    tiny_app, tiny_study, tmp_path
):
    from mess_core.cli import main

    _, _, out, _ = tiny_study
    app = goto(tiny_app, "study")

    def table(column):
        return next(d.value for d in app.dataframe if column in d.value.columns)

    protocol = table("groups")
    assert list(protocol["groups"]) == ["train (10)", "val (10)", "test (10)"]
    transfer = table("held every way")
    assert list(transfer["row"])[0] == "Backbone"
    app.radio(key="study_mode").set_value("budgeted").run()  # every mode's rows have their transfer check
    assert not problems(app) and any(m.value.startswith("**Transfer check** (budgeted)") for m in app.markdown)
    static = table("held every way")
    assert list(static["row"])[0] == "Backbone" and set(static["row"]) <= set(table("exits used")[""])
    app.radio(key="study_mode").set_value("input-dependent").run()
    app.selectbox(key="report_set_choice").set_value("its report split (test.npz)").run()
    assert not problems(app)
    rows = table("images leave")
    assert "MESS min-cost <= 1pp drop" in list(rows[""]) and set(rows["held"]) <= {"yes", "no", ""}
    goto(app, "pareto")
    assert not problems(app)
    assert any(c.value.startswith("On the report set (synthetic test, 10 images") for c in app.caption)
    # a cache written by study evaluate, and one of another network, refused with a message
    mine = tmp_path / "mine.npz"
    assert (
        main(["study", "evaluate", str(out), "--split", "val", "--data-option", "length=4", "--cache", str(mine)]) == 0
    )
    app = goto(app, "study")
    app.selectbox(key="report_set_choice").set_value("a cache written by `study evaluate --cache`...").run()
    app.text_input(key="report_set_path").input(str(mine)).run()
    assert not problems(app) and len(table("images leave")) >= 2
    foreign = tmp_path / "foreign.npz"
    from mess_core.evaluate.cache import EvaluationCache

    EvaluationCache.random().save(foreign)
    app.text_input(key="report_set_path").input(str(foreign)).run()
    assert any("comes from another network" in e.value or "study evaluate" in e.value for e in app.error)


def test_the_drive_page_runs_frames_of_the_current_instance_and_steps_through_them(tiny_app):
    app = goto(tiny_app, "thresholds")
    app.multiselect(key="thr_exits").set_value([2]).run()
    app.slider(key="thr_th_img_2").set_value(0.0).run()  # every frame leaves at exit 2
    app = goto(app, "drive")
    assert not problems(app)
    assert app.radio(key="drive_kind").value == "a generated drive"  # a synthetic study has no sequences
    assert metrics(app)["exit taken"] == "exit 2 of 6" and metrics(app)["frames played"] == "1"
    app.button(key="drive_step").click().run()
    assert app.slider(key="drive_scrub").value == 1 and metrics(app)["frames played"] == "2"
    app.button(key="drive_play").click().run()
    assert not problems(app) and app.button(key="drive_play").label == "pause"
    app.run()  # what the fragment's timer does while playing: the next frame, drawn alone
    assert not problems(app) and app.slider(key="drive_scrub").value == 2 and "frames played" not in metrics(app)
    assert any(c.value.startswith("Playing:") for c in app.caption)
    app.button(key="drive_play").click().run()  # pause: the frame it stopped on, with its figures
    assert not problems(app) and app.button(key="drive_play").label == "play"
    assert metrics(app)["frames played"] == "4" and app.slider(key="drive_scrub").value == 3
    app.button(key="drive_all").click().run()
    assert not problems(app) and metrics(app)["frames played"] == "80"
    assert metrics(app)["GFLOPs saved"] != "-" and len(app.get("plotly_chart")) == 1
    app.slider(key="drive_scrub").set_value(41).run()  # seeking shows a played frame: nothing runs again
    assert not problems(app) and metrics(app)["frames played"] == "80" and metrics(app)["exit taken"] == "exit 2 of 6"
