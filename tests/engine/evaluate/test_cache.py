"""The evaluation cache against running the network: any instance's mIoU and cost from the cache must equal what
the network and the policy give image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mess_core import models
from mess_core.cli import main
from mess_core.conversion.pipeline import convert
from mess_core.data import SyntheticSegmentation, eval_transform
from mess_core.deploy import artifacts
from mess_core.evaluate.cache import CacheError, EvaluationCache
from mess_core.evaluate.cache_build import build_cache
from mess_core.evaluate.evaluation import ConfusionMatrix
from mess_core.evaluate.instance import Instance, KeptExit, evaluate
from mess_core.evaluate.policy import ConfidencePolicy, EdgeMasking

SIZE = (48, 64)
SPACE = ["nocrm-b0-fcn", "crm25p-b1-rdi-fcn", "crm50p-b0-deeplab"]
GRID = (0.3, 0.5, 0.7, 0.9)


def calibrate(net, images):
    """Random weights give all-zero features and uniform softmax. BatchNorm statistics measured on real images and a
    sharper last layer spread confidences over (0, 1), so thresholds separate images as trained heads would."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the calibration batch
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        net.forward_all(images)
        for bank in net.heads.values():
            for head in bank.values():
                head.head[-1].weight.mul_(8.0)
    return net.eval()


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = models.create("mobilenetv3_lraspp", num_classes=7).eval()
    net = convert(model, torch.zeros(1, 3, *SIZE), num_exits=4).attach(SPACE)
    data = SyntheticSegmentation(split="val", length=10, size=SIZE, transform=eval_transform())
    net = calibrate(net, torch.stack([torch.as_tensor(data[i][0]).as_subclass(torch.Tensor) for i in range(10)]))
    cache = build_cache(
        net,
        data,
        model="mobilenetv3_lraspp",
        dataset_name="synthetic",
        split="val",
        batch_size=3,
        th_pix_grid=GRID,
        latency=True,
        latency_repeats=1,
    )
    return net, data, cache, model


def run_network(net, data, instance):
    """The reference: the network, the policy and a confusion matrix, image by image."""
    cm = ConfusionMatrix(net.num_classes, ignore_index=data.info.ignore_index)
    stage = net.stage_flops(SIZE)
    costs = []
    with torch.no_grad():
        for i in range(len(data)):
            image, label = data[i]
            outputs, final = net.forward_all(torch.as_tensor(image)[None])
            cost, chosen = 0.0, None
            previous = 0
            for e in instance.exits:
                cost += sum(stage[previous : e.exit]) + net.head_flops(e.exit, e.config, SIZE)
                previous = e.exit
                logits = outputs[e.exit][e.config]
                if instance.policy.exits(logits, e.th_img).item():
                    chosen = logits
                    break
            if chosen is None:
                cost += sum(stage[previous:])
                chosen = final
            cm.update(chosen.argmax(1), torch.as_tensor(label)[None])
            costs.append(cost / 1e9)
    return cm.miou(), float(np.mean(costs))


def between(values, q):
    """A threshold half-way between two neighbouring observed values (never on a knife edge)."""
    v = np.unique(values)
    i = min(int(q * (len(v) - 1)), len(v) - 2)
    return float((v[i] + v[i + 1]) / 2)


@pytest.mark.parametrize("policy", ["mess", "plain", "naive"])
def test_any_instance_from_the_cache_equals_running_the_network(setup, policy):
    net, data, cache, _ = setup
    th_pix = 0.5
    c_img = cache.image_confidence(policy=policy, th_pix=th_pix)
    exits = [(1, SPACE[1], 0.5), (3, SPACE[2], 0.3)]
    kept = [KeptExit(e, c, between(c_img[:, cache.head_index(e, c)], q)) for e, c, q in exits]
    instance = Instance(
        "input-dependent",
        tuple(kept),
        ConfidencePolicy(th_pix=th_pix, edges=EdgeMasking() if policy == "mess" else None, naive=policy == "naive"),
    )
    outcome = evaluate(cache, instance)
    miou, cost = run_network(net, data, instance)
    assert 0 < np.bincount(outcome.exit_taken, minlength=3)[:2].sum() < len(data)  # some images leave early, not all
    assert outcome.miou == pytest.approx(miou, abs=1e-12)
    assert outcome.cost == pytest.approx(cost, rel=1e-12)


