"""Bring your own model: a model nobody registered, named by file or by import path, with the user's own weights,
from one YAML file through the study build to the app and an ONNX export run by onnxruntime; and every bad model
name, import, callable, weights file or key mismatch refused with a message naming it."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from mess_core.cli import main
from mess_core.deploy import artifacts
from mess_core.deploy.export import OnnxRunner, export_onnx
from mess_core.deploy.runtime import deploy
from mess_core.models import ModelSource, ModelSourceError, convert_options, load_user_weights
from mess_core.models.trust import KEY_ENV, UntrustedCodeError
from mess_core.study import StudyConfig, StudyError, build, open_study
from mess_core.study.report import markdown_report
from mess_core.train import TrainConfig
from tests.apptest import PAGES, goto, metrics, problems, start
from tests.paths import TESTS
from tests.user_models import EncoderUNet, TinyUNet

HERE = TESTS  # the test models live beside the shared test helpers
CLASSES = 7  # the synthetic dataset's
SIZE = (48, 64)

# the tiny study's settings (tests/conftest.py), without the training table
STUDY = """\
name: {name}
model: {model}
weights: {weights}
convert: {convert}
data_options: {{size: [48, 64], length: 10}}
crop: [48, 64]
num_exits: 3
exit_space: crm25p-b0-fcn,nocrm-b0-fcn
batch_size: 5
stages:
  pretrain: {pretrain}
  exits: {{epochs: 1}}
latency: false
bench_images: 2
bench_batches: [1]
bench_repeats: 1
"""


def _save_weights(model: torch.nn.Module, path: Path, wrap: str | None = "state_dict") -> Path:
    """The user's "trained" weights: random, saved as a checkpoint holding the state dict under ``wrap``."""
    state = model.state_dict()
    torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    return path


@pytest.fixture(scope="module")
def user_studies(tmp_path_factory):
    """Two studies of unregistered models with the user's weights: a model file beside the YAML (relative path,
    stage 1 on) and an import path (stage 1 switched off). Returns {name: (study folder, weights, log)}."""
    root = tmp_path_factory.mktemp("byom")
    (root / "nets").mkdir()
    shutil.copyfile(HERE / "user_models.py", root / "nets" / "my_net.py")
    torch.manual_seed(1)
    built = {}
    for name, model, net, convert, pretrain in [
        ("byo-file", "nets/my_net.py:TinyUNet", TinyUNet(CLASSES), "{cost: flops}", "{epochs: 1}"),
        ("byo-import", "tests.user_models:EncoderUNet", EncoderUNet(CLASSES), "{backbone: encoder}", "false"),
    ]:
        weights = _save_weights(net, root / f"{name}.pt", wrap="state_dict" if name == "byo-file" else None)
        config = root / f"{name}.yaml"
        config.write_text(
            STUDY.format(name=name, model=model, weights=weights.name, convert=convert, pretrain=pretrain)
        )
        lines: list[str] = []
        out = build(config, work=root / "work" / name, out=root / "precomputed" / name, log=lines.append)
        built[name] = (out, weights, lines)
    # the model file is gone from where the YAML named it: the study reopens from the copy it ships
    (root / "nets" / "my_net.py").unlink()
    return built


def test_a_study_of_a_model_file_ships_the_file_and_reopens_without_it(user_studies):
    out, weights, lines = user_studies["byo-file"]
    assert any("backbone: not trained on its own (your weights" in line for line in lines)
    study = open_study(out)
    assert study.manifest["model_source"]["kind"] == "file"
    assert study.manifest["model_source"]["target"] == "my_net.py" and (out / "my_net.py").is_file()
    assert study.manifest["convert"] == {"cost": "flops"}
    assert not study.verify()
    net, meta = study.load_network()
    assert meta["model"] == "my_net.py:TinyUNet" and meta["weights"] == str(weights)
    assert net.num_exits == 3 and study.user_model["weights"] == weights.name


