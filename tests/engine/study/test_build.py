"""Studies: built end to end by one command, resumable, packed atomically with a manifest, and reopened with clear
messages when a folder is incomplete, damaged or from another version."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from mess_core import checkpoint
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import MODES, evaluate
from mess_core.search.report import results_table
from mess_core.study import StudyConfig, StudyError, build, list_studies, open_study
from mess_core.study.protocol import protocol_table
from tests.paths import REPO


def test_build_writes_every_file_the_manifest_lists_with_matching_hashes(tiny_study):
    config, work, out, lines = tiny_study
    study = open_study(out)
    manifest = study.manifest
    assert manifest["format"] == "mess-study/1" and manifest["name"] == "tiny"
    assert manifest["command"].endswith(f"study build {config.as_posix()}")
    assert set(manifest["files"]) == {
        "multi_exit.pt",
        "val.npz",
        "test.npz",
        "results.json",
        "fronts.json",
        "profile.json",
        "study.yaml",
        "training.json",
        "latency.json",
        "oracle.json",
        "transfer.json",
    }
    assert study.verify() == []
    assert {"backbone", "pretrain", "exits", "variant_ce", "cache_val", "cache_test", "search", "latency"} <= set(
        manifest["wall_seconds"]
    )
    assert any(line.startswith("[8/8] pack") for line in lines)
    assert list_studies(out.parent) == [out]


def test_weights_are_stored_in_float16_and_load_as_float32(tiny_study):
    _, _, out, _ = tiny_study
    payload = checkpoint.load(out / "multi_exit.pt")
    assert {v.dtype for v in payload["model"].values() if v.is_floating_point()} == {torch.float16}
    net, meta = open_study(out).load_network()
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    assert meta["stored_dtype"] == "float16"


def test_cache_agrees_with_rerunning_the_shipped_weights(tiny_study):
    _, _, out, _ = tiny_study
    assert open_study(out).check_weights(images=3) == []


def test_heavy_heads_ship_only_where_an_instance_uses_them(tiny_study):
    _, _, out, _ = tiny_study
    study = open_study(out)
    net, _ = study.load_network()
    used = {
        (e.exit, e.config)
        for mode in MODES
        for inst in study.results(mode)["instance"]
        if inst is not None
        for e in inst.exits
    } | {(e.exit, e.config) for inst in study.fronts()["instance"] for e in inst.exits}
    for i in range(1, 6):
        shipped = set(net.heads[str(i)].keys())
        assert "crm25p-b0-fcn" in shipped
        assert ("nocrm-b0-fcn" in shipped) == ((i, "nocrm-b0-fcn") in used)
        assert ("nocrm-b0-fcn" in study.manifest["unshipped_heads"].get(str(i), [])) != ("nocrm-b0-fcn" in shipped)
    assert study.cache.configs == ["crm25p-b0-fcn", "nocrm-b0-fcn"]  # the figures of every head stay


@pytest.mark.parametrize("config", ["crm25p-b0-fcn", "nocrm-b0-fcn"], ids=["at-every-exit", "only-where-used"])
def test_changed_weights_are_caught_by_the_consistency_check(tiny_study, tmp_path, config):
    from mess_core import checkpoint

    _, _, out, _ = tiny_study
    net, _ = open_study(out).load_network()
    exit = next(i for i in range(1, net.num_exits) if config in net.heads[str(i)].keys())
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    payload = checkpoint.load(changed / "multi_exit.pt")
    # make the head predict, everywhere, the class it predicted least: whatever it learned, its counts must change
    cache = open_study(out).cache
    rarest = int(cache.pred[:3, cache.head_index(exit, config)].sum(0).argmin())
    key = f"{exit}.{config}.head.4.bias"
    bias = torch.full_like(payload["heads"][key], -100.0)
    bias[rarest] = 100.0
    payload["heads"][key] = bias
    checkpoint.save(changed / "multi_exit.pt", payload)
    assert any(f"exit {exit} {config}: counts differ" in p for p in open_study(changed).check_weights())


def test_a_head_the_weights_carry_but_the_cache_lacks_is_named(tiny_study, tmp_path):
    _, _, out, _ = tiny_study
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    study = open_study(changed)
    cache = study.cache
    cache.meta["absent_heads"] = {"3": ["crm25p-b0-fcn"]}  # a cache of another network, without that head
    cache.save(study.cache_path)
    problems = open_study(changed).check_weights(images=3)
    assert problems == [
        f"{study.cache_path}: has no counts for exit 3 crm25p-b0-fcn, which {study.weights_path} carries; the two "
        "come from different networks: rebuild the study"
    ]


def test_a_cache_of_another_exit_count_is_refused_by_name(tiny_study, tmp_path):
    from mess_core.evaluate.cache import EvaluationCache

    _, _, out, _ = tiny_study
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    study = open_study(changed)
    real = study.cache
    other = EvaluationCache.random(exits=real.num_exits - 1, classes=real.num_classes, images=4)
    other.meta.update({k: real.meta[k] for k in ("split", "input_size", "groups") if k in real.meta})
    other.save(study.cache_path)
    assert open_study(changed).check_weights(images=3) == [
        f"{study.cache_path}: has {real.num_exits - 1} exits but {study.weights_path} has {real.num_exits}; "
        "the two come from different networks: rebuild the study"
    ]


def test_results_and_fronts_are_what_the_engine_computes_from_the_cache(tiny_study):
    _, _, out, _ = tiny_study
    study = open_study(out)
    assert study.promise_rule == {"confidence": 0.9, "block": 10}  # the default rule, recorded with the study
    for mode in MODES:
        stored, fresh = study.results(mode), results_table(study.cache, mode=mode, **study.promise_rule)
        assert list(stored["row"]) == list(fresh["row"])
        np.testing.assert_allclose(stored["miou"], fresh["miou"], equal_nan=True)
        np.testing.assert_allclose(stored["gflops"], fresh["gflops"], equal_nan=True)
        for inst, row in zip(stored["instance"], stored.itertuples()):
            if inst is not None:
                assert evaluate(study.cache, inst).miou == pytest.approx(row.miou)
    fronts = study.fronts()
    assert {"budgeted", "MESS input-dependent", "naive policy"} <= set(fronts["series"])


def test_a_second_build_skips_finished_steps_and_an_interrupted_stage_resumes(tiny_study, tmp_path):
    config, work, _, _ = tiny_study
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    (copy / "exits" / "multi_exit.pt").unlink()  # as if stopped after the last checkpoint, before the result
    (copy / "multi_exit.pt").unlink()
    (copy / "val.npz").unlink()
    lines: list[str] = []
    out = build(config, work=copy, out=tmp_path / "study", log=lines.append)
    assert any("backbone: done earlier" in line for line in lines)
    assert any("exits: resuming from its checkpoint" in line for line in lines)
    assert open_study(out).verify() == []


def test_missing_files_and_foreign_formats_are_named(tiny_study, tmp_path):
    _, _, out, _ = tiny_study
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "fronts.json").unlink()
    with pytest.raises(StudyError, match=r"missing fronts.json.*rebuild it with `python -m mess_core study build"):
        open_study(broken)
    old = tmp_path / "old"
    shutil.copytree(out, old)
    manifest = json.loads((old / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format": "mess-study/0"}))
    with pytest.raises(StudyError, match=r"manifest.json: study format 'mess-study/0', this version reads"):
        open_study(old)
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    (changed / "results.json").write_text("[]")
    assert any("results.json: differs from the manifest" in p for p in open_study(changed).verify())
    with pytest.raises(StudyError, match=r"results.json: holds no 'budgeted' table"):
        open_study(changed).results("budgeted")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match="neither a study"):
        open_study(tmp_path / "empty")
    with pytest.raises(StudyError, match="no such folder"):
        open_study(tmp_path / "nowhere")


def test_a_run_folder_opens_as_a_study_computed_on_the_fly(tiny_study, tmp_path):
    _, work, _, _ = tiny_study
    run = tmp_path / "run"
    (run / "exits").mkdir(parents=True)
    shutil.copyfile(work / "exits" / "multi_exit.pt", run / "exits" / "multi_exit.pt")
    with pytest.raises(StudyError, match=r"no evaluation cache \(\*.npz\); make one with"):
        open_study(run)
    shutil.copyfile(work / "val.npz", run / "val.npz")
    study = open_study(run)
    assert not study.is_packed and study.cache.num_images == EvaluationCache.load(work / "val.npz").num_images
    assert list(study.results("budgeted")["row"])[0] == "Backbone"
    assert study.profile()["num_exits"] == 6


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nbogus: 1\n", "unknown setting"),
        ("name: 'a b'\n", "'name' must be letters"),
        ("name: x\nstages:\n  exits: {exit_loss: nope}\n", "stages.exits:"),
        ("name: x\nstages:\n  warmup: {}\n", "stages.warmup"),
        ("name: [x\n", "not valid YAML"),
        ("name: x\nheavy_configs: [banana]\n", "heavy_configs:"),
        ("name: x\nvariants:\n  a: {init: stage0}\n", "variants.a"),
    ],
)
def test_bad_configs_are_refused_before_any_training(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(StudyError, match=message):
        StudyConfig.from_yaml(path)


def test_a_work_folder_trained_with_other_settings_is_refused(tiny_study, tmp_path):
    config, work, _, _ = tiny_study
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    changed = tmp_path / "changed.yaml"
    changed.write_text(config.read_text().replace("backbone: {epochs: 1}", "backbone: {epochs: 2}"))
    with pytest.raises(StudyError, match=r"backbone: holds a run with other settings \(epochs: 1 there, 2 now\)"):
        build(changed, work=copy, out=tmp_path / "study", log=lambda _: None)


def test_stop_after_a_stage_leaves_the_rest_for_later(tiny_study, tmp_path):
    config, work, _, _ = tiny_study
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    lines: list[str] = []
    assert build(config, work=copy, out=tmp_path / "study", stop_after="pretrain", log=lines.append) == copy
    assert lines[-1].startswith("stopped after pretrain") and not (tmp_path / "study").exists()


def test_thresholds_tuned_on_val_are_also_reported_on_test(tiny_study):
    _, _, out, _ = tiny_study
    study = open_study(out)
    assert study.report_cache.meta["split"] == "test"
    table = study.results("input-dependent")
    for inst, row in zip(table["instance"], table.itertuples()):
        if inst is not None:
            assert evaluate(study.report_cache, inst).miou == pytest.approx(row.eval_miou)


def test_training_table_has_every_variant_and_exit(tiny_study):
    _, work, out, _ = tiny_study
    table = open_study(out).training_table()
    assert list(table["variant"]) == ["ce", "pfd", "pfd-no-stage1"]
    assert list(table["stage 1"]) == [True, True, False]
    assert [c for c in table.columns if c.startswith("exit ")] == [f"exit {i}" for i in range(1, 6)]
    detail = json.loads((work / "variants" / "ce" / "eval.json").read_text())
    assert table.loc[0, "exit 3"] == detail["exits"]["3"]["crm25p-b0-fcn"]["miou"]
    # without stage 1 the final exit is the plain backbone's: it differs from the pre-trained one
    assert table.loc[2, "final"] != table.loc[1, "final"]


def test_a_variant_with_stage_2s_own_settings_is_read_from_stage_2_not_trained_again(tiny_study):
    _, work, out, _ = tiny_study
    assert not (work / "variants" / "pfd").exists()
    table = open_study(out).training_table()
    main = json.loads((work / "exits" / "eval.json").read_text())
    pfd = table[table["variant"] == "pfd"].iloc[0]
    assert pfd["exit 2"] == main["exits"]["2"]["crm25p-b0-fcn"]["miou"]
    assert len(table) == 3  # one row per variant: only the variant space's configuration, not all of stage 2's


def test_latency_is_measured_for_every_early_exit_instance_against_the_original(tiny_study):
    _, _, out, _ = tiny_study
    study = open_study(out)
    latency = study.latency()
    table = study.results("input-dependent")
    early = {r.row for r in table.itertuples() if r.instance is not None and r.instance.exits}
    assert set(latency["variant"]) == {"original", "converted"} | early | {f"{n} (no exit)" for n in early}
    assert set(latency["batch"]) == {1, 2}


def test_exit_aware_training_from_scratch_skips_the_backbone_stage(tiny_study, tmp_path):
    config, _, _, _ = tiny_study
    scratch = tmp_path / "scratch.yaml"
    scratch.write_text(
        config.read_text().replace("  pfd-no-stage1: {exit_loss: pfd, init: backbone}\n", "")
        + "pretrain_from: scratch\n"
    )
    lines: list[str] = []
    work = tmp_path / "work"
    build(scratch, work=work, out=tmp_path / "study", stop_after="pretrain", log=lines.append)
    assert any("backbone: not trained on its own" in line for line in lines)
    assert not (work / "backbone").exists() and (work / "pretrain" / "model.pt").is_file()
    held = (work / "pretrain" / "config.yaml").read_text()
    assert "init: null" in held
    # a folder trained from a backbone is not taken for one trained from scratch
    with pytest.raises(StudyError, match="init"):
        build(config, work=work, out=tmp_path / "study", stop_after="pretrain", log=lambda _: None)
    with pytest.raises(StudyError, match="start from the backbone stage"):
        StudyConfig.from_dict(
            {"name": "x", "pretrain_from": "scratch", "variants": {"a": {"exit_loss": "pfd", "init": "backbone"}}}
        )


def test_a_run_written_before_a_setting_existed_counts_as_its_default(tiny_study, tmp_path):
    config, work, _, _ = tiny_study
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    held = copy / "backbone" / "config.yaml"
    held.write_text("\n".join(line for line in held.read_text().splitlines() if not line.startswith("class_balance")))
    lines: list[str] = []
    build(config, work=copy, out=tmp_path / "study", stop_after="backbone", log=lines.append)
    assert any("backbone: done earlier" in line for line in lines)


def test_the_manifest_says_which_groups_fed_which_step(tiny_study):
    _, _, out, _ = tiny_study
    data = open_study(out).manifest["data"]
    assert data["train"] == {"split": "train", "groups": {"train": 10}, "images": 10}
    assert data["tune"]["groups"] == {"val": 10} and data["report"]["groups"] == {"test": 10}
    assert data["shared_train_tune"] == [] and data["tune_on_training_groups"] is False


def test_a_report_split_that_was_not_on_the_build_machine_is_named_in_the_protocol_table(tiny_study):
    _, _, out, _ = tiny_study
    manifest = open_study(out).manifest
    missing = {**manifest, "data": {**manifest["data"], "report": None}}  # how a build records a split it lacks
    row = protocol_table(missing).iloc[-1]
    assert (row["split"], row["groups"], row["images"]) == ("test", "not on the build machine", 0)
    row = protocol_table({**missing, "config": "damaged"}).iloc[-1]
    assert row["groups"] == "not on the build machine" and pd.isna(row["split"])


def test_a_study_that_would_tune_on_scenes_it_trains_on_is_refused_unless_its_yaml_says_so(tiny_study, tmp_path):
    config, _, _, _ = tiny_study
    overlapping = tmp_path / "overlap.yaml"
    overlapping.write_text(config.read_text() + "cache_split: train+val\n")
    with pytest.raises(StudyError, match=r"tunes on group\(s\) train \(10 images\), which it also trains on"):
        build(overlapping, work=tmp_path / "work", out=tmp_path / "study", log=lambda _: None)
    assert not (tmp_path / "work").exists()  # refused before anything was written
    allowed = tmp_path / "allowed.yaml"
    allowed.write_text(overlapping.read_text() + "tune_on_training_groups: true\n")
    lines: list[str] = []
    build(allowed, work=tmp_path / "work2", out=tmp_path / "study", stop_after="backbone", log=lines.append)
    assert any("tune: synthetic train+val, groups train (10), val (10)" in line for line in lines)


def test_groups_select_the_images_every_step_reads(tmp_path):
    cfg = StudyConfig.from_dict(
        {
            "name": "g",
            "dataset": "synthetic",
            "data_options": {"length": 6},
            "train_split": "train+test",
            "train_groups": ["test"],
            "cache_split": "train+val",
            "cache_groups": ["val"],
        }
    )
    fields = cfg.stage_fields("pretrain")
    assert (fields["train_split"], fields["train_groups"]) == ("train+test", ("test",))
    assert (fields["val_split"], fields["val_groups"]) == ("train+val", ("val",))
    split, groups = cfg.selection("tune")
    data = cfg.eval_dataset(split, (32, 32), groups=groups)
    assert len(data) == 6 and {data.group_of(i) for i in range(6)} == {"val"}
    with pytest.raises(StudyError, match="cache_groups must list distinct group names"):
        StudyConfig.from_dict({"name": "g", "cache_groups": ["a", "a"]})
    with pytest.raises(StudyError, match="train_split"):
        StudyConfig.from_dict({"name": "g", "train_split": "train++val"})


def test_a_report_split_that_shares_groups_with_training_is_recorded_and_said():
    from mess_core.study.protocol import data_protocol, protocol_warning

    base = {"name": "r", "dataset": "synthetic", "data_options": {"length": 4}}
    assert protocol_warning({"data": data_protocol(StudyConfig.from_dict(base))}) is None
    mixed = data_protocol(StudyConfig.from_dict({**base, "report_split": "train+test"}))
    assert mixed["shared_train_report"] == ["train"] and mixed["shared_train_tune"] == []
    assert "report split holds group(s) train, which it also trained on" in protocol_warning({"data": mixed})
    del mixed["shared_train_report"]  # a manifest written before the build recorded it
    assert "report split holds group(s) train" in protocol_warning({"data": mixed})
    old = protocol_warning({"config": {"train_split": "train", "cache_split": "val"}})  # built before groups
    assert "built before groups (scenes) were recorded: it trained on 'train' and tuned on 'val'" in old


def test_camvid_studies_default_to_the_scene_disjoint_protocol_and_say_otherwise_explicitly():
    cfg = StudyConfig.from_dict({"name": "c", "dataset": "camvid", "data_root": "anywhere"})
    assert cfg.selection("train") == ("train+val", ("0016E5", "0001TP"))
    assert cfg.selection("tune") == ("train", ("0006R0",))
    assert cfg.selection("report") == ("test", ("Seq05VD",))  # test's other drive, 0001TP, is a training drive
    own = StudyConfig.from_dict({"name": "c", "dataset": "camvid", "data_root": "anywhere", "cache_split": "val"})
    assert own.selection("tune") == ("val", ())  # what the YAML says wins, step by step
    assert StudyConfig.from_dict({"name": "s"}).selection("tune") == ("val", ())
    shipped = StudyConfig.from_yaml(REPO / "studies" / "camvid-mobilenetv2-fcn.yaml")
    assert set(shipped.train_groups).isdisjoint(shipped.cache_groups)


def test_the_build_stores_the_transfer_check_of_every_mode_that_the_cache_gives(tiny_study):
    from mess_core.evaluate.instance import MODES
    from mess_core.search.transfer import of_mode, transfer_check

    _, _, out, _ = tiny_study
    study = open_study(out)
    again = transfer_check(study.cache, **study.promise_rule)
    for mode in MODES:
        stored, want = study.transfer_check(mode), of_mode(again, mode)
        assert list(stored["id"]) == list(want["id"]) and len(stored) > 0 and set(stored["mode"]) == {mode}
        np.testing.assert_allclose(stored["drop_pp"], want["drop_pp"])
        np.testing.assert_allclose(stored["speedup"], want["speedup"])