def test_every_head_alone_matches_a_confusion_matrix_of_the_network(setup):
    net, data, cache, _ = setup
    for e in range(1, net.num_exits):
        for c in SPACE:
            inst = Instance("budgeted", (KeptExit(e, c),))
            cm = ConfusionMatrix(7, ignore_index=data.info.ignore_index)
            with torch.no_grad():
                for i in range(len(data)):
                    image, label = data[i]
                    outputs, _ = net.forward_all(torch.as_tensor(image)[None])
                    cm.update(outputs[e][c].argmax(1), torch.as_tensor(label)[None])
            assert evaluate(cache, inst).miou == pytest.approx(cm.miou(), abs=1e-12)
            assert evaluate(cache, inst).cost == pytest.approx(net.exit_flops(e, c, SIZE) / 1e9, rel=1e-12)


def test_cache_round_trips_through_its_file_with_metadata(setup, tmp_path):
    _, _, cache, _ = setup
    path = cache.save(tmp_path / "c.npz")
    again = EvaluationCache.load(path)
    assert again.meta["model"] == "mobilenetv3_lraspp" and again.meta["split"] == "val"
    assert again.meta["input_size"] == list(SIZE) and again.configs == SPACE
    assert again.has_latency and again.stage_ms.shape == (4,) and (again.head_ms > 0).all()
    decisions = again.meta["decision_ms"]  # each rule's c_img at an exit, timed with the heads
    assert set(decisions) == {"mess", "plain", "naive"} and all(v > 0 for v in decisions.values())
    for name in ("tp", "pred", "label", "above", "above_plain", "conf_sum", "pixels", "stage_gflops", "head_gflops"):
        np.testing.assert_array_equal(getattr(again, name), getattr(cache, name))


def test_damaged_or_foreign_cache_files_are_refused_with_the_file_named(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CacheError, match="bad.npz"):
        EvaluationCache.load(bad)
    with pytest.raises(CacheError, match="no such cache file"):
        EvaluationCache.load(tmp_path / "missing.npz")
    cache = EvaluationCache.random()
    cache.meta["format"] = "something-else"
    cache.save(tmp_path / "old.npz")
    with pytest.raises(CacheError, match="old.npz.*rebuild"):
        EvaluationCache.load(tmp_path / "old.npz")


def test_th_pix_off_the_grid_is_refused_with_the_grid_listed():
    cache = EvaluationCache.random(grid=(0.5, 0.9))
    with pytest.raises(CacheError, match=r"th_pix=0.8 .*\[0.5, 0.9\]"):
        cache.image_confidence(policy="mess", th_pix=0.8)


def test_images_of_different_sizes_are_refused_naming_the_image(setup):
    net, _, _, _ = setup

    class Mixed(SyntheticSegmentation):
        def __getitem__(self, i):
            image, label = super().__getitem__(i)
            return (image[:, :32], label[:32]) if i == 1 else (image, label)

    data = Mixed(split="val", length=3, size=SIZE, transform=eval_transform())
    with pytest.raises(CacheError, match="resize every image"):
        build_cache(net, data, model="m", dataset_name="synthetic", split="val", batch_size=3)