def test_a_study_of_an_import_path_without_stage_1_reports_the_users_model_as_given(user_studies):
    out, weights, lines = user_studies["byo-import"]
    assert any("pretrain: switched off" in line for line in lines)
    study = open_study(out)
    assert study.manifest["model_source"] == {"kind": "import", "target": "tests.user_models", "attr": "EncoderUNet"}
    net, meta = study.load_network()
    assert meta["convert"] == {"backbone": "encoder"}
    assert all(e.module.startswith("encoder") for e in net.exits[:-1])
    # no stage touched the backbone: its final exit is the user's model as given (float16-shipped weights)
    given = load_user_weights(weights, EncoderUNet(CLASSES)).eval()
    x = torch.rand(2, 3, *SIZE)
    with torch.no_grad():
        assert torch.allclose(net(x)[-1], given(x), atol=0.05)
    final = study.cache.head_miou()[study.cache.final_head]
    assert study.user_model["miou"] == pytest.approx(final, abs=0.02)
    assert "Your model as given (tests.user_models:EncoderUNet, weights byo-import.pt): mIoU" in markdown_report(study)


@pytest.mark.parametrize("name", ["byo-file", "byo-import"])
def test_the_app_opens_a_study_of_an_unregistered_model_on_every_page(user_studies, monkeypatch, name):
    out, _, _ = user_studies[name]
    app = start(monkeypatch, out.parent, name)
    for page in PAGES:
        goto(app, page)
        assert not problems(app), page


@pytest.mark.parametrize("name", ["byo-file", "byo-import"])
def test_a_chosen_instance_exports_to_onnx_and_runs_like_the_network(user_studies, tmp_path, name):
    out, _, _ = user_studies[name]
    study = open_study(out)
    net, _ = study.load_network()
    table = study.results("input-dependent")
    instance = next(i for i in table["instance"] if i is not None and i.exits)
    runner = OnnxRunner(export_onnx(net, instance, tmp_path / "onnx", input_size=SIZE))
    x = torch.rand(3, 3, *SIZE)
    with torch.no_grad():
        want, want_taken = deploy(net, instance)(x)
    got, taken = runner(x)
    assert torch.equal(taken, want_taken)
    assert torch.allclose(got, want, atol=1e-3)


# ------------------------------------------------------------------------------------------- naming a model
def test_the_three_ways_to_name_a_model_build_the_same_kind_of_network():
    for text in ["resnet18_fcn", "tests.user_models:TinyUNet", "tests/user_models.py:tiny_unet"]:
        source = ModelSource.parse(text)
        model = source.build(5)
        assert isinstance(model, torch.nn.Module)
        assert ModelSource.from_dict(source.to_dict()) == source
        assert ModelSource.parse(source.spec) == source
    assert ModelSource.parse("user_models.py:TinyUNet", base=HERE).target == str(HERE / "user_models.py")


@pytest.mark.parametrize(
    "text, message",
    [
        ("resnet19_fcn", "model 'resnet19_fcn' is not registered (registered: "),
        ("tests/no_such_file.py:Net", "no_such_file.py: no such model file (model '"),
        (
            "no_such_package.models:Net",
            "cannot import module 'no_such_package.models' (No module named "
            "'no_such_package'); it needs module 'no_such_package', which is not installed",
        ),
        ("tests.user_models:Missing", "module 'tests.user_models' has no 'Missing' (it defines "),
        ("tests/user_models.py:Missing", "user_models.py has no 'Missing'"),
        ("tests.user_models:not_a_module", "not_a_module() returned a str, not an nn.Module"),
        ("tests.user_models:conv_block", "calling conv_block() failed (TypeError"),
        ("tests.user_models:1net", "'1net' after the ':' is not a Python name"),
    ],
)
def test_every_bad_model_name_gets_a_message_naming_it(text, message):
    with pytest.raises(ModelSourceError, match=None) as info:
        ModelSource.parse(text).build(3)
    assert message in str(info.value)


def test_a_model_file_that_imports_a_missing_package_names_the_package(tmp_path):
    path = tmp_path / "net.py"
    path.write_text("import no_such_dependency_xyz\n")
    with pytest.raises(ModelSourceError, match=r"net.py: importing it failed .*install 'no_such_dependency_xyz'"):
        ModelSource.parse(f"{path}:Net").build(3)


