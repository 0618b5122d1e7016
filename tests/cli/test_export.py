"""``python -m mess_core export``: a study's instance to ONNX end to end (outputs match PyTorch), every bad input
refused with one line and exit code 2 before anything is written, and the README's "Use a chosen instance in your
code" section run as written."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from mess_core.cli import main
from mess_core.deploy.export import OnnxRunner
from mess_core.deploy.runtime import deploy
from mess_core.search.report import Row
from mess_core.study import open_study
from tests.paths import PRECOMPUTED, REPO

STUDY = PRECOMPUTED / "synthetic-mobilenetv2-fcn"
README_SECTION = "## Use a chosen instance in your code"


@pytest.fixture(scope="module")
def study():
    return open_study(STUDY)


def row_instance(study, row: Row, mode: str = "input-dependent"):
    table = study.results(mode)
    return table[[r is row for r in table["id"]]]["instance"].iloc[0]


def nothing_written(parent: Path, name: str) -> bool:
    return not (parent / name).exists() and not list(parent.glob(f".{name}.*"))


def test_a_results_row_exports_verified_files_that_match_pytorch(study, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main(["export", str(STUDY), "--row", "min_cost_1pp", "--onnx", str(out), "--images", "6"]) == 0
    printed = capsys.readouterr().out
    instance = row_instance(study, Row.MIN_COST_1PP)
    manifest = json.loads((out / "manifest.json").read_text())
    files = sorted(manifest["files"])
    assert files == sorted([f"stage_{i}.onnx" for i in range(1, 7)] + [f"head_{e.exit}.onnx" for e in instance.exits])
    assert manifest["input_size"] == [120, 160] and manifest["instance"]["exits"] == instance.to_dict()["exits"]
    for name in files:
        assert name in printed
    assert "verified with onnxruntime on the first 6 images of val" in printed and "same exit decisions" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]  # the staging folder is gone

    # the files on the study's own images: the same exit decisions and logits as the PyTorch deployed instance
    from mess_core.study.config import StudyConfig

    data = StudyConfig.from_dict(study.manifest["config"]).eval_dataset("val", (120, 160))
    x = torch.stack([data[i][0] for i in range(8)])
    net, _ = study.load_network()
    with torch.no_grad():
        want, want_taken = deploy(net, instance)(x)
    got, taken = OnnxRunner(out)(x)
    assert torch.equal(taken, want_taken)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def _run_refused(argv: list[str], capsys) -> str:
    assert main(["export", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def _instance_file(path: Path, study, row: Row = Row.MIN_COST_1PP, **changes) -> Path:
    data = {**row_instance(study, row).to_dict(), **changes}
    path.write_text(json.dumps(data))
    return path


def test_bad_inputs_are_refused_with_one_line_naming_what_to_change(study, tmp_path, capsys):
    good = _instance_file(tmp_path / "chosen.json", study)
    out = tmp_path / "onnx"
    args = ["--instance", str(good), "--onnx", str(out)]

    line = _run_refused([str(tmp_path / "no-study"), *args], capsys)
    assert "no-study: no such folder; point to a study folder" in line
    line = _run_refused([str(STUDY), "--instance", str(tmp_path / "missing.json"), "--onnx", str(out)], capsys)
    assert "missing.json: no such instance file" in line
    (tmp_path / "broken.json").write_text("{not json")
    line = _run_refused([str(STUDY), "--instance", str(tmp_path / "broken.json"), "--onnx", str(out)], capsys)
    assert "broken.json: not valid JSON" in line
    wrong = _instance_file(tmp_path / "wrong.json", study, format="something-else")
    line = _run_refused([str(STUDY), "--instance", str(wrong), "--onnx", str(out)], capsys)
    assert "wrong.json: 'format' is 'something-else', expected 'mess-instance/1'" in line
    foreign = _instance_file(tmp_path / "foreign.json", study, source={"num_classes": 11})
    line = _run_refused([str(STUDY), "--instance", str(foreign), "--onnx", str(out)], capsys)
    assert "foreign.json: does not fit study synthetic-mobilenetv2-fcn" in line and "11 classes" in line
    line = _run_refused([str(STUDY), "--row", "oracle_1pp", "--onnx", str(out)], capsys)
    assert "row oracle_1pp: a bound that knows each image's labels" in line and "choose another --row" in line
    assert nothing_written(tmp_path, "onnx")

    out.mkdir()
    (out / "old.txt").write_text("keep me")
    line = _run_refused([str(STUDY), *args], capsys)
    assert f"{out}: exists and is not empty; choose a new --onnx folder" in line
    assert [p.name for p in out.iterdir()] == ["old.txt"]

    with pytest.raises(SystemExit) as exc:  # neither --instance nor --row: argparse's usage error
        main(["export", str(STUDY), "--onnx", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "one of the arguments --instance --row is required" in capsys.readouterr().err


def test_a_head_the_study_does_not_ship_is_refused_before_loading_weights(study, tmp_path, capsys):
    packed = tmp_path / "study"
    packed.mkdir()
    for f in STUDY.iterdir():  # the study as a packed build that left a heavy head out at exit 1
        (packed / f.name).symlink_to(f)
    manifest = {**study.manifest, "unshipped_heads": {"1": ["crm50p-b1-rdi-fcn"]}}
    (packed / "manifest.json").unlink()
    (packed / "manifest.json").write_text(json.dumps(manifest))
    chosen = _instance_file(tmp_path / "chosen.json", study)
    assert row_instance(study, Row.MIN_COST_1PP).exits[0].config == "crm50p-b1-rdi-fcn"
    line = _run_refused([str(packed), "--instance", str(chosen), "--onnx", str(tmp_path / "onnx")], capsys)
    assert (
        "chosen.json: exit 1 uses head 'crm50p-b1-rdi-fcn', which study synthetic-mobilenetv2-fcn does not ship"
    ) in line
    assert "unshipped_heads" in line and "choose an instance with shipped heads" in line
    assert nothing_written(tmp_path, "onnx")


def test_an_export_that_disagrees_with_pytorch_is_not_kept(study, tmp_path, monkeypatch, capsys):
    from mess_core.cli import export as command

    def fake_export(net, instance, out_dir, *, input_size):
        out_dir.mkdir()
        (out_dir / "stage_1.onnx").write_bytes(b"...")
        return out_dir

    monkeypatch.setattr(command, "export_onnx", fake_export)
    monkeypatch.setattr(command, "OnnxRunner", lambda directory: None)
    monkeypatch.setattr(
        command, "verify_export", lambda *a: (["exit 1: ONNX and PyTorch differ by up to 3.00e-01"], [])
    )
    assert main(["export", str(STUDY), "--row", "backbone", "--onnx", str(tmp_path / "onnx")]) == 1
    printed = capsys.readouterr().out
    assert "problem: exit 1: ONNX and PyTorch differ" in printed and "nothing written to" in printed
    assert nothing_written(tmp_path, "onnx")


def _readme_blocks() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text()
    start = text.index(README_SECTION)
    end = text.find("\n## ", start + len(README_SECTION))
    section = text[start : end if end != -1 else None]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def test_the_readme_section_runs_as_written(study, tmp_path, monkeypatch, capsys):
    blocks = _readme_blocks()
    assert [lang for lang, _ in blocks] == ["python", "bash", "python"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "precomputed").mkdir()
    (tmp_path / "precomputed" / STUDY.name).symlink_to(STUDY)
    _instance_file(tmp_path / "chosen.json", study)  # what the app's Pareto page would download

    scope: dict = {}
    exec(compile(blocks[0][1], "README.md (deploy)", "exec"), scope)
    assert tuple(scope["logits"].shape) == (4, 7, 120, 160) and scope["exit_taken"].tolist() == json.loads(
        capsys.readouterr().out.strip().splitlines()[-1]
    )

    command = shlex.split(blocks[1][1].strip())
    assert command[:3] == [".venv/bin/python", "-m", "mess_core"]
    assert main(command[3:]) == 0
    assert "verified with onnxruntime" in capsys.readouterr().out

    exec(compile(blocks[2][1], "README.md (onnx)", "exec"), scope)
    assert torch.equal(scope["exit_taken"], scope["model"](scope["x"])[1])
    with torch.no_grad():
        torch.testing.assert_close(scope["logits"], scope["model"](scope["x"])[0], atol=1e-4, rtol=1e-4)
    shutil.rmtree(tmp_path / "chosen_onnx")
