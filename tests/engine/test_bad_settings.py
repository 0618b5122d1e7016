"""Bad values at every boundary are refused before any work starts: study YAML settings, training
configuration fields and command-line arguments, each with one message naming where, the setting and the value."""

from __future__ import annotations

import re

import pytest
import torch
import yaml

from mess_core.cli import main
from mess_core.errors import TrainingError
from mess_core.study.config import StudyConfig, StudyError
from mess_core.train import TrainConfig
from tests.paths import REPO, folder_digest

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="cuda is refused only where there is none")

# setting, bad value, what the message says besides the file, the setting and the value
BAD_STUDY_SETTINGS = [
    ("batch_size", 1.5, "whole number"),
    ("batch_size", True, "whole number"),
    ("max_exits", "two", "whole number"),
    ("max_exits", 0, ">= 1"),
    ("exit_space", "zzz", "exit configuration id"),
    ("exit_space", ",", "names no configuration"),
    ("variant_space", "zzz", "exit configuration id"),
    ("model", "nosuchnet", "not registered"),
    ("crop", [0, 0], "at least 8 pixels"),
    ("crop", [96], "list of 2 whole numbers"),
    ("crop", 96, "list of 2 whole numbers"),
    ("eval_size", [4, 4], "at least 8 pixels"),
    ("cache_split", 5, "text"),
    ("report_split", "", "name a split"),
    ("cache_limit", 0, ">= 1"),
    ("bench_engines", ["foo"], "eager, onnxruntime"),
    ("bench_engines", "eager", "list of texts"),
    ("bench_batches", [0], ">= 1"),
    ("bench_images", -1, ">= 0"),
    ("bench_repeats", 0, ">= 1"),
    ("seed", 2**80, "at most 4,294,967,295"),
    ("crop", [1_000_000_000, 1_000_000_000], "at most 16,384"),
    ("num_exits", 10**12, "at most 64"),
    ("latency", "yes", "true or false"),
    ("seed", -1, ">= 0"),
    ("dataset", "nosuchdata", "unknown dataset"),
    ("data_options", [1], "mapping"),
    ("data_options", {"size": "abc"}, "size"),
    ("data_options", {"colour": 1}, "no option"),
    ("stages", {"exits": {"lr": "fast"}}, "stages.exits"),
    ("stages", {"backbone": {"lr": -1}}, "lr must be > 0"),
    ("stages", {"exits": {"momentum": 1.0}}, "momentum"),
    ("stages", {"exits": {"device": "nonsense"}}, "not a device"),
]


@pytest.mark.parametrize(
    "setting, value, says", BAD_STUDY_SETTINGS, ids=[f"{s}={v!r}" for s, v, _ in BAD_STUDY_SETTINGS]
)
def test_a_bad_study_setting_is_refused_when_the_yaml_is_read(tmp_path, setting, value, says):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", setting: value}))
    with pytest.raises(StudyError) as exc:
        StudyConfig.from_yaml(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: ")
    assert setting in message or setting == "stages"
    assert says in message
    shown = value if not isinstance(value, dict) else next(iter(value.values()))
    if not isinstance(shown, dict) and setting not in ("data_options", "exit_space"):
        assert str(shown).strip("[]") in message or repr(shown) in message, message


@NO_CUDA
def test_cuda_in_a_study_is_refused_where_there_is_none(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "stages": {"backbone": {"device": "cuda"}}}))
    with pytest.raises(StudyError, match="no CUDA GPU.*device: cpu"):
        StudyConfig.from_yaml(path)


# field, bad value, what the message says
BAD_TRAIN_FIELDS = [
    ("lr", 0, "lr must be > 0"),
    ("lr", "fast", "lr: expected a number or null"),
    ("lr", float("nan"), "finite"),
    ("weight_decay", -0.1, "weight_decay"),
    ("momentum", 1, "momentum"),
    ("workers", -1, "workers"),
    ("alpha", 1.5, "alpha"),
    ("temperature", 0, "temperature"),
    ("jitter", -0.2, "jitter"),
    ("scale", (2.0, 1.0), "0 < min <= max"),
    ("scale", (0.0, 1.0), "0 < min <= max"),
    ("poly_power", 0, "poly_power"),
    ("profile_size", (4, 64), "profile_size"),
    ("eval_size", (64, 4), "eval_size"),
    ("train_limit", 0, "train_limit"),
    ("val_limit", 0, "val_limit"),
    ("steps_per_epoch", 0, "steps_per_epoch"),
    ("seed", -3, "seed"),
    ("device", "gpu0", "not a device"),
    ("exit_space", "light,zzz", "exit_space"),
    ("batch_size", 1.5, "batch_size: expected a whole number"),
    ("prune_at", (1.5,), "prune_at: expected a list of whole numbers"),
    ("hflip", "yes", "hflip: expected true or false"),
    ("convert", [1], "convert: expected a mapping"),
    ("dataset", "nosuchdata", "unknown dataset"),
]


