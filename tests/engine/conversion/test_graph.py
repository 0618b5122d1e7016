"""Cut points with skip connections, shape guards, and the errors a user sees."""

from __future__ import annotations

import pytest
import torch
import torchvision

import mess_core
from mess_core import ConversionError, GuardFailure, TraceFailure, models
from mess_core.conversion.cuts import find_cut_points
from mess_core.conversion.tracing import trace
from tests.user_models import (
    DataDependent,
    DictWithoutOut,
    EncoderUNet,
    FlatBackbone,
    LowResLogits,
    SizeBranch,
    TinyUNet,
)


def test_unet_cut_points_carry_every_skip_connection():
    model = EncoderUNet().eval()
    net = mess_core.convert(model, torch.randn(2, 3, 32, 48), num_exits=4).eval()
    live_tensors = [[n for n in e.live if net.value_info[n].kind == "tensor"] for e in net.exits]
    assert [len(t) for t in live_tensors] == [1, 2, 3]  # each encoder stage adds a skip the decoder needs later
    for point, tensors in zip(net.exits, live_tensors):
        assert point.feature_node == tensors[-1]  # the exit reads the most recent feature map
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x)[-1], model(x), atol=1e-5, rtol=0)


def test_whole_model_is_the_backbone_when_none_is_named():
    model = TinyUNet().eval()
    net = mess_core.convert(model, torch.randn(1, 3, 32, 32), num_exits=3)
    assert net.profile.backbone == ""
    assert any(len(e.live) >= 2 for e in net.exits)
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x)[-1], model(x), atol=1e-5, rtol=0)


def test_user_named_backbone_limits_the_exits_to_it():
    model = TinyUNet().eval()
    with pytest.raises(ConversionError, match=r"backbone='nope' is not a submodule.*enc1"):
        mess_core.convert(model, torch.randn(1, 3, 32, 32), backbone="nope")
    net = mess_core.convert(model, torch.randn(1, 3, 32, 32), num_exits=3, backbone="enc3")
    assert all(e.module.startswith("enc3") for e in net.exits)


def test_cut_points_never_split_a_residual_block():
    traced = trace(models.create("resnet18_fcn", num_classes=3), torch.randn(1, 3, 64, 64))
    cuts = find_cut_points(traced, region="backbone")
    # conv1, bn1, relu, maxpool, then the end of each of the 8 BasicBlocks
    assert len(cuts) == 12
    for cut in cuts:
        assert len([n for n in cut.live if traced.info[n].kind == "tensor"]) == 1


def test_shape_branches_are_specialised_and_guarded():
    model = SizeBranch().eval()
    net = mess_core.convert(model, torch.randn(1, 3, 64, 64), num_exits=3).eval()
    assert len(net.specialisations) == 1 and "x.shape[-1] > 100" in net.specialisations[0]
    x = torch.randn(2, 3, 48, 96)  # same branch as the example: fine
    with torch.no_grad():
        assert torch.allclose(net(x)[-1], model(x), atol=1e-5, rtol=0)
        with pytest.raises(GuardFailure, match=r"x.shape\[-1\] > 100"):
            net(torch.randn(1, 3, 64, 128))


def test_data_dependent_control_flow_names_the_module_and_line():
    with pytest.raises(TraceFailure) as info:
        mess_core.convert(DataDependent(), torch.randn(1, 3, 32, 32))
    message = str(info.value)
    assert "'gate' (Gate)" in message
    assert "if x.mean() > 0" in message and "user_models.py" in message
    assert "leaf_modules=['gate']" in message


def test_leaf_modules_work_around_untraceable_code():
    model = DataDependent().eval()
    net = mess_core.convert(model, torch.randn(1, 3, 32, 32), num_exits=3, leaf_modules=["gate"]).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x)[-1], model(x), atol=1e-5, rtol=0)


def test_too_many_exits_is_a_clear_error():
    with pytest.raises(ConversionError, match=r"num_exits=40 needs 39 early exits.*only 12 valid cut points.*<= 13"):
        mess_core.convert(models.create("resnet18_fcn", num_classes=3), torch.randn(1, 3, 64, 64), num_exits=40)


def test_backbone_without_feature_maps_is_a_clear_error():
    with pytest.raises(ConversionError, match=r"4-D feature map"):
        mess_core.convert(FlatBackbone(), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize(
    "model, match",
    [
        (torchvision.models.resnet18(weights=None), r"\(1, 1000\) is not per-pixel logits"),
        (LowResLogits(), r"upsample its logits"),
        (DictWithoutOut(), r"output_key="),
    ],
)
def test_outputs_that_are_not_per_pixel_logits_are_refused(model, match):
    with pytest.raises(ConversionError, match=match):
        mess_core.convert(model, torch.randn(1, 3, 32, 32))


def test_output_key_selects_the_logits():
    model = DictWithoutOut().eval()
    net = mess_core.convert(model, torch.randn(1, 3, 32, 32), num_exits=3, output_key="logits").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x)[-1], model(x)["logits"], atol=1e-5, rtol=0)


def test_bad_arguments_are_refused():
    model = TinyUNet()
    with pytest.raises(ConversionError, match="num_exits"):
        mess_core.convert(model, torch.randn(1, 3, 32, 32), num_exits=1)
    with pytest.raises(ConversionError, match="example_input"):
        mess_core.convert(model, torch.randn(3, 32, 32))
    with pytest.raises(ConversionError, match="cost"):
        mess_core.convert(model, torch.randn(1, 3, 32, 32), cost="watts")


def test_conversion_keeps_the_model_in_its_training_mode():
    model = TinyUNet().train()
    net = mess_core.convert(model, torch.randn(2, 3, 32, 32), num_exits=3)
    assert model.training and net.training


def test_latency_cost_measures_every_node():
    model = models.create("resnet18_fcn", num_classes=3)
    net = mess_core.convert(model, torch.randn(1, 3, 64, 64), num_exits=3, cost="latency")
    assert net.profile.cost == "latency"
    convs = [n for n in net.profile.nodes if n.op == "call_module" and "conv" in n.target]
    assert convs and all(n.seconds > 0 for n in convs)
    seconds = [e.seconds for e in net.exits]
    assert all(s is not None and s > 0 for s in seconds) and seconds == sorted(seconds)
    assert all(0 < e.cost_fraction < 1 for e in net.exits)


def test_training_reaches_backbone_and_heads():
    model = models.create("resnet18_fcn", num_classes=3)
    net = mess_core.convert(model, torch.randn(2, 3, 64, 64), num_exits=3).train()
    loss = sum(out.mean() for out in net(torch.randn(2, 3, 64, 64)))
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None
    assert all(p.grad is not None for p in net.heads.parameters() if p.requires_grad)


def test_an_example_the_model_itself_refuses_is_reported_as_such():
    import segmentation_models_pytorch as smp

    model = smp.FPN("resnet18", encoder_weights=None, classes=3)
    with pytest.raises(
        TraceFailure, match=r"fails on example_input \(1, 3, 64, 80\) even without tracing.*divisible by 32"
    ):
        mess_core.convert(model, torch.randn(1, 3, 64, 80))