def test_a_changed_model_file_is_refused_against_its_recorded_hash(tmp_path):
    path = tmp_path / "net.py"
    shutil.copyfile(HERE / "user_models.py", path)
    recorded = ModelSource.parse(f"{path}:TinyUNet").recorded()
    path.write_text(path.read_text() + "\n# changed\n")
    with pytest.raises(ModelSourceError, match="differs from the model file this network was trained with"):
        recorded.build(3)


def test_bad_convert_options_are_named():
    with pytest.raises(ModelSourceError, match=r"convert: unknown option\(s\) num_exits.*beside model:"):
        convert_options({"num_exits": 3})
    with pytest.raises(ModelSourceError, match="convert.cost: expected flops or latency, not 'time'"):
        convert_options({"cost": "time"})
    with pytest.raises(ModelSourceError, match="convert.leaf_modules: expected a list of submodule names"):
        convert_options({"leaf_modules": [1]})


def test_train_config_refuses_an_unregistered_name_before_training(tmp_path):
    with pytest.raises(ModelSourceError, match="model 'my_net' is not registered"):
        TrainConfig(stage="backbone", out=str(tmp_path), model="my_net")


# ------------------------------------------------------------------------------------------- the user's weights
@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "model_state_dict"])
def test_weights_load_from_a_state_dict_or_a_checkpoint_holding_one(tmp_path, wrap):
    given = TinyUNet(4)
    path = _save_weights(given, tmp_path / "w.pt", wrap)
    model = load_user_weights(path, TinyUNet(4))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), given.state_dict().values()))


def test_weights_saved_from_a_ddp_wrapper_load(tmp_path):
    given = TinyUNet(4)
    torch.save({f"module.{k}": v for k, v in given.state_dict().items()}, tmp_path / "ddp.pt")
    load_user_weights(tmp_path / "ddp.pt", TinyUNet(4))


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(ModelSourceError, match=r"nowhere.pt: no such weights file"):
        load_user_weights(tmp_path / "nowhere.pt", TinyUNet(4))


def test_weights_of_another_model_are_refused_with_the_keys_that_do_not_fit(tmp_path):
    path = _save_weights(EncoderUNet(4), tmp_path / "other.pt")
    with pytest.raises(ModelSourceError) as info:
        load_user_weights(path, TinyUNet(4))
    message = str(info.value)
    assert "other.pt: its weights do not fit the TinyUNet built here" in message
    assert "missing: enc1.0.weight" in message and "unexpected: encoder.stages.0.0.weight" in message


def test_weights_for_another_number_of_classes_name_the_shape_mismatch(tmp_path):
    path = _save_weights(TinyUNet(4), tmp_path / "four.pt")
    with pytest.raises(
        ModelSourceError,
        match=r"shape mismatch \(file vs model\): classifier.weight \(4, 8, 1, 1\) "
        r"vs \(7, 8, 1, 1\)",
    ):
        load_user_weights(path, TinyUNet(7))


def test_a_file_holding_no_state_dict_or_pickled_objects_is_refused(tmp_path):
    torch.save({"epoch": 3, "note": "nothing"}, tmp_path / "meta.pt")
    with pytest.raises(ModelSourceError, match="holds neither a state dict nor one under state_dict"):
        load_user_weights(tmp_path / "meta.pt", TinyUNet(4))
    torch.save(TinyUNet(4), tmp_path / "pickled.pt")
    with pytest.raises(ModelSourceError, match="pickled.pt: not a readable weights-only torch file"):
        load_user_weights(tmp_path / "pickled.pt", TinyUNet(4))


