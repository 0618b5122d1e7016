"""No command destroys what it did not make: an output onto one of the command's inputs is refused; folders are
written only when new, empty or the command's own; one writer per folder; and the atomic writer writes through links,
refuses special files and keeps the permissions a plain open would give."""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mess_core.cli import main
from mess_core.folders import LOCK, folder_lock
from mess_core.io import OutputError, atomic_open, atomic_write_text
from tests.conftest import TINY_STUDY
from tests.paths import PRECOMPUTED, TESTS

SHIPPED = PRECOMPUTED / "synthetic-mobilenetv2-fcn"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def inputs(tmp_path):
    """Copies of a shipped cache and weights, to be named as inputs."""
    shutil.copyfile(SHIPPED / "val.npz", tmp_path / "val.npz")
    shutil.copyfile(SHIPPED / "multi_exit.pt", tmp_path / "w.pt")
    shutil.copyfile(TESTS / "user_models.py", tmp_path / "m.py")
    return tmp_path


@pytest.mark.parametrize(
    "command",
    [
        ["search", "--cache", "{d}/val.npz", "--out", "{d}/val.npz"],
        ["search", "--cache", "{d}/val.npz", "--objective", "pareto", "--front-csv", "{d}/val.npz"],
        ["search", "--cache", "{d}/val.npz", "--eval-cache", "{d}/w.pt", "--out", "{d}/w.pt"],
        ["search", "--cache", "{d}/link.npz", "--out", "{d}/val.npz"],  # the same file through a link
        ["bench", "--multi-exit", "{d}/w.pt", "--out", "{d}/w.pt"],
        ["cache", "--multi-exit", "{d}/w.pt", "--data", "synthetic", "--out", "{d}/w.pt"],
        ["profile", "--model", "{d}/m.py:TinyUNet", "--json", "{d}/m.py"],
        ["study", "evaluate", "{d}/study", "--cache", "{d}/study/mine.npz"],
        ["export", "{d}/study", "--row", "backbone", "--onnx", "{d}/study/onnx"],
    ],
)
def test_an_output_onto_an_input_is_refused_and_the_input_kept(inputs, capsys, command):
    (inputs / "link.npz").symlink_to(inputs / "val.npz")
    shutil.copytree(SHIPPED, inputs / "study")
    before = {p: _digest(p) for p in inputs.rglob("*") if p.is_file()}
    assert main([part.format(d=inputs) for part in command]) == 2
    err = capsys.readouterr().err
    assert "never writes over or into what it reads" in err and "This is a bug" not in err
    assert {p: _digest(p) for p in inputs.rglob("*") if p.is_file()} == before


def test_study_build_refuses_a_folder_it_did_not_make_and_another_study(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_STUDY)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("four years")
    for flag in ("--out", "--work"):
        assert main(["study", "build", str(config), flag, str(mine)]) == 2
        assert "mine: holds thesis.txt, which study build did not write" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["thesis.txt"]
    other = tmp_path / "other"
    shutil.copytree(SHIPPED, other)
    assert main(["study", "build", str(config), "--out", str(other), "--work", str(tmp_path / "w")]) == 2
    assert "replaces only an earlier build of study tiny" in capsys.readouterr().err
    assert not (tmp_path / "w").exists() and (other / "manifest.json").is_file()


def test_train_refuses_a_built_study_and_a_folder_of_other_files(tmp_path, capsys):
    study = tmp_path / "study"
    shutil.copytree(SHIPPED, study)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.md").write_text("mine")
    for out, shown in ((study, "fronts.json, manifest.json"), (tmp_path / "notes", "notes.md")):
        before = sorted(p.name for p in out.iterdir())
        assert (
            main(["train", "--stage", "backbone", "--out", str(out), "--data-option", "length=4", "--epochs", "1"]) == 2
        )
        assert f"holds {shown}" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == before


HOLD = """\
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "what": "train --stage pretrain",
                         "started": "2026-12-06 10:00:00"}).encode())
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_naming_the_first_and_a_killed_ones_lock_holds_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run / LOCK)], stdout=subprocess.PIPE, text=True)
    args = [
        "train",
        "--stage",
        "backbone",
        "--out",
        str(run),
        "--data-option",
        "length=4",
        "--data-option",
        "size=[48,64]",
        "--crop",
        "48x64",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--no-progress",
    ]
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(args) == 2
        assert f"train --stage pretrain (process {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in run.iterdir()) == [LOCK]
    finally:
        holder.kill()
        holder.wait()
    assert main(args) == 0  # killed: its lock file is left, its lock is not
    assert (run / "model.pt").is_file()


def test_folder_lock_refuses_a_second_holder_in_this_process(tmp_path):
    with folder_lock(tmp_path / "x", what="study build a.yaml"):
        with pytest.raises(OutputError, match=r"study build a.yaml \(process \d+"):
            with folder_lock(tmp_path / "x", what="study build b.yaml"):
                pass
    assert not (tmp_path / "x").exists()  # made for the block and left empty: removed


def test_the_atomic_writer_writes_through_links_and_keeps_permissions(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    old = os.umask(0o027)
    try:
        fresh = atomic_write_text(tmp_path / "fresh.json", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640  # 0666 minus the umask, as open() gives


@pytest.mark.parametrize("path", ["/dev/null", "{d}"])
def test_the_atomic_writer_refuses_special_files_and_folders(tmp_path, path):
    with pytest.raises(OutputError, match="not a file; name a file to write"):
        atomic_write_text(path.format(d=tmp_path), "x")
    assert Path("/dev/null").is_char_device()


def test_a_full_disk_is_named_and_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("kept")

    def full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="out.json: cannot write it: the disk is full"):
        with atomic_open(target, "w") as f:
            f.write("new")
    assert target.read_text() == "kept" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_own_folders_are_recognised_and_others_refused(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("mine: true\n")
    (project / "thesis.tex").write_text("\\\\section{}")
    assert main(["train", "--stage", "backbone", "--out", str(project), "--data-option", "length=4"]) == 2
    assert "holds config.yaml, thesis.tex, which train did not write" in capsys.readouterr().err
    # a registered model's name is no file: --out may be spelled the same
    from mess_core.cli import build_parser
    from mess_core.cli.args import check_outputs

    check_outputs(
        build_parser().parse_args(
            ["train", "--stage", "backbone", "--model", "mobilenetv2_fcn", "--out", "mobilenetv2_fcn"]
        )
    )


def test_a_work_folder_with_a_killed_writers_temporary_file_still_resumes(tmp_path):
    from mess_core.study.runs import holds_build_work

    work = tmp_path / "work"
    (work / "pretrain").mkdir(parents=True)
    (work / "build_times.json").write_text("{}")
    (work / ".multi_exit.pt.x1y2.tmp").write_bytes(b"cut short")
    assert holds_build_work(work)
    (work / "notes.txt").write_text("mine")
    assert not holds_build_work(work)


def test_yaml_aliases_are_walked_once(tmp_path):
    from mess_core.errors import MessError
    from mess_core.io import read_yaml

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 12)
    ]  # 10**12 leaves if expanded
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert isinstance(read_yaml(path, MessError, "missing"), dict)  # returns at once
