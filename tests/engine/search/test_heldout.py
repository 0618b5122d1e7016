"""``study evaluate``: every row of a shipped study, as shipped, on other labelled images; the exits it reports are
the ones the deployed runtime takes, image by image."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mess_core.cli import main
from mess_core.deploy.runtime import deploy
from mess_core.evaluate.instance import Instance, evaluate
from mess_core.search.heldout import PROMISES, evaluate_rows
from mess_core.search.report import Row
from mess_core.search.uncertainty import drop_interval
from mess_core.study import StudyError, open_study
from mess_core.study.evaluate import EvaluationData, evaluate_on, evaluation_dataset


@pytest.fixture(scope="module")
def evaluated(tiny_study):
    _, _, out, _ = tiny_study
    study = open_study(out)
    dataset, data, notes = evaluation_dataset(study, EvaluationData(split="test"))
    cache, rows = evaluate_on(study, dataset, data, batch_size=4)
    return study, dataset, cache, rows, notes


def test_images_of_groups_the_network_trained_on_are_counted_in_a_note(tiny_study):
    _, _, out, _ = tiny_study
    study = open_study(out)
    _, _, notes = evaluation_dataset(study, EvaluationData(split="train"), limit=3)
    assert notes == [
        "3 of 3 images are of group(s) the network trained on (train: 3): figures on them describe scenes it saw, "
        "not new ones; --groups keeps the others"
    ]
    # other images of the same dataset (here: generated with other options) are not the ones it trained on
    other = EvaluationData(split="train", options={"size": [48, 64], "length": 4, "seed": 7})
    assert evaluation_dataset(study, other, limit=3)[2] == []
    # a study built before groups were recorded trained on the whole of its training split: those images are noted
    # too, from the split named in its configuration (not from today's default selection)
    old = {k: v for k, v in study.manifest.items() if k != "data"}
    old["config"] = {**old["config"], "train_split": "test"}
    before = dataclasses.replace(study, manifest=old)
    assert evaluation_dataset(before, EvaluationData(split="train"), limit=3)[2] == []
    assert evaluation_dataset(before, EvaluationData(split="test"), limit=3)[2] == [
        "3 of 3 images are of group(s) the network trained on (test: 3): figures on them describe scenes it saw, "
        "not new ones; --groups keeps the others"
    ]
    # with no split named, the study's own report selection
    _, chosen, _ = evaluation_dataset(study, EvaluationData())
    assert (chosen.split, chosen.groups) == (study.manifest["config"]["report_split"], ())


def test_the_exits_it_reports_are_the_ones_the_deployed_runtime_takes(evaluated):
    study, dataset, cache, rows, _ = evaluated
    net, _ = study.load_network()
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    checked = 0
    for instance in rows.loc[rows["mode"] == "input-dependent", "instance"]:
        if not instance.exits:
            continue
        with torch.no_grad():
            _, taken = deploy(net, instance)(images)
        assert evaluate(cache, instance).exit_left_at.tolist() == taken.tolist()
        checked += 1
    assert checked


def test_every_row_is_scored_on_the_new_images_and_says_whether_its_promise_held(evaluated):
    study, _, cache, rows, notes = evaluated
    assert notes == [] and cache.meta["split"] == "test"
    assert cache.meta.get("absent_heads")  # the shipped study keeps its heavy head only where an instance uses it
    backbone = float(cache.head_miou()[cache.final_head])
    deployable = [r for r in study.results("input-dependent").itertuples() if isinstance(r.instance, Instance)]
    assert len(rows[rows["mode"] == "input-dependent"]) == len(deployable)
    assert set(rows["mode"]) == {"input-dependent", "budgeted", "anytime"}  # every row of the study
    # the intervals resample the study's scene blocks, as its rows were chosen; ten images make one block of 10,
    # too few to resample, so they resample single images, and say so
    assert study.promise_rule["block"] == 10 and rows.attrs["drop_block"] is None
    one = rows.iloc[-1]
    interval = drop_interval(cache, one["instance"])
    assert (one["drop_low"], one["drop_high"]) == pytest.approx((interval.low, interval.high))
    blocks = evaluate_rows({"input-dependent": study.results("input-dependent")}, cache, block=2)
    assert blocks.attrs["drop_block"] == 2
    again = drop_interval(cache, blocks.iloc[-1]["instance"], block=2)
    assert (blocks.iloc[-1]["drop_low"], blocks.iloc[-1]["drop_high"]) == pytest.approx((again.low, again.high))
    for r in rows.itertuples():
        assert r.miou == pytest.approx(evaluate(cache, r.instance).miou)
        assert r.drop_pp == pytest.approx(100 * (backbone - r.miou))
        assert r.drop_low <= r.drop_pp + 1e-9 <= r.drop_high + 2e-9
        assert sum(m["fraction"] for m in r.exit_mix) == pytest.approx(1.0)
        promise = PROMISES.get(Row(r.id))
        assert (r.held is None) == (promise is None)
        if promise is not None and promise.max_drop is not None:
            assert r.held == (r.drop_pp <= promise.max_drop + 1e-9)
    assert (rows["id"] == "backbone").sum() == 1


def test_the_command_prints_the_table_writes_json_and_the_cache_and_notes_resizing(tiny_study, tmp_path, capsys):
    _, _, out, _ = tiny_study
    record, cache = tmp_path / "eval.json", tmp_path / "eval.npz"
    code = main(
        [
            "study",
            "evaluate",
            str(out),
            "--split",
            "val",
            "--data-option",
            "size=[60,80]",
            "--data-option",
            "length=6",
            "--json",
            str(record),
            "--cache",
            str(cache),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "note: 6 of 6 images are resized to the study's input size 48x64 (6 at 60x80)" in printed
    assert "| input-dependent | MESS min-cost <= 1pp drop |" in printed and "promises held" in printed
    data = json.loads(record.read_text())
    assert data["data"]["images"] == 6 and data["data"]["input_size"] == [48, 64]
    assert {r["id"] for r in data["rows"]} >= {"backbone", "min_cost_1pp"}
    assert np.load(cache)["tp"].shape[0] == 6


def test_images_of_other_classes_are_refused_naming_both(tiny_study, tmp_path):
    _, _, out, _ = tiny_study
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "dataset.yaml").write_text("classes: [background, thing]\n")
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "a.png")
    with pytest.raises(StudyError, match="has 2 classes but study tiny predicts 7"):
        evaluation_dataset(open_study(out), EvaluationData(split=None, dataset="folder", root=str(root)))


def test_rows_of_a_whole_cache_and_of_the_study_agree(evaluated):
    study, _, cache, rows, _ = evaluated
    again = evaluate_rows({"input-dependent": study.results("input-dependent")}, cache)
    mine = rows[rows["mode"] == "input-dependent"].reset_index(drop=True)
    assert list(again["miou"]) == list(mine["miou"])