@pytest.mark.parametrize("field, value, says", BAD_TRAIN_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_TRAIN_FIELDS])
def test_a_bad_training_field_is_refused_when_the_config_is_made(field, value, says):
    with pytest.raises(TrainingError, match=None) as exc:
        TrainConfig(stage="exits", out=".", **{field: value})
    assert says in str(exc.value)


@NO_CUDA
def test_cuda_in_a_training_config_is_refused_where_there_is_none():
    with pytest.raises(TrainingError, match="no CUDA GPU.*device: cpu"):
        TrainConfig(stage="backbone", out=".", device="cuda")


TRAIN = ["train", "--stage", "backbone", "--out", "run"]
# arguments, what the one line names
BAD_ARGUMENTS = [
    ([*TRAIN, "--lr", "-1"], "argument --lr: expected a number above 0, got '-1'"),
    ([*TRAIN, "--lr", "nan"], "argument --lr"),
    ([*TRAIN, "--weight-decay", "-1e-4"], "argument --weight-decay"),
    ([*TRAIN, "--alpha", "1.5"], "argument --alpha: expected a number from 0 to 1"),
    ([*TRAIN, "--temperature", "0"], "argument --temperature"),
    ([*TRAIN, "--jitter", "inf"], "argument --jitter"),
    ([*TRAIN, "--scale", "0", "2"], "argument --scale"),
    ([*TRAIN, "--class-balance", "-1"], "argument --class-balance"),
    ([*TRAIN, "--workers", "-1"], "argument --workers"),
    ([*TRAIN, "--seed", "1.5"], "argument --seed"),
    ([*TRAIN, "--prune-at", "0"], "argument --prune-at"),
    ([*TRAIN, "--prune-margin", "-1"], "argument --prune-margin"),
    ([*TRAIN, "--device", "gpu0"], "argument --device: 'gpu0' is not a device"),
    ([*TRAIN, "--epochs", "two"], "argument --epochs"),
    ([*TRAIN, "--loss", "mse"], "argument --loss: invalid choice"),
    (["train", "--stage", "backbone", "--out", "afile"], "argument --out: 'afile' is a file"),
    ([*TRAIN, "--data-option", "size=abc"], "size: expected a list of 2 whole numbers, got 'abc'"),
    ([*TRAIN, "--data-option", "colour=1"], "has no option(s) colour"),
    (["search", "--cache", "c.npz", "--max-drop", "-1"], "argument --max-drop"),
    (["search", "--cache", "c.npz", "--budget", "0"], "argument --budget"),
    (["search", "--cache", "c.npz", "--th-pix", "0.5,1.5"], "argument --th-pix"),
    (["search", "--cache", "c.npz", "--th-img", "nan"], "argument --th-img"),
    (
        ["cache", "--multi-exit", "m.pt", "--data", "synthetic", "--out", "c.npz", "--th-pix", "-0.1"],
        "argument --th-pix",
    ),
    (
        ["cache", "--multi-exit", "m.pt", "--data", "synthetic", "--out", "c.npz", "--edge-size", "4"],
        "argument --edge-size: expected an odd whole number",
    ),
    (
        ["cache", "--multi-exit", "m.pt", "--data", "synthetic", "--out", "c.npz", "--edge-window", "0"],
        "argument --edge-window",
    ),
    (
        ["cache", "--multi-exit", "m.pt", "--data", "synthetic", "--out", "c.npz", "--device", "tpu:x"],
        "argument --device",
    ),
    (["check-data", "--data", "synthetic", "--limit", "0"], "argument --limit"),
    (["profile", "--model", "mobilenetv2_fcn", "--exits", "-2"], "argument --exits"),
    (["bench", "--multi-exit", "m.pt", "--engines", "tensorrt"], "argument --engines: invalid choice"),
    (["study", "build", "x.yaml", "--out", "afile"], "argument --out: 'afile' is a file"),
    (["study", "build", "x.yaml", "--work", "afile"], "argument --work: 'afile' is a file"),
    (["export", "s", "--row", "backbone", "--onnx", "afile"], "argument --onnx: 'afile' is a file"),
    (["cache", "--multi-exit", "m.pt", "--data", "synthetic", "--out", "."], "argument --out: .: is a folder"),
    (["search", "--cache", "c.npz", "--out", "."], "argument --out: .: is a folder"),
    (["search", "--cache", "c.npz", "--front-csv", "."], "argument --front-csv: .: is a folder"),
    (["profile", "--model", "mobilenetv2_fcn", "--json", "."], "argument --json: .: is a folder"),
    (["bench", "--multi-exit", "m.pt", "--out", "."], "argument --out: .: is a folder"),
    # refused once the run's inputs are read, before the run folder exists
    ([*TRAIN, "--init", "afile", "--data-option", "length=2", "--crop", "32x32"], "afile"),
    ([*TRAIN, "--init", "absent.pt", "--data-option", "length=2", "--crop", "32x32"], "absent.pt: no such"),
]