def test_cache_and_search_commands_end_to_end(setup, tmp_path, capsys):
    net, _, _, model = setup
    weights = artifacts.save_multi_exit(tmp_path / "multi_exit.pt", net, model, {"model": "mobilenetv3_lraspp"})
    out = tmp_path / "val.npz"
    assert (
        main(
            [
                "cache",
                "--multi-exit",
                str(weights),
                "--data",
                "synthetic",
                "--data-option",
                "size=[48,64]",
                "--data-option",
                "length=8",
                "--split",
                "val",
                "--out",
                str(out),
                "--th-pix",
                "0.5,0.7,0.9",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "cache",
                "--multi-exit",
                str(weights),
                "--data",
                "synthetic",
                "--data-option",
                "size=[48,64]",
                "--data-option",
                "length=8",
                "--split",
                "train",
                "--out",
                str(tmp_path / "train.npz"),
                "--th-pix",
                "0.5,0.7,0.9",
            ]
        )
        == 0
    )
    capsys.readouterr()
    code = main(
        [
            "search",
            "--cache",
            str(tmp_path / "train.npz"),
            "--eval-cache",
            str(out),
            "--objective",
            "min-cost",
            "--max-drop",
            "1",
            "--mode",
            "input-dependent",
            "--th-pix",
            "0.5,0.7,0.9",
            "--th-img",
            "0.2,0.5,0.8",
            "--out",
            str(tmp_path / "inst.json"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    for row in (
        "Backbone",
        "MESS max-acc <= 1x cost",
        "MESS min-cost <= 0.1pp drop",
        "MESS min-cost <= 1pp drop",
        "uniform-exit MESS",
        "naive-confidence policy",
        "oracle",
    ):
        assert row in text
    assert "on the other split" in text
    inst = Instance.load(tmp_path / "inst.json")
    assert inst.mode == "input-dependent"
    import json

    saved = json.loads((tmp_path / "inst.json").read_text())
    assert saved["reported"]["split"] == "val" and "miou" in saved["tuned"]
    assert saved["tuned"]["miou"] == pytest.approx(evaluate(EvaluationCache.load(tmp_path / "train.npz"), inst).miou)
    assert saved["source"]["num_classes"] == net.num_classes and saved["source"]["num_exits"] == net.num_exits

    # bench: the instance timed beside the original model, and its latency table written into the cache
    capsys.readouterr()
    assert (
        main(
            [
                "bench",
                "--multi-exit",
                str(weights),
                "--instance",
                str(tmp_path / "inst.json"),
                "--data-option",
                "size=[48,64]",
                "--data-option",
                "length=8",
                "--images",
                "4",
                "--batch",
                "1",
                "2",
                "--repeats",
                "1",
                "--engines",
                "eager",
                "--skip",
                "cuda",
                "--out",
                str(tmp_path / "bench.json"),
                "--into-cache",
                str(tmp_path / "train.npz"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "converted network, no exit kept, vs original" in text
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert {(r["batch"], r["variant"]) for r in rows} >= {
        (b, v) for b in (1, 2) for v in ("original", "converted", "inst")
    }
    assert all(r["ms_per_image"] > 0 and r["runs"] == 4 // r["batch"] for r in rows)
    timed = EvaluationCache.load(tmp_path / "train.npz")
    assert timed.has_latency and timed.stage_ms.shape == (net.num_exits,) and (timed.head_ms > 0).all()
    assert set(timed.meta["decision_ms"]) == {"mess", "plain", "naive"}
    assert (
        main(
            [
                "search",
                "--cache",
                str(tmp_path / "train.npz"),
                "--objective",
                "min-cost",
                "--max-drop",
                "1",
                "--cost",
                "latency",
                "--th-pix",
                "0.5,0.7,0.9",
                "--th-img",
                "0.2,0.5,0.8",
                "--out",
                str(tmp_path / "inst_ms.json"),
            ]
        )
        == 0
    )


def test_a_network_missing_a_head_at_one_exit_gives_a_partial_cache_that_refuses_that_head_only(setup):
    import copy

    from mess_core.search.constrained import search
    from mess_core.search.problem import Objective, SearchSpace

    net, data, whole, _ = setup
    partial_net = copy.deepcopy(net)
    del partial_net.heads["2"][SPACE[2]]  # as a shipped study leaves a heavy head out where no instance uses it
    partial = build_cache(
        partial_net,
        data,
        model="mobilenetv3_lraspp",
        dataset_name="synthetic",
        split="val",
        batch_size=3,
        th_pix_grid=GRID,
    )
    assert partial.meta["absent_heads"] == {"2": [SPACE[2]]} and partial.configs == SPACE
    with pytest.raises(CacheError, match=f"no figures for '{SPACE[2]}' at exit 2"):
        partial.head_index(2, SPACE[2])
    with pytest.raises(CacheError, match="no figures"):
        evaluate(partial, Instance("budgeted", (KeptExit(2, SPACE[2]),)))
    # every head it has gives the whole cache's figures
    for e in range(1, net.num_exits):
        for c in SPACE:
            if (e, c) == (2, SPACE[2]):
                continue
            inst = Instance.input_dependent([KeptExit(e, c, 0.5)], th_pix=0.7)
            assert evaluate(partial, inst).miou == evaluate(whole, inst).miou
    # the search only considers configurations it has at every candidate exit
    _, configs, _ = SearchSpace().resolve(partial)
    assert [partial.configs[c] for c in configs] == SPACE[:2]
    for mode in ("input-dependent", "budgeted"):
        found = search(partial, Objective("pareto"), mode=mode, space=SearchSpace(max_exits=1))
        used = {k.config for inst in found.front["instance"] if inst is not None for k in inst.exits}
        assert used and SPACE[2] not in used
