"""Conversion defects found on models nobody here wrote: training-mode code, late shape reads,
multi-branch exits, latency placement, traced sizes, exit names."""

from __future__ import annotations

import pytest
import torch

import mess_core
from mess_core import ConversionError, TraceFailure
from mess_core.conversion.cuts import find_cut_points
from mess_core.conversion.tracing import trace
from tests.user_models import (
    FunctionalActivations,
    IndexAssign,
    LateShapeRead,
    ListOutput,
    PadCrop,
    ReturnAux,
    RootDropout,
    SkipSliceInplace,
    TracedSizes,
    TrainingDependent,
    TwoBranch,
)


def test_training_mode_code_trains_like_the_original():
    model = TrainingDependent()
    example = torch.randn(2, 3, 32, 32)
    traced = trace(model, example)
    assert set(traced.training_leaves) == {"backbone.1", "backbone.2", "backbone.3", "backbone.4"}
    net = mess_core.convert(model, example, num_exits=3)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    net.train()
    torch.manual_seed(1)
    ref = model(x)
    torch.manual_seed(1)
    ours = net.walk_to(x).logits
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)
    torch.manual_seed(2)
    assert not torch.allclose(model(x), ref, atol=1e-3)  # dropout and drop-path are active
    model.eval()
    net.eval()
    with torch.no_grad():
        assert torch.allclose(net(x)[-1], model(x), atol=1e-5, rtol=0)


def test_training_mode_code_in_the_models_own_forward_is_refused_by_name():
    with pytest.raises(TraceFailure) as info:
        mess_core.convert(RootDropout(), torch.randn(1, 3, 32, 32), num_exits=2)
    message = str(info.value)
    assert "RootDropout.forward itself behaves differently in training mode" in message
    assert "user_models.py" in message and "F.dropout(self.backbone(x), 0.2, training=self.training)" in message
    assert "submodule" in message


def test_constructors_with_traced_sizes_name_the_cause_and_every_module():
    with pytest.raises(TraceFailure) as info:
        mess_core.convert(TracedSizes(), torch.randn(1, 3, 32, 32), num_exits=2)
    message = str(info.value)
    assert "in 2 places" in message
    assert "'backbone.1' (_ZerosBias)" in message and "'backbone.3' (_OnesBias)" in message
    assert "torch.zeros(n, c, h, w)" in message and "torch.ones(x.shape[0], 1, 1, 1)" in message
    assert "tensor constructor" in message and "x.new_zeros(" in message
    assert "leaf_modules=['backbone.1', 'backbone.3']" in message
    assert "control flow on tensor values" not in message
    net = mess_core.convert(
        TracedSizes().eval(), torch.randn(1, 3, 32, 32), num_exits=2, leaf_modules=["backbone.1", "backbone.3"]
    )
    assert net.num_exits == 2


def test_a_late_read_of_the_input_shape_hands_on_the_shape_not_the_image():
    model = LateShapeRead().eval()
    example = torch.randn(2, 3, 32, 48)
    net = mess_core.convert(model, example, num_exits=4).eval()
    for point in net.exits:
        tensors = [net.value_info[n].shape for n in point.live if net.value_info[n].kind == "tensor"]
        assert tuple(example.shape) not in tensors and len(tensors) == 1
        assert any(net.value_info[n].kind == "meta" for n in point.live)  # the (H, W) the last layer needs
    x = torch.randn(3, 3, 64, 40)
    with torch.no_grad():
        for step in net.walk(x):
            if not step.final:
                assert not any(torch.is_tensor(v) and v.shape == x.shape for v in step.live)
        assert torch.allclose(net(x)[-1], model(x), atol=1e-5, rtol=0)


def test_every_exit_and_cut_point_names_where_it_sits():
    model = FunctionalActivations().eval()
    example = torch.randn(1, 3, 32, 32)
    cuts = find_cut_points(trace(model, example))
    assert cuts and all(c.module for c in cuts)
    assert {"relu", "relu_1"} <= {c.module for c in cuts}  # node names where no module computes the value
    net = mess_core.convert(model, example, num_exits=3)
    assert all(e.module for e in net.exits)
    assert net.exits[-1].module == "relu_1"