@pytest.mark.parametrize(
    "argv, says", BAD_ARGUMENTS, ids=[" ".join(a[len(TRAIN) if a[:5] == TRAIN else 0 :]) for a, _ in BAD_ARGUMENTS]
)
def test_a_bad_argument_is_one_line_and_changes_nothing(tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    before = folder_digest(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert says in lines[0]
    assert folder_digest(tmp_path) == before


def test_an_argparse_error_names_the_command_and_points_to_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--cache", "c.npz", "--budget", "-1"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        "error: python -m mess_core search: argument --budget: expected a number above "
        "0, got '-1' (--help lists the arguments)\n"
    )


@NO_CUDA
def test_cuda_on_the_command_line_is_refused_where_there_is_none(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*TRAIN[:-1], str(tmp_path / "run"), "--device", "cuda"])
    assert "no CUDA GPU on this machine; use --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


SHIPPED = sorted([*REPO.glob("studies/*.yaml"), *REPO.glob("precomputed/*/study.yaml")])


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_study_yaml_passes_the_checks(path):
    StudyConfig.from_yaml(path)


MANIFESTS = sorted(REPO.glob("precomputed/*/manifest.json"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(REPO)) for p in MANIFESTS])
def test_every_shipped_manifest_config_passes_the_checks(path):
    import json

    StudyConfig.from_dict(json.loads(path.read_text())["config"], where=str(path))


# ------------------------------------------------------------------------------------------------ files read as text
BAD_TEXT_FILES = {
    "latin-1": ("name: x\ndescription: caf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
    "utf-16": ("name: x\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
    "binary": (bytes(range(256)), "holds binary data"),
    "integer keys": (b"name: x\n1: y\n", "key 1 is not a name"),
    "nested 5000 deep": (b"a: " + b"[" * 5000 + b"]" * 5000, "nested too deep"),
    "huge epochs": (b"name: x\nstages:\n  pretrain: {epochs: 100000000000000000000}\n", "at most 100,000"),
}


@pytest.mark.parametrize("case", list(BAD_TEXT_FILES))
def test_a_study_yaml_that_is_not_settings_is_refused_in_one_line(tmp_path, capsys, case):
    content, says = BAD_TEXT_FILES[case]
    path = tmp_path / "study.yaml"
    path.write_bytes(content)
    before = folder_digest(tmp_path)
    assert main(["study", "build", str(path), "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert says in err and str(path) in err and len(err.strip().splitlines()) == 1
    assert folder_digest(tmp_path) == before


@pytest.mark.parametrize("case", ["folder", "utf-16", "nested"])
def test_an_instance_file_that_is_not_an_instance_is_refused_in_one_line(tmp_path, capsys, case):
    path = tmp_path / "instance.json"
    if case == "folder":
        path.mkdir()
    else:
        path.write_bytes(
            '{"mode": "budgeted"}'.encode("utf-16") if case == "utf-16" else b"[" * 100_000 + b"]" * 100_000
        )
    assert (
        main(
            [
                "export",
                str(REPO / "precomputed" / "synthetic-mobilenetv2-fcn"),
                "--instance",
                str(path),
                "--onnx",
                str(tmp_path / "onnx"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert str(path) in err and "This is a bug" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "onnx").exists()


def test_an_empty_weights_file_and_an_unknown_home_are_named(tmp_path, capsys):
    (tmp_path / "w.pt").write_bytes(b"")
    assert (
        main(
            [
                "train",
                "--stage",
                "backbone",
                "--out",
                str(tmp_path / "r"),
                "--weights",
                str(tmp_path / "w.pt"),
                "--data-option",
                "length=4",
            ]
        )
        == 2
    )
    assert "w.pt: is an empty (0-byte) file" in capsys.readouterr().err
    assert main(["study", "check", "~nosuchuser-here/study"]) == 2
    assert "names the home folder of a user this machine does not have" in capsys.readouterr().err


@pytest.mark.parametrize(
    "convert, says",
    [
        ({"backbone": "nosuch"}, "backbone='nosuch' is not a submodule of FCN"),
        ({"leaf_modules": ["backbone.99"]}, "leaf_modules names ['backbone.99']"),
    ],
)
def test_convert_names_are_checked_on_the_model_when_the_yaml_is_read(tmp_path, convert, says):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "convert": convert}))
    with pytest.raises(StudyError, match="study.yaml: convert: " + re.escape(says)):
        StudyConfig.from_yaml(path)
