"""The deployed runtime really skips work: per-sample early exit with batch compaction, anytime streaming, static
budgeted submodels, and instances that do not fit the network refused with a reason."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mess_core
from mess_core.deploy.runtime import AnytimeNet, BudgetedNet, EarlyExitNet, deploy
from mess_core.evaluate.instance import Instance, InstanceError, KeptExit
from mess_core.evaluate.policy import ConfidencePolicy
from tests.user_models import ShapeCarrier, TinyUNet

SIZE = (32, 48)
CONFIGS = ("crm50p-b1-fcn", "nocrm-b0-deeplab")


def images(n: int = 8) -> torch.Tensor:
    """Random images of rising contrast: the heads' confidences differ from image to image."""
    return torch.randn(n, 3, *SIZE) * torch.linspace(0.2, 4.0, n)[:, None, None, None]


def build(model_cls=TinyUNet, num_exits: int = 3) -> mess_core.MultiExitNet:
    torch.manual_seed(0)
    net = mess_core.convert(model_cls(num_classes=4).eval(), torch.zeros(1, 3, *SIZE), num_exits=num_exits)
    net.attach(list(CONFIGS)).eval()
    for m in net.heads.modules():  # untrained heads are almost uniform; confident, varied ones exercise the policy
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=2.0 / m.weight[0].numel() ** 0.5)
    return net


def instance_with_a_mix(net, x, kept) -> Instance:
    """An input-dependent instance whose th_pix and th_img come from the images' own confidences, so that the most
    confident running images leave at each kept exit and at least two reach the final one."""
    with torch.no_grad():
        heads, _ = net.forward_all(x)
    for th_pix in torch.linspace(0.3, 0.99, 24).tolist():
        policy = ConfidencePolicy(th_pix=th_pix)
        running = torch.ones(x.shape[0], dtype=torch.bool)
        exits = []
        for exit, config in kept:
            conf = policy.image_confidence(heads[exit][config])
            top = conf[running].sort(descending=True).values
            j = next((j for j in range(1, len(top)) if top[j] < top[j - 1]), len(top))
            if j > len(top) - 2:
                break
            th = float(top[j - 1] + top[j]) / 2
            exits.append(KeptExit(exit, config, th))
            running &= conf < th
        else:
            return Instance("input-dependent", tuple(exits), policy)
    raise AssertionError("no th_pix spreads these images over every exit")


def expected_exits(net, x, instance):
    """What the policy says, from every head's output on the whole batch: the simulation the runtime must equal."""
    with torch.no_grad():
        heads, final = net.forward_all(x)
    taken = torch.full((x.shape[0],), net.num_exits)
    out = final.clone()
    for e in reversed(instance.exits):
        logits = heads[e.exit][e.config]
        leave = instance.policy.exits(logits, e.th_img)
        taken[leave] = e.exit
        out[leave] = logits[leave]
    return out, taken


def record_stage_batches(model):
    """Batch size every stage and head of ``model`` is called with, in call order."""
    calls = []
    for name, module in [
        *((f"stage{i}", s) for i, s in enumerate(model.stages, start=1)),
        *((f"head{k}", h) for k, h in model.heads.items()),
    ]:
        module.register_forward_pre_hook(
            lambda m, args, name=name: calls.append((name, next(a.shape[0] for a in args if torch.is_tensor(a))))
        )
    return calls


@pytest.mark.parametrize("model_cls", [TinyUNet, ShapeCarrier], ids=["unet-skips", "batch-size-in-graph"])
def test_input_dependent_equals_the_simulation_and_each_sample_alone(model_cls):
    net = build(model_cls)
    x = images()
    instance = instance_with_a_mix(net, x, [(1, CONFIGS[0]), (2, CONFIGS[1])])
    model = deploy(net, instance)
    assert isinstance(model, EarlyExitNet)
    with torch.no_grad():
        logits, taken = model(x)
        alone = [model(x[i : i + 1]) for i in range(len(x))]
    want_logits, want_taken = expected_exits(net, x, instance)
    assert set(taken.tolist()) == {1, 2, 3}
    assert torch.equal(taken, want_taken)
    torch.testing.assert_close(logits, want_logits, atol=1e-5, rtol=1e-5)
    for i, (one, t) in enumerate(alone):
        assert int(t) == int(taken[i])
        torch.testing.assert_close(one[0], logits[i], atol=1e-5, rtol=1e-5)


