"""Fault injection: damaged caches, checkpoints, manifests and oversized searches are refused with a message naming
the file, field or value, and leave every file untouched."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mess_core.cli import main
from mess_core.evaluate.cache import CacheError, EvaluationCache
from mess_core.search.constrained import MAX_SPACE_SIZE, search
from mess_core.search.problem import Objective, SearchError, SearchSpace
from mess_core.study import open_study
from mess_core.study.config import StudyError
from tests.paths import PRECOMPUTED, folder_digest

SYNTHETIC = PRECOMPUTED / "synthetic-mobilenetv2-fcn"


def saved_cache(tmp_path: Path, **changes) -> Path:
    cache = EvaluationCache.random(images=4, exits=3, configs=2, classes=3, seed=1)
    for name, edit in changes.items():
        arr = getattr(cache, name).copy()
        edit(arr)
        setattr(cache, name, arr)
    # write around validate (save does not validate), as a damaged or hand-edited file would be
    return cache.save(tmp_path / "val.npz")


# ------------------------------------------------------------------------------------------------ caches
@pytest.mark.parametrize(
    "array, edit, words",
    [
        ("tp", lambda a: a.__setitem__((0, 0, 0), -5), ["'tp'", "negative", "-5"]),
        ("pred", lambda a: a.__setitem__((1, 2, 1), -1), ["'pred'", "negative"]),
        ("label", lambda a: a.__setitem__((2, 0), -3), ["'label'", "negative"]),
        ("tp", lambda a: a.__setitem__((0, 1, 0), 10_000), ["'tp'", "exceeds 'pred'"]),
        ("pixels", lambda a: a.__setitem__(0, 1), ["'label'", "more pixels", "'pixels'"]),
        ("above", lambda a: a.__setitem__((0, 0, 0), 1_000), ["'above'", "confident pixels"]),
        ("conf_sum", lambda a: a.__setitem__((0, 0), np.nan), ["'conf_sum'", "non-finite"]),
    ],
)
def test_impossible_counts_are_refused_naming_file_and_array(tmp_path, array, edit, words):
    path = saved_cache(tmp_path, **{array: edit})
    before = folder_digest(tmp_path)
    with pytest.raises(CacheError) as err:
        EvaluationCache.load(path)
    text = str(err.value)
    assert str(path) in text and "rebuild" in text
    for word in words:
        assert word in text
    assert folder_digest(tmp_path) == before


def _meta_edit(cache, key, value):
    cache.meta = {**cache.meta, key: value}


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            lambda c: _meta_edit(c, "th_pix_grid", list(reversed(c.meta["th_pix_grid"]))),
            ["'th_pix_grid'", "increasing"],
        ),
        (lambda c: _meta_edit(c, "th_pix_grid", ["a", "b", "c"]), ["'th_pix_grid'"]),
        (lambda c: _meta_edit(c, "th_pix_grid", [0.5, 0.7, 1.5]), ["'th_pix_grid'", "(0, 1]"]),
        (lambda c: _meta_edit(c, "space", [c.configs[0]] * 2), ["'space'", "more than once"]),
        (lambda c: _meta_edit(c, "space", 7), ["'space'"]),
        (lambda c: _meta_edit(c, "num_classes", 19), ["'num_classes'", "19", "3 classes"]),
        (lambda c: _meta_edit(c, "classes", ["a"]), ["'classes'"]),
        (lambda c: _meta_edit(c, "input_size", "big"), ["'input_size'", "big"]),
        (lambda c: _meta_edit(c, "images", ["one.png"]), ["'images'", "1 images", "hold 4"]),
        (lambda c: setattr(c, "pixels", np.zeros_like(c.pixels)), ["'pixels'", "is 0"]),
        (
            lambda c: (setattr(c, "label", np.zeros_like(c.label)), setattr(c, "tp", np.zeros_like(c.tp))),
            ["no labelled pixel"],
        ),
        (
            lambda c: (
                c.above.__setitem__((0, 0), c.above[0, 0][::-1].copy())
                if c.above[0, 0, 0] != c.above[0, 0, -1]
                else c.above.__setitem__((0, 0, -1), c.above[0, 0, 0] + 1)
            ),
            ["'above'", "higher th_pix"],
        ),
    ],
)
def test_metadata_that_contradicts_the_arrays_is_refused(tmp_path, edit, words):
    cache = EvaluationCache.random(images=4, exits=3, configs=2, classes=3, seed=1)
    cache.above = cache.above.copy()
    edit(cache)
    path = cache.save(tmp_path / "val.npz")
    with pytest.raises(CacheError) as err:
        EvaluationCache.load(path)
    for word in words:
        assert word in str(err.value)
    assert str(path) in str(err.value)


def test_a_run_folder_with_another_networks_cache_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(SYNTHETIC / "multi_exit.pt", run / "multi_exit.pt")
    EvaluationCache.random(images=4, exits=3, configs=2, classes=3, seed=1).save(run / "val.npz")
    with pytest.raises(
        StudyError,
        match=r"val.npz: was not written from .*multi_exit.pt \(3 classes there, 7 in the "
        r"weights; 3 exits there, 6 in the weights; configurations crm16-b0-fcn",
    ):
        open_study(run).cache


def test_true_positives_beyond_labels_are_refused(tmp_path):
    cache = EvaluationCache.random(images=4, exits=3, configs=2, classes=3, seed=1)
    cache.tp, cache.pred = cache.tp.copy(), cache.pred.copy()
    cache.tp[0, 0, 0] = cache.label[0, 0] + 1
    cache.pred[0, 0, 0] = max(cache.pred[0, 0, 0], cache.tp[0, 0, 0])  # only the 'label' bound is broken
    path = cache.save(tmp_path / "val.npz")
    with pytest.raises(CacheError, match=r"'tp' exceeds 'label'") as err:
        EvaluationCache.load(path)
    assert str(path) in str(err.value)


def test_negative_tp_no_longer_reaches_search(tmp_path):
    path = saved_cache(tmp_path, tp=lambda a: a.__setitem__(slice(None), -a))
    assert main(["search", "--cache", str(path)]) == 2


@pytest.mark.parametrize("cut", [0, 10, 200, -40])
def test_empty_or_truncated_npz_is_a_clear_error(tmp_path, cut, capsys):
    good = EvaluationCache.random(seed=2).save(tmp_path / "good.npz").read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(good[:cut] if cut >= 0 else good[: len(good) + cut])
    with pytest.raises(CacheError) as err:
        EvaluationCache.load(path)
    assert str(path) in str(err.value) and "rebuild" in str(err.value)
    if cut == 0:
        assert "empty (0-byte)" in str(err.value)
    assert main(["search", "--cache", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0]


def test_the_shipped_caches_still_load():
    for path in sorted(SYNTHETIC.parent.glob("*/val.npz")):
        EvaluationCache.load(path)


# ------------------------------------------------------------------------------------------------ CLI boundary
def test_empty_checkpoint_is_named_not_an_index_error(tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert (
        main(
            [
                "cache",
                "--multi-exit",
                str(empty),
                "--data",
                "synthetic",
                "--out",
                str(tmp_path.parent / f"{tmp_path.name}-x.npz"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0] and "empty (0-byte)" in err[0]
    assert not (tmp_path / "x.npz").exists()


def test_truncated_checkpoint_is_named(tmp_path, capsys):
    cut = tmp_path / "cut.pt"
    cut.write_bytes((SYNTHETIC / "multi_exit.pt").read_bytes()[:300])
    assert (
        main(
            [
                "cache",
                "--multi-exit",
                str(cut),
                "--data",
                "synthetic",
                "--out",
                str(tmp_path.parent / f"{tmp_path.name}-x.npz"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(cut) in err[0]


def test_unexpected_errors_exit_1_with_a_debug_hint_and_debug_reraises(monkeypatch, capsys):
    from mess_core.cli import search as search_cli

    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(search_cli, "run", boom)
    argv = ["search", "--cache", "x.npz"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ZeroDivisionError" in err[0] and "--debug" in err[0]
    with pytest.raises(ZeroDivisionError):
        main(["--debug", *argv])


def test_bad_input_with_debug_reraises_the_mess_error(tmp_path):
    with pytest.raises(CacheError):
        main(["--debug", "search", "--cache", str(tmp_path / "absent.npz")])


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["search", "--max-exits", "zero"])
    assert exc.value.code == 2


# ------------------------------------------------------------------------------------------------ manifests
@pytest.fixture
def study_copy(tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(SYNTHETIC, folder)
    return folder


def edit_manifest(folder: Path, **changes) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"cache": "../other/val.npz"}, ["'cache'", "../other/val.npz", "outside"]),
        ({"cache": "/etc/passwd"}, ["'cache'", "/etc/passwd", "outside"]),
        ({"report_cache": "../../val.npz"}, ["'report_cache'", "outside"]),
        ({"cache": 3}, ["'cache'", "3", "expected a file name"]),
        ({"files": ["val.npz"]}, ["'files'", "list"]),
        ({"files": {"../multi_exit.pt": {"bytes": 1, "sha256": "x"}}}, ["'files'", "../multi_exit.pt", "outside"]),
        ({"files": {"val.npz": {"bytes": "12", "sha256": "x"}}}, ["'files'", "val.npz", "'bytes'"]),
        ({"config": "oops"}, ["'config'", "str"]),
    ],
)
def test_bad_manifest_fields_are_refused_naming_the_field(study_copy, changes, words):
    (study_copy.parent / "other").mkdir()
    shutil.copy(study_copy / "val.npz", study_copy.parent / "other" / "val.npz")
    edit_manifest(study_copy, **changes)
    before = folder_digest(study_copy.parent)
    with pytest.raises(StudyError) as err:
        open_study(study_copy)
    text = str(err.value)
    assert str(study_copy / "manifest.json") in text
    for word in words:
        assert word in text
    assert folder_digest(study_copy.parent) == before


def test_study_check_refuses_a_folder_without_manifest(study_copy, capsys):
    (study_copy / "manifest.json").unlink()
    before = folder_digest(study_copy)
    assert main(["study", "check", str(study_copy)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and str(study_copy) in err and "0 problem" not in err
    assert folder_digest(study_copy) == before


def test_the_shipped_studies_still_open_and_check():
    for folder in sorted(SYNTHETIC.parent.glob("*/manifest.json")):
        assert open_study(folder.parent).verify() == []


# ------------------------------------------------------------------------------------------------ search bound
def test_oversized_search_is_refused_with_count_and_time():
    cache = EvaluationCache.load(SYNTHETIC / "val.npz")
    space = SearchSpace(max_exits=50)
    assert space.size(cache, "input-dependent") > MAX_SPACE_SIZE
    with pytest.raises(SearchError) as err:
        search(cache, Objective("min-cost", max_drop=1.0), space=space)
    text = str(err.value)
    assert "max_exits=50" in text and f"{MAX_SPACE_SIZE:,}" in text and "about" in text and "--max-exits" in text


def test_shipped_studies_max_exits_stay_under_the_bound():
    for path in sorted(SYNTHETIC.parent.glob("*/val.npz")):
        cache = EvaluationCache.load(path)
        assert SearchSpace(max_exits=3).size(cache, "input-dependent") <= MAX_SPACE_SIZE


def test_cli_max_exits_50_is_refused_quickly(capsys):
    assert main(["search", "--cache", str(SYNTHETIC / "val.npz"), "--max-exits", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_exits=50" in err[0]


@pytest.mark.parametrize("what", ["folder", "fifo", "device", "csv"])
def test_a_cache_or_weights_path_that_is_not_such_a_file_says_what_it_is(tmp_path, capsys, what):
    path = {"folder": tmp_path, "fifo": tmp_path / "pipe", "device": Path("/dev/zero"), "csv": tmp_path / "c.npz"}[what]
    if what == "fifo":
        os.mkfifo(path)
    if what == "csv":
        path.write_text("a,b\n1,2\n")
    says = {
        "folder": "is a folder, not a file",
        "fifo": "is a device, FIFO",
        "device": "is a device, FIFO",
        "csv": "is not an evaluation cache (an .npz archive; this file starts with b'a,b\\n')",
    }[what]
    assert main(["search", "--cache", str(path)]) == 2
    assert says in capsys.readouterr().err
    if what != "csv":
        assert (
            main(
                [
                    "cache",
                    "--multi-exit",
                    str(path),
                    "--data",
                    "synthetic",
                    "--out",
                    str(tmp_path.parent / f"{tmp_path.name}-x.npz"),
                ]
            )
            == 2
        )
        assert says in capsys.readouterr().err


def test_nan_weights_are_named_not_called_nondeterminism():
    import torch

    from mess_core.conversion.pipeline import convert
    from mess_core.errors import ConversionError
    from tests.user_models import TinyUNet

    model = TinyUNet(3)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ConversionError, match=r"not finite .*non-finite values \("):
        convert(model, torch.zeros(1, 3, 32, 32), num_exits=3)


def test_profile_refuses_a_class_count_no_dataset_has(capsys):
    with pytest.raises(SystemExit) as exc:  # an argument argparse refuses
        main(["profile", "--model", "mobilenetv2_fcn", "--num-classes", "100000000"])
    assert exc.value.code == 2 and "from 1 to 4,096" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, content, says",
    [
        ("fronts.json", [{"x": 1}], "fronts.json: its rows lack the column(s) series"),
        ("fronts.json", {"not": "rows"}, "fronts.json: expected a list of rows"),
        ("results.json", [1, 2], "results.json: holds no 'input-dependent' table"),
        ("results.json", {"input-dependent": [{"row": "backbone"}]}, "its rows lack the column(s) miou"),
    ],
)
def test_study_report_on_a_damaged_table_names_the_file(tmp_path, capsys, name, content, says):
    study = tmp_path / "study"
    shutil.copytree(SYNTHETIC, study)
    (study / name).write_text(json.dumps(content))
    assert main(["study", "report", str(study)]) == 2
    err = capsys.readouterr().err
    assert says in err and "This is a bug" not in err


def test_an_environment_fault_anywhere_in_a_command_is_one_line_not_a_bug(monkeypatch, capsys):
    from mess_core.cli import search as search_command

    def disk_full(_args):
        raise OSError(28, "No space left on device", "/data/out.json")

    monkeypatch.setattr(search_command, "run", disk_full)
    assert main(["search", "--cache", str(SYNTHETIC / "val.npz")]) == 2
    err = capsys.readouterr().err
    assert "/data/out.json: cannot write it: the disk is full" in err and "This is a bug" not in err