# ------------------------------------------------------------------------------------------- study configs
def _yaml(tmp_path, **fields):
    text = "name: s\n" + "".join(f"{k}: {v}\n" for k, v in fields.items())
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_a_study_reads_model_files_and_weights_relative_to_its_yaml(tmp_path):
    shutil.copyfile(HERE / "user_models.py", tmp_path / "net.py")
    _save_weights(TinyUNet(7), tmp_path / "w.pt")
    cfg = StudyConfig.from_yaml(_yaml(tmp_path, model="net.py:TinyUNet", weights="w.pt"))
    assert cfg.model == f"{tmp_path / 'net.py'}:TinyUNet" and cfg.weights == str(tmp_path / "w.pt")
    assert not cfg.trains_backbone and cfg.pretrain


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"model": "gone.py:Net"}, "s.yaml: model: .*gone.py: no such model file"),
        ({"model": "tests.user_models:Nope"}, "s.yaml: model: .*has no 'Nope'"),
        ({"weights": "gone.pt"}, r"s.yaml: weights: .*gone.pt: no such file \(a relative path is read from the YAML"),
        ({"convert": "{cost: time}"}, "s.yaml: convert.cost: expected flops or latency"),
        ({"weights": "w.pt", "pretrain_from": "scratch"}, "weights and pretrain_from: scratch contradict"),
        (
            {"stages": "{pretrain: false}", "variants": "{a: {exit_loss: ce}}"},
            "variants a start from stage 1 .*stages.pretrain: false switches off",
        ),
    ],
)
def test_bad_model_weights_and_stage_settings_in_a_study_are_refused_before_training(tmp_path, fields, message):
    _save_weights(TinyUNet(7), tmp_path / "w.pt")
    with pytest.raises(StudyError, match=message):
        StudyConfig.from_yaml(_yaml(tmp_path, **fields))


def test_a_shipped_model_file_that_changed_is_refused_on_open(user_studies, tmp_path):
    out, _, _ = user_studies["byo-file"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "my_net.py").write_text((copy / "my_net.py").read_text() + "\n# edited\n")
    with pytest.raises(StudyError, match="my_net.py: differs from the model file this network was trained with"):
        open_study(copy).load_network()


def test_a_multi_exit_file_whose_model_file_is_gone_names_it(user_studies):
    out, _, _ = user_studies["byo-file"]
    with pytest.raises(
        ModelSourceError,
        match=r"multi_exit.pt: cannot rebuild the model .*my_net.py: no such model "
        "file",
    ):
        artifacts.load_multi_exit(out.parent.parent / "work" / "byo-file" / "multi_exit.pt")


def test_train_and_profile_take_a_model_file_and_weights(tmp_path, capsys):
    weights = _save_weights(TinyUNet(7), tmp_path / "w.pt")
    assert (
        main(
            [
                "profile",
                "--model",
                "tests/user_models.py:TinyUNet",
                "--size",
                "48",
                "64",
                "--exits",
                "3",
                "--num-classes",
                "7",
            ]
        )
        == 0
    )
    assert "TinyUNet" in capsys.readouterr().out
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--stage",
                "pretrain",
                "--out",
                str(out),
                "--model",
                "tests.user_models:TinyUNet",
                "--weights",
                str(weights),
                "--data-option",
                "length=4",
                "--data-option",
                "size=[48,64]",
                "--crop",
                "48x64",
                "--exits",
                "3",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--workers",
                "0",
                "--no-progress",
                "--cost",
                "flops",
            ]
        )
        == 0
    )
    _, meta = artifacts.load_model(out / "model.pt")
    assert meta["model_source"] == {"kind": "import", "target": "tests.user_models", "attr": "TinyUNet"}
    assert meta["weights"] == str(weights) and meta["convert"] == {"cost": "flops"}
    assert (
        main(
            [
                "train",
                "--stage",
                "backbone",
                "--out",
                str(tmp_path / "bad"),
                "--model",
                "tests.user_models:Nope",
                "--data-option",
                "length=4",
            ]
        )
        == 2
    )
    assert "has no 'Nope'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- trust
def _elsewhere(monkeypatch, tmp_path):
    """Open studies as another machine would: with a signing key of its own."""
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "other-machine.key"))


