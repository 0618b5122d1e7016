"""ONNX export (dynamo exporter) and the onnxruntime runner: same outputs within 1e-4, identical exit decisions."""

from __future__ import annotations

import json

import pytest
import torch

from mess_core.deploy.export import ExportError, OnnxRunner, export_onnx
from mess_core.deploy.runtime import deploy
from mess_core.evaluate.instance import Instance, KeptExit
from tests.engine.deploy.test_runtime import CONFIGS, SIZE, build, images, instance_with_a_mix
from tests.user_models import ShapeCarrier


@pytest.fixture(scope="module")
def net():
    return build()


def test_input_dependent_export_runs_in_onnxruntime_with_the_same_decisions(net, tmp_path):
    x = images()
    instance = instance_with_a_mix(net, x, [(1, CONFIGS[0]), (2, CONFIGS[1])])
    out = export_onnx(net, instance, tmp_path / "onnx", input_size=SIZE)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["head_1.onnx", "head_2.onnx", "stage_1.onnx", "stage_2.onnx", "stage_3.onnx"]
    runner = OnnxRunner(out)
    with torch.no_grad():
        want, want_taken = deploy(net, instance)(x)
    got, taken = runner(x)
    assert set(taken.tolist()) == {1, 2, 3}
    assert torch.equal(taken, want_taken)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # any batch size: one image at a time gives the same
    for i in (0, len(x) - 1):
        one, t = runner(x[i : i + 1])
        assert int(t) == int(taken[i])
        torch.testing.assert_close(one[0], got[i], atol=1e-4, rtol=1e-4)


def test_anytime_and_budgeted_exports_match_pytorch(net, tmp_path):
    x = images(3)
    anytime = Instance("anytime", (KeptExit(2, CONFIGS[0]),))
    runner = OnnxRunner(export_onnx(net, anytime, tmp_path / "anytime", input_size=SIZE))
    with torch.no_grad():
        want = deploy(net, anytime)(x)
    got = list(runner.stream(x))
    assert [e for e, _ in got] == [2, 3]
    for (_, g), w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)

    budgeted = Instance("budgeted", (KeptExit(1, CONFIGS[1]),))
    out = export_onnx(net, budgeted, tmp_path / "budgeted", input_size=SIZE)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    with torch.no_grad():
        torch.testing.assert_close(OnnxRunner(out)(x), deploy(net, budgeted)(x), atol=1e-4, rtol=1e-4)


def test_a_damaged_or_mismatched_export_is_refused(net, tmp_path):
    out = export_onnx(net, Instance("budgeted"), tmp_path / "backbone", input_size=SIZE)
    runner = OnnxRunner(out)
    with pytest.raises(ExportError, match=r"exported for inputs \(B, 3, 32, 48\).*input_size=\(64, 64\)"):
        runner(torch.randn(1, 3, 64, 64))
    with open(out / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="model.onnx: its SHA-256 differs"):
        OnnxRunner(out)
    with pytest.raises(ExportError, match="no manifest"):
        OnnxRunner(tmp_path)


def test_a_graph_that_carries_the_batch_size_exports_only_as_one_file(tmp_path):
    net = build(ShapeCarrier)
    instance = Instance.input_dependent([KeptExit(1, CONFIGS[0], th_img=0.5)])
    with pytest.raises(ExportError, match="stage 1 hands on a shape holding the batch size"):
        export_onnx(net, instance, tmp_path / "stages", input_size=SIZE)
    assert not (tmp_path / "stages").exists() and not list(tmp_path.iterdir())  # nothing half-written is left
    budgeted = Instance("budgeted", (KeptExit(1, CONFIGS[0]),))
    x = images(2)
    with torch.no_grad():
        want = deploy(net, budgeted)(x)
    got = OnnxRunner(export_onnx(net, budgeted, tmp_path / "one", input_size=SIZE))(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
