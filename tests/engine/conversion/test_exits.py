"""The exit architecture space as data, and the heads built from it."""

from __future__ import annotations

import pytest
import torch

import mess_core
from mess_core import ExitSpace, ExitSpec, SpecError, models
from mess_core.conversion.exits import ExitHead


def test_default_space_has_every_meaningful_combination_once():
    space = ExitSpace.default()
    specs = list(space)
    assert len(specs) == len(space) == 3 * (1 + 2 + 2) * 2 == 30
    assert len(set(specs)) == len(set(space.ids)) == 30
    assert not any(s.rdi and s.blocks == 0 for s in specs)


@pytest.mark.parametrize("spec", list(ExitSpace(crm=(None, 0.5, 0.25, 64))), ids=str)
def test_ids_round_trip(spec):
    assert ExitSpec.parse(spec.id) == spec


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rdi=True, blocks=0), "needs blocks >= 1"),
        (dict(blocks=3), "blocks must be 0, 1 or 2"),
        (dict(head="pspnet"), "head must be one of"),
        (dict(crm=1.5), "must lie in"),
        (dict(crm=0.333), "whole percentage"),
    ],
)
def test_invalid_specs_are_refused(kwargs, match):
    with pytest.raises(SpecError, match=match):
        ExitSpec(**kwargs)


def test_bad_id_explains_the_format():
    with pytest.raises(SpecError, match=r"'crm-b9' is not an exit configuration id; ids look like"):
        ExitSpec.parse("crm-b9")


@pytest.mark.parametrize("spec", list(ExitSpace.default()), ids=str)
def test_every_head_maps_features_to_logits(spec):
    head = ExitHead(spec, in_channels=48, num_classes=7).eval()
    with torch.no_grad():
        out = head(torch.randn(2, 48, 9, 12), (72, 96))
    assert out.shape == (2, 7, 72, 96)
    width = spec.reduced_channels(48)
    assert width == {None: 48, 0.5: 24, 0.25: 12}[spec.crm]
    assert len(head.blocks) == spec.blocks
    dilations = [b.conv1.dilation[0] for b in head.blocks]
    assert dilations == ([2, 4][: spec.blocks] if spec.rdi else [1] * spec.blocks)


def test_head_cost_grows_with_blocks_and_input_size():
    net = mess_core.convert(models.create("resnet18_fcn", num_classes=5), torch.randn(1, 3, 64, 64), num_exits=3)
    light = net.head_flops(1, "crm25p-b0-fcn")
    heavier = net.head_flops(1, "crm25p-b2-fcn")
    assert 0 < light < heavier
    assert net.head_flops(1, "crm25p-b0-fcn", (128, 128)) == pytest.approx(4 * light, rel=1e-6)
    assert net.exit_flops(1, "crm25p-b0-fcn") == pytest.approx(net.stage_flops()[0] + light)
    assert net.exit_flops(net.num_exits) == pytest.approx(net.profile.total_flops)


def test_attach_space_and_forward_all_share_one_backbone_pass():
    net = mess_core.convert(models.create("resnet18_fcn", num_classes=5), torch.randn(2, 3, 64, 64), num_exits=3)
    space = ExitSpace(crm=(None, 0.25), blocks=(0, 1), rdi=(False,), heads=("fcn", "deeplab"))
    net.attach(space).eval()
    calls = []
    hook = net.stages[0].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        heads, final = net.forward_all(torch.randn(2, 3, 64, 80))
    hook.remove()
    assert len(calls) == 1
    assert set(heads) == {1, 2}
    for per_exit in heads.values():
        assert set(per_exit) == set(space.ids)
        assert all(t.shape == (2, 5, 64, 80) for t in per_exit.values())
    assert final.shape == (2, 5, 64, 80)


def test_activate_switches_heads_and_refuses_unattached_ones():
    net = mess_core.convert(models.create("resnet18_fcn", num_classes=5), torch.randn(1, 3, 64, 64), num_exits=3)
    assert net.active == {1: "nocrm-b0-fcn", 2: "nocrm-b0-fcn"}
    with pytest.raises(SpecError, match="attach it first"):
        net.activate("crm64-b1-fcn")
    net.attach("crm64-b1-fcn", exits=[2]).activate({2: "crm64-b1-fcn"})
    assert net.active[2] == "crm64-b1-fcn" and net.head(2).spec.crm == 64
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64))[1].shape == (1, 5, 64, 64)