@pytest.mark.parametrize("name", ["byo-file", "byo-import"])
def test_a_study_built_here_runs_its_model_code_unasked_and_one_from_elsewhere_only_with_consent(
    user_studies, monkeypatch, tmp_path, name
):
    out, _, _ = user_studies[name]
    assert open_study(out).untrusted_code() is None
    open_study(out).load_network()
    _elsewhere(monkeypatch, tmp_path)
    study = open_study(out)  # its stored figures need no code
    assert study.results("input-dependent") is not None and not study.verify()
    code = study.untrusted_code()
    assert code is not None and ("my_net.py" in code if name == "byo-file" else "tests.user_models" in code)
    with pytest.raises(
        UntrustedCodeError,
        match=r"manifest.json: model_source: building this model runs .*not "
        r"recorded on this machine.*--trust-model-code",
    ):
        study.load_network()
    net, _ = study.load_network(consent=True)
    assert net.num_exits == 3


def test_the_cli_asks_for_consent_before_running_a_studys_code_from_elsewhere(
    user_studies, monkeypatch, tmp_path, capsys
):
    out, _, _ = user_studies["byo-import"]
    _elsewhere(monkeypatch, tmp_path)
    command = ["study", "evaluate", str(out), "--split", "val", "--limit", "2"]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert "EncoderUNet" in err and "--trust-model-code" in err and "This is a bug" not in err
    assert main(command + ["--trust-model-code"]) == 0
    assert "promises held" in capsys.readouterr().out


def test_weights_from_elsewhere_whose_record_runs_code_need_consent(user_studies, monkeypatch, tmp_path, capsys):
    weights = user_studies["byo-import"][0].parent.parent / "work" / "byo-import" / "multi_exit.pt"
    artifacts.load_multi_exit(weights)  # trained here
    _elsewhere(monkeypatch, tmp_path)
    with pytest.raises(
        UntrustedCodeError,
        match=r"multi_exit.pt: model_source: building this model runs 'EncoderUNet' "
        r"from the module 'tests.user_models'",
    ):
        artifacts.load_multi_exit(weights)
    cache = tmp_path / "c.npz"
    command = [
        "cache",
        "--multi-exit",
        str(weights),
        "--data",
        "synthetic",
        "--data-option",
        "length=2",
        "--data-option",
        "size=[48,64]",
        "--out",
        str(cache),
    ]
    assert main(command) == 2 and "--trust-model-code" in capsys.readouterr().err and not cache.exists()
    assert main(command + ["--trust-model-code"]) == 0 and cache.is_file()


def _naming(user_studies, tmp_path, record):
    """A copy of the model-file study whose manifest names ``record`` as its model source."""
    copy = tmp_path / "copy"
    shutil.copytree(user_studies["byo-file"][0], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model_source"] = record
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize(
    "record, message",
    [
        (
            {"kind": "file", "target": "/tmp/x.py", "attr": "Net", "sha256": "0" * 64},
            "is not a .py file inside the study",
        ),
        (
            {"kind": "file", "target": "../../x.py", "attr": "Net", "sha256": "0" * 64},
            "is not a .py file inside the study",
        ),
        ({"kind": "file", "target": "my_net.py", "attr": "TinyUNet"}, "has no SHA-256 recorded"),
        ({"kind": "import", "target": "os", "attr": "abort"}, "part of Python's standard library"),
        ({"kind": "import", "target": "builtins", "attr": "exec"}, "part of Python's standard library"),
        ({"kind": "import", "target": "mess_core.cli", "attr": "main"}, "of this program"),
        ({"kind": "shell", "target": "rm -rf /"}, "not a model source record"),
    ],
)
def test_a_study_naming_code_a_study_may_not_name_is_refused_by_every_reader(
    user_studies, tmp_path, capsys, record, message
):
    copy = _naming(user_studies, tmp_path, record)
    with pytest.raises(StudyError, match=f"manifest.json: model_source: .*{re.escape(message)}"):
        open_study(copy)
    for command in (
        ["study", "check", str(copy)],
        ["export", str(copy), "--row", "min_cost_1pp", "--onnx", str(tmp_path / "onnx")],
    ):
        assert main(command) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize(
    "record, message",
    [
        ({"kind": "import", "target": "no_such_package_here", "attr": "Net"}, "is not installed here"),
        ({"kind": "registry", "target": "no_such_model"}, "is not registered"),
    ],
)
def test_a_study_whose_model_this_machine_cannot_build_opens_for_its_figures_only(
    user_studies, tmp_path, capsys, record, message
):
    copy = _naming(user_studies, tmp_path, record)
    study = open_study(copy)
    assert study.results("input-dependent") is not None
    with pytest.raises(UntrustedCodeError, match=f"manifest.json: model_source: .*{message}"):
        study.load_network(consent=True)
    assert (
        main(["export", str(copy), "--row", "min_cost_1pp", "--onnx", str(tmp_path / "onnx"), "--trust-model-code"])
        == 2
    )
    assert message in capsys.readouterr().err and not (tmp_path / "onnx").exists()


def test_study_check_reports_files_the_manifest_does_not_list(user_studies, tmp_path, capsys):
    out, _, _ = user_studies["byo-file"]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "checkpoint.pt").write_bytes(b"written into the study by a later command")
    assert main(["study", "check", str(copy)]) == 1
    assert "checkpoint.pt: not listed in the manifest" in capsys.readouterr().out


