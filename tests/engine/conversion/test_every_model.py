"""convert() on every registered reference model and on segmentation_models_pytorch's models with skips."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from torch.utils.flop_counter import FlopCounterMode

import mess_core
from mess_core import models
from mess_core.conversion.placement import equidistant_targets

NUM_CLASSES = 5
EXAMPLE = (2, 3, 64, 96)  # H != W so transposed shapes would show; divisible by 32 as smp requires
OTHER = (3, 3, 96, 128)  # another batch size and input size than the example's

SMP_BUILDERS = {
    "smp_unet": lambda: smp.Unet("resnet18", encoder_weights=None, classes=NUM_CLASSES),
    "smp_fpn": lambda: smp.FPN("resnet18", encoder_weights=None, classes=NUM_CLASSES),
    "smp_deeplabv3plus": lambda: smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=NUM_CLASSES),
}
ALL_MODELS = models.list_models() + list(SMP_BUILDERS)


def build(name: str) -> torch.nn.Module:
    if name in SMP_BUILDERS:
        return SMP_BUILDERS[name]()
    return models.create(name, num_classes=NUM_CLASSES)


def logits_of(output):
    return output["out"] if isinstance(output, dict) else output


@pytest.fixture(scope="module", params=ALL_MODELS)
def converted(request):
    torch.manual_seed(0)
    model = build(request.param).eval()
    net = mess_core.convert(model, torch.randn(*EXAMPLE), num_exits=4).eval()
    return request.param, model, net


def test_registry_lists_the_paper_models_and_torchvision_builders():
    names = set(models.list_models())
    assert {"mobilenetv2_fcn", "resnet50_fcn", "resnet50_deeplabv3", "resnet18_fcn"} <= names
    assert {"mobilenetv3_deeplabv3", "mobilenetv3_lraspp"} <= names
    assert {n for n in names if models.model_info(n).in_paper} == {
        "mobilenetv2_fcn",
        "resnet50_fcn",
        "resnet50_deeplabv3",
    }


def test_final_exit_equals_the_model_for_other_batch_and_input_sizes(converted):
    _, model, net = converted
    x = torch.randn(*OTHER)
    with torch.no_grad():
        outs = net(x)
        ref = logits_of(model(x))
    assert torch.allclose(outs[-1], ref, atol=1e-5, rtol=0)


def test_every_exit_gives_logits_at_input_resolution(converted):
    _, _, net = converted
    x = torch.randn(*OTHER)
    with torch.no_grad():
        outs = net(x)
    assert len(outs) == net.num_exits == 4
    for out in outs:
        assert out.shape == (OTHER[0], NUM_CLASSES, OTHER[2], OTHER[3])
        assert torch.isfinite(out).all()


def test_stage_by_stage_execution_equals_the_whole(converted):
    _, _, net = converted
    x = torch.randn(*OTHER)
    with torch.no_grad():
        whole = net(x)
        live = (x,)
        pieces = []
        for k in range(1, net.num_exits):
            live = net.run_stage(k, live)
            assert isinstance(live, tuple) and len(live) == len(net.exits[k - 1].live)
            pieces.append(net.head(k)(net.exit_features(k, live), x.shape[-2:]))
        pieces.append(net.final_logits(net.run_stage(net.num_exits, live)))
    for a, b in zip(whole, pieces):
        assert torch.equal(a, b)


def test_a_walk_resumed_after_any_stage_equals_the_whole(converted):
    _, _, net = converted
    x = torch.randn(*OTHER)
    size = x.shape[-2:]
    with torch.no_grad():
        whole = net(x)
        for cut in range(1, net.num_exits):
            first = list(net.walk(x, stop=cut))
            rest = list(net.walk(live=first[-1].live, start=cut + 1))
            steps = first + rest
            assert [s.index for s in steps] == list(range(1, net.num_exits + 1))
            assert [s.final for s in steps] == [False] * (net.num_exits - 1) + [True]
            assert steps[-1].features is None and all(s.logits is None for s in steps[:-1])
            for step, expected in zip(steps, whole):
                got = step.logits if step.final else net.head(step.index)(step.features, size)
                assert torch.equal(got, expected)
            assert torch.equal(net.walk_to(x, stop=cut).features, first[-1].features)
        assert torch.equal(net.walk_to(x).logits, whole[-1])
    with pytest.raises(TypeError, match="exactly one"):
        next(net.walk())


def test_exit_points_are_described_and_feature_maps_match(converted):
    _, _, net = converted
    x = torch.randn(1, *EXAMPLE[1:])
    with torch.no_grad():
        features, _ = net.forward_features(x)
    for point, feat in zip(net.exits, features):
        assert point.channels == feat.shape[1]
        assert point.feature_shape == tuple(feat.shape[1:])
        assert point.stride == round(EXAMPLE[2] / feat.shape[2])
        assert point.node and point.feature_node in point.live
        assert point.gmacs == pytest.approx(point.gflops / 2)


def test_cost_fractions_increase_and_are_near_equidistant(converted):
    _, _, net = converted
    prof = net.profile
    fractions = [e.cost_fraction for e in net.exits]
    assert all(0 < a < b < 1 for a, b in zip(fractions, fractions[1:]))
    cumulative = prof.cumulative()
    cut_costs = sorted(cumulative[c.position] for c in prof.cut_points)
    max_gap = max(b - a for a, b in zip([0.0, *cut_costs], [*cut_costs, prof.backbone_cost]))
    for point, target in zip(net.exits, equidistant_targets(prof.backbone_cost, net.num_exits)):
        assert abs(point.flops - target) <= max_gap
    assert len({e.node for e in net.exits}) == len(net.exits)


def test_stage_costs_add_up_to_the_profiled_total(converted):
    _, _, net = converted
    assert sum(net.stage_flops()) == pytest.approx(net.profile.total_flops, rel=1e-9)
    cumulative = 0.0
    for point, stage in zip(net.exits, net.stage_flops()):
        cumulative += stage
        assert cumulative == pytest.approx(point.flops, rel=1e-9)


def test_head_cost_queries_match_counting_the_real_head(converted):
    _, _, net = converted
    spec = "crm50p-b1-rdi-deeplab"
    net.attach(spec)
    size = (96, 128)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        features, _ = net.forward_features(x)
        for index, feat in enumerate(features, start=1):
            head = net.head(index, spec).eval()
            with FlopCounterMode(display=False) as counter:
                head(feat, size)
            assert net.head_flops(index, spec, size) == counter.get_total_flops()
            assert net.feature_shape(index, size) == tuple(feat.shape[1:])


def test_conversion_shares_parameters_with_the_model(converted):
    _, model, net = converted
    model_params = {id(p) for p in model.parameters()}
    stage_params = {id(p) for p in net.stages.parameters()}
    assert stage_params <= model_params