def test_exits_of_a_multi_branch_backbone_can_read_the_highest_resolution_branch():
    model = TwoBranch().eval()
    example = torch.randn(1, 3, 32, 32)
    latest = mess_core.convert(model, example, num_exits=4)
    best = mess_core.convert(model, example, num_exits=4, exit_feature="highest-resolution")
    assert [e.node for e in best.exits] == [e.node for e in latest.exits]  # same cuts, other feature maps
    assert any(e.stride > 1 for e in latest.exits)  # the default reads the coarse branch when it was computed last
    for point in best.exits:
        maps = [best.value_info[n].shape for n in point.live if best.value_info[n].is_feature_map]
        top = max(maps, key=lambda s: (s[2] * s[3], s[1]))
        assert point.stride == 1 and point.feature_shape == top[1:]
    x = torch.randn(2, 3, 40, 24)
    with torch.no_grad():
        features, final = best.forward_features(x)
        assert all(f.shape[-2:] == x.shape[-2:] for f in features)
        assert torch.allclose(final, model(x), atol=1e-5, rtol=0)
    with pytest.raises(ConversionError, match="exit_feature"):
        mess_core.convert(model, example, exit_feature="biggest")


def test_exits_never_split_a_convolution_from_its_norm_or_activation():
    model = LateShapeRead().eval()  # a backbone of conv-BN-ReLU Sequentials: cuts exist after conv and after BN
    example = torch.randn(1, 3, 64, 64)
    cuts = find_cut_points(trace(model, example), region="backbone")
    inside = [c.module for c in cuts if c.in_chain]
    assert inside == [f"backbone.{i}.{j}" for i in range(4) for j in (0, 1)]  # conv|BN and BN|ReLU of every block
    for cost in ("flops", "latency"):
        net = mess_core.convert(model, example, num_exits=5, cost=cost)
        assert [e.module for e in net.exits] == ["backbone.0", "backbone.1", "backbone.2", "backbone.3"]
    net = mess_core.convert(FunctionalActivations().eval(), torch.randn(1, 3, 32, 32), num_exits=3)
    assert [e.module for e in net.exits] == ["relu", "relu_1"]  # not conv2|relu_1, two exits at the same cost


# ------------------------------------------------------------------ arguments, shared memory, crops and assignments
def test_a_forward_with_a_defaulted_argument_converts_and_runs_with_its_default():
    model = ReturnAux().eval()
    net = mess_core.convert(model, torch.randn(1, 3, 32, 48), num_exits=3)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.allclose(net(x)[-1], model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(64, 96), (97, 131)])
def test_a_pad_and_crop_back_model_converts_at_any_size(size):
    model = PadCrop().eval()
    net = mess_core.convert(model, torch.randn(1, 3, *size), num_exits=3)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(net(x)[-1], model(x), atol=1e-5, rtol=0)


def test_assigning_into_a_tensor_is_explained_as_such():
    with pytest.raises(TraceFailure) as info:
        mess_core.convert(IndexAssign(), torch.randn(1, 3, 32, 32), num_exits=2)
    message = str(info.value)
    assert "an assignment into part of a traced tensor (y[...] = value)" in message
    assert "torch.where" in message and "tensor constructor" not in message


def test_fx_containers_are_named_in_the_users_words():
    with pytest.raises(ConversionError, match="the model returns a list, not per-pixel logits") as info:
        mess_core.convert(ListOutput(), torch.randn(1, 3, 32, 32), num_exits=2)
    assert "immutable" not in str(info.value)


def test_stage_inputs_that_share_memory_export_to_onnx_and_run_like_the_network(tmp_path):
    from mess_core.deploy.export import OnnxRunner, export_onnx
    from mess_core.deploy.runtime import deploy
    from mess_core.evaluate.instance import Instance, KeptExit

    net = mess_core.convert(SkipSliceInplace().eval(), torch.randn(1, 3, 32, 48), num_exits=4, backbone="")
    assert [e.module for e in net.exits] == ["stem.0", "block.0", "block2.0"]  # exit 2 cuts beside the skip's base
    net.attach("crm25p-b0-fcn")
    instance = Instance("input-dependent", exits=(KeptExit(2, "crm25p-b0-fcn", 0.5),))
    runner = OnnxRunner(export_onnx(net, instance, tmp_path / "onnx", input_size=(32, 48)))
    x = torch.randn(3, 3, 32, 48)
    with torch.no_grad():
        want, want_taken = deploy(net, instance)(x)
    got, taken = runner(x)
    assert torch.equal(taken, want_taken) and torch.allclose(got, want, atol=1e-4)
