import json

from mess_core.cli import main


def test_profile_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert main(["profile", "--model", "resnet18_fcn", "--size", "64", "80", "--exits", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model resnet18_fcn  input 64x80" in printed and "GMACs" in printed
    report = json.loads(out.read_text())
    exits = report["exits"]
    assert [e["index"] for e in exits] == [1, 2, 3]
    assert [e["cost_fraction"] for e in exits] == sorted(e["cost_fraction"] for e in exits)
    for e in exits:
        assert e["node"] in printed and f"{e['gflops']:.3f}" in printed
    assert report["profile"]["total_gflops"] > exits[-1]["gflops"]
    assert len(report["profile"]["nodes"]) > 50
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_profile_with_heads_lists_the_default_space(capsys):
    assert main(["profile", "--model", "resnet18_fcn", "--size", "64", "64", "--exits", "3", "--heads"]) == 0
    printed = capsys.readouterr().out
    assert "crm25p-b2-rdi-deeplab" in printed and "exit 2" in printed


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["profile", "--model", "resnet1000", "--size", "64", "64"]) == 2
    err = capsys.readouterr().err
    assert "model 'resnet1000' is not registered (registered: mobilenetv2_fcn" in err
    assert "'package.module:callable' or 'path/to/file.py:callable'" in err


def test_too_many_exits_is_reported_not_raised(capsys):
    assert main(["profile", "--model", "resnet18_fcn", "--size", "64", "64", "--exits", "30"]) == 2
    assert "valid cut points" in capsys.readouterr().err


def test_check_data_lists_every_unusable_file(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "dataset.yaml").write_text("classes: [road, car]\nignore_index: 255\n")
    for stem, label in (("good", 1), ("bad_label", 7)):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / f"{stem}.png")
        Image.fromarray(np.full((8, 8), label, np.uint8)).save(tmp_path / "masks" / f"{stem}.png")
    assert main(["check-data", "--data", "folder", "--data-root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "bad_label.png" in out and "7 (64 px)" in out and "good.png" not in out.split("problem")[-1]
    assert "checked 2 samples: 1 problem(s)" in out


def test_check_data_passes_a_clean_synthetic_split(capsys):
    assert main(["check-data", "--data", "synthetic", "--split", "val", "--limit", "8"]) == 0
    assert "checked 8 samples: 0 problem(s)" in capsys.readouterr().out


def test_train_without_a_stage_or_with_a_wrong_resume_is_refused(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "x")]) == 2
    assert "--stage is required" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "x")]) == 2
    assert "config.yaml: missing" in capsys.readouterr().err
