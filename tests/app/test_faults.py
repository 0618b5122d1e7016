"""Faults met by the app and by its uploads and data loaders: every one ends as a message that names the problem,
the app stays usable on every page (fragments included), and a damaged study's files are left as they were."""

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app.views.upload import MAX_PIXELS, ImageError, decode_image
from mess_core.cli import main
from tests.apptest import PAGES, goto, metrics, problems, start
from tests.engine.data.test_datasets import folder_dataset, truncate
from tests.paths import PRECOMPUTED, REPO, folder_digest

SHIPPED = PRECOMPUTED / "synthetic-mobilenetv2-fcn"  # the smallest shipped study: copied, never changed


@pytest.fixture
def studies(tmp_path):
    """A folder of studies: ``good``, a copy of the shipped one, beside which each test puts a damaged copy."""
    root = tmp_path / "studies"
    shutil.copytree(SHIPPED, root / "good")
    return root


def damaged(root: Path, name: str, damage) -> tuple[Path, dict[str, str]]:
    folder = root / name
    shutil.copytree(SHIPPED, folder)
    damage(folder)
    return folder, folder_digest(folder)


def cut_cache(folder: Path) -> None:
    truncate(folder / "val.npz")


def cache_as_number(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["cache"] = 5
    (folder / "manifest.json").write_text(json.dumps(manifest))


def cut_weights(folder: Path) -> None:
    truncate(folder / "multi_exit.pt")


def works(app, page: str = "thresholds") -> None:
    """The good study on ``page``, as a user who picks it in the sidebar sees it: figures and no message."""
    goto(app, page)
    app.sidebar.selectbox(key="study_choice").set_value("good").run()
    assert not problems(app), problems(app)
    assert metrics(app), f"no figures on {page}"


@pytest.mark.parametrize(
    "damage, says", [(cut_cache, "val.npz: not a readable evaluation cache"), (cache_as_number, "field 'cache' is 5")]
)
def test_a_damaged_study_gets_a_message_on_every_page(studies, monkeypatch, damage, says):
    folder, before = damaged(studies, "damaged", damage)
    app = start(monkeypatch, studies, "damaged")
    for page in PAGES:
        goto(app, page)
        assert not app.exception, page
        assert app.error and says in app.error[0].value, (page, [e.value for e in app.error])
    works(app)
    assert folder_digest(folder) == before


def options_as_list(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["data_options"] = [1]
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, says",
    [
        (cut_weights, "multi_exit.pt: not a readable weights-only checkpoint"),
        (options_as_list, "config field 'data_options' is [1]"),
    ],
)
def test_damage_the_explorer_meets_gets_a_message_there_and_other_pages_work(studies, monkeypatch, damage, says):
    folder, before = damaged(studies, "damaged", damage)
    app = goto(start(monkeypatch, studies, "damaged"), "explorer")  # it loads the network and the dataset
    assert not app.exception
    assert any(says in e.value for e in app.error), [e.value for e in app.error]
    goto(app, "thresholds")  # its figures come from the cache, which is fine: they still show
    assert not app.exception and not app.error and "mIoU" in metrics(app)
    works(app, "explorer")
    assert folder_digest(folder) == before


@pytest.mark.parametrize(
    "typed, says",
    [("/tmp/a\0b", "not a usable path (embedded null byte)"), ("/tmp/" + "x" * 5000, "(5005 characters)")],
)
def test_an_unusable_folder_typed_in_the_sidebar_gets_a_message(studies, monkeypatch, typed, says):
    app = goto(start(monkeypatch, studies, "good"), "thresholds")
    app.sidebar.selectbox(key="study_choice").set_value("another folder...").run()
    app.sidebar.text_input(key="study_folder").input(typed).run()
    assert not app.exception
    assert app.error and says in app.error[0].value, [e.value for e in app.error]
    works(app, "study")


# --- fragments: they rerun alone, outside their page's boundary ---------------------------------------------------


def run_fragment(path: str, module: str, fragment: str) -> None:
    """A script (for ``AppTest.from_function``) that runs one fragment of the app on the study at ``path``, as a
    fragment-only rerun does: with no page around it."""
    import importlib

    from mess_core.study import open_study

    getattr(importlib.import_module(module), fragment)(open_study(path))


def broken(message: str, kind: type = RuntimeError):
    def fail(*args, **kwargs):
        raise kind(message)

    return fail


@pytest.mark.parametrize(
    "module, fragment, engine_call",
    [
        ("app.screens.thresholds", "controls_and_figures", "threshold_summary"),
        ("app.screens.pareto", "search_area", "live_search"),
    ],
)
@pytest.mark.parametrize("kind, says", [(ImageError, "the engine says no"), (RuntimeError, "Something went wrong")])
def test_an_error_inside_a_fragment_gets_a_message(studies, monkeypatch, module, fragment, engine_call, kind, says):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), engine_call, broken("the engine says no", kind))
    app = AppTest.from_function(run_fragment, args=(str(studies / "good"), module, fragment), default_timeout=120)
    app.run()
    assert not app.exception
    assert app.error and says in app.error[0].value and "the engine says no" in app.error[0].value


def test_every_fragment_of_the_app_is_guarded():
    app = REPO / "app"
    bare = [str(p) for p in app.rglob("*.py") if p.name != "boundaries.py" and "st.fragment" in p.read_text()]
    assert not bare, f"use app.boundaries.guarded_fragment, not a bare st.fragment: {bare}"


# --- uploads ------------------------------------------------------------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A small valid PNG (one pixel of data) whose header declares ``width`` x ``height``: a decompression bomb's
    header without its payload."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data[12:29]  # chunk type and 13 bytes of IHDR data, after the signature and the chunk length
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize(
    "width, height, says",
    [(40000, 40000, "1,600,000,000 pixels"), (11000, 10000, "10000x11000 pixels (110 megapixels)")],
)
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(width, height, says):
    assert width * height > MAX_PIXELS
    with pytest.raises(ImageError) as error:
        decode_image(png_declaring(width, height), name="bomb.png")
    message = str(error.value)
    assert message.startswith("bomb.png: ") and says in message
    assert f"{MAX_PIXELS // 1_000_000} megapixels at most" in message and "downscale" in message


def test_an_opencv_error_while_decoding_names_the_file(monkeypatch):
    import cv2

    def refuse(*args, **kwargs):
        raise cv2.error(
            "OpenCV(5.1.0) loadsave.cpp:80: error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS"
        )

    monkeypatch.setattr(cv2, "imdecode", refuse)
    image = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image, "PNG")
    with pytest.raises(ImageError, match=r"^scene\.png: OpenCV cannot decode this file \(.*CV_IO_MAX_IMAGE_PIXELS"):
        decode_image(image.getvalue(), name="scene.png")


# --- data loader workers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_image_ends_training_with_one_line_naming_it(tmp_path, capsys, workers):
    root = tmp_path / "ds"
    folder_dataset(root / "train", stems=("a", "b", "c", "d"), height=32, width=32)
    folder_dataset(root / "val", stems=("e",), height=32, width=32)
    (root / "dataset.yaml").write_text("classes: [background, road, car]\n")
    truncate(root / "train" / "images" / "c.png")
    code = main(
        [
            "train",
            "--stage",
            "backbone",
            "--data",
            "folder",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "run"),
            "--workers",
            str(workers),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--crop",
            "32x32",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "images/c.png" in err, err
    assert "Traceback" not in err and "worker" not in err, err