def test_the_app_asks_before_running_model_code_from_elsewhere(user_studies, monkeypatch, tmp_path):
    out, _, _ = user_studies["byo-file"]
    _elsewhere(monkeypatch, tmp_path)
    app = start(monkeypatch, out.parent, "byo-file")
    for page in ("study", "pareto"):  # the stored figures need no code
        goto(app, page)
        assert not problems(app), page
    goto(app, "explorer")
    warning = " ".join(w.value for w in app.warning)
    assert "my_net.py" in warning and "not recorded on this machine" in warning
    assert "leaves at" not in metrics(app)  # nothing ran the network
    app.button(key="consent_explorer").click().run()
    assert not problems(app) and not app.warning
    assert {"leaves at", "measured, early exit"} <= set(metrics(app))


# ------------------------------------------------------------------------------------------- misbehaving model code


@pytest.mark.parametrize(
    "name, message",
    [
        ("Half", "the model's logits are (24, 32) pixels for a (48, 64) input"),
        ("Pair", "the model returns a tuple, not per-pixel logits"),
        ("ThreeClasses", "the model predicts 3 classes but"),
        ("ExitsInForward", "ended the program with sys.exit(3)"),
        ("ExitsInInit", "it called sys.exit(0) or exit(); a model must not end the program"),
        ("InterruptsInInit", "KeyboardInterrupt: interrupted, or the model raised it"),
    ],
)
@pytest.mark.parametrize("stage", ["profile", "backbone"])  # profile converts as the later stages do
def test_model_code_that_misbehaves_gets_the_same_clear_message_at_every_entry_point(
    tmp_path, capsys, name, message, stage
):
    shutil.copyfile(HERE / "bad_models.py", tmp_path / "bad.py")
    model = f"{tmp_path / 'bad.py'}:{name}"
    out = tmp_path / "run"
    if stage == "profile":
        command = ["profile", "--model", model, "--size", "48", "64", "--exits", "2", "--num-classes", "7"]
    else:
        command = [
            "train",
            "--stage",
            stage,
            "--model",
            model,
            "--out",
            str(out),
            "--data-option",
            "length=4",
            "--data-option",
            "size=[48,64]",
            "--crop",
            "48x64",
            "--exits",
            "2",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--no-progress",
        ]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert message in err and "This is a bug" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # nothing written


def test_a_model_far_too_slow_at_the_size_is_named_by_the_time_limit(tmp_path, monkeypatch, capsys):
    shutil.copyfile(HERE / "bad_models.py", tmp_path / "slow.py")
    monkeypatch.setenv("MESS_TIME_LIMIT", "0.5")
    assert main(["profile", "--model", f"{tmp_path / 'slow.py'}:Slow", "--size", "48", "64", "--exits", "2"]) == 2
    err = capsys.readouterr().err
    assert "tracing Slow on an example input (1, 3, 48, 64) took more than 0.5 s" in err and "MESS_TIME_LIMIT" in err