def test_no_stage_or_head_sees_a_sample_that_already_left():
    net = build()
    x = images()
    model = deploy(net, instance_with_a_mix(net, x, [(1, CONFIGS[0]), (2, CONFIGS[1])]))
    calls = record_stage_batches(model)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _, taken = model(x)
    n = [int((taken >= k).sum()) for k in (1, 2, 3)]  # samples still running at stage k
    assert calls == [("stage1", n[0]), ("head1", n[0]), ("stage2", n[1]), ("head2", n[1]), ("stage3", n[2])]
    # the work done is exactly the sum of every sample's own path: stages up to its exit plus the heads it met
    stage = net.stage_flops(SIZE)
    head = [net.head_flops(1, CONFIGS[0], SIZE), net.head_flops(2, CONFIGS[1], SIZE)]
    want = sum(sum(stage[:t]) + sum(head[: min(t, 2)]) for t in taken.tolist())
    assert counter.get_total_flops() == pytest.approx(want, rel=1e-6)
    assert counter.get_total_flops() < len(x) * (sum(stage) + sum(head))


def test_when_every_sample_leaves_early_no_deeper_stage_runs():
    net = build()
    model = deploy(net, Instance.input_dependent([KeptExit(1, CONFIGS[0], th_img=0.0)]))
    calls = record_stage_batches(model)
    with torch.no_grad():
        _, taken = model(torch.randn(3, 3, *SIZE))
    assert taken.tolist() == [1, 1, 1]
    assert calls == [("stage1", 3), ("head1", 3)]


def test_anytime_streams_each_output_and_stops_when_the_caller_stops():
    net = build()
    model = deploy(net, Instance("anytime", (KeptExit(1, CONFIGS[0]), KeptExit(2, CONFIGS[1]))))
    assert isinstance(model, AnytimeNet)
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        heads, final = net.forward_all(x)
        calls = record_stage_batches(model)
        stream = model.stream(x)
        exit, first = next(stream)
        assert exit == 1 and [c[0] for c in calls] == ["stage1", "head1"]
        torch.testing.assert_close(first, heads[1][CONFIGS[0]])
        rest = list(stream)
    assert [e for e, _ in rest] == [2, 3]
    torch.testing.assert_close(rest[0][1], heads[2][CONFIGS[1]])
    torch.testing.assert_close(rest[1][1], final)


def test_budgeted_holds_only_the_stages_up_to_its_exit_and_its_head():
    net = build()
    model = deploy(net, Instance("budgeted", (KeptExit(1, CONFIGS[1]),)))
    assert isinstance(model, BudgetedNet) and len(model.stages) == 1 and list(model.heads) == ["1"]
    params = {id(p) for p in model.parameters()}
    assert params == {id(p) for p in [*net.stages[0].parameters(), *net.head(1, CONFIGS[1]).parameters()]}
    x = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        heads, final = net.forward_all(x)
        torch.testing.assert_close(model(x), heads[1][CONFIGS[1]])
        torch.testing.assert_close(deploy(net, Instance("budgeted"))(x), final)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["exits"][0].update(exit=7), "exit 7 is not an early exit"),
        (lambda d: d["exits"][0].update(config="crm25p-b2-rdi-fcn"), "exit 1 has no head 'crm25p-b2-rdi-fcn'"),
        (lambda d: d.update(source={"num_classes": 11}), "searched for 11 classes but the network predicts 4"),
        (lambda d: d.update(source={"num_exits": 6}), "with 6 exits but this one has 3"),
        (lambda d: d["exits"][0].pop("th_img"), "th_img"),
    ],
)
def test_an_instance_that_does_not_fit_the_network_is_refused_saying_what_differs(tmp_path, change, message):
    net = build()
    data = Instance.input_dependent([KeptExit(1, CONFIGS[0], th_img=0.5)]).to_dict()
    change(data)
    path = tmp_path / "instance.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InstanceError, match=message):
        deploy(net, Instance.load(path))
