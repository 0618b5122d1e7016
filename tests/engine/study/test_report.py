"""A study's tables and headline (mess_core.search.report) on a built study and on the shipped ones, and the results
table's rows identified by id whatever label they were stored under."""

import json
import shutil

import numpy as np
import pytest

from mess_core.cli import main
from mess_core.search.report import ROW_LABELS, Row, results_table, row_id, with_row_ids
from mess_core.study import StudyError, list_studies, open_study
from mess_core.study.report import TARGETS, end_to_end_table, headline, headline_figures, policy_comparison
from tests.paths import PRECOMPUTED


def test_the_report_command_prints_every_table(tiny_study, capsys):
    _, _, out, _ = tiny_study
    assert main(["study", "report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "End to end (input-dependent):" in text and "| Backbone |" in text
    assert "mIoU % (test)" in text and "ms/img b1" in text and "Training table" in text
    assert "Exit policies at equal accuracy" in text and "target >= 2x" in text and "oracle bound" in text
    # each mode's results table is followed by its own transfer check
    study = open_study(out)
    sections = {
        "input-dependent": ("End to end (input-dependent):", "\n\nbudgeted:"),
        "budgeted": ("\n\nbudgeted:", "\n\nanytime:"),
        "anytime": ("\n\nanytime:", "\n\ndrop pp:"),
    }
    for mode, (start, end) in sections.items():
        section = text.split(start, 1)[1].split(end, 1)[0]
        assert section.count("Transfer check:") == 1, mode
        for r in study.transfer_check(mode).itertuples():
            assert f"{r.drop_pp:.2f} pp, {r.speedup:.2f}x" in section, (mode, r.row)


def test_a_transfer_check_computed_for_a_study_searches_the_study_s_own_space(tiny_study, tmp_path):
    from mess_core.search.problem import SearchSpace
    from mess_core.search.transfer import of_mode, transfer_check

    _, _, out, _ = tiny_study
    copy = shutil.copytree(out, tmp_path / "one-exit")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["max_exits"] = 1  # as if built with one early exit at most
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "transfer.json").unlink()  # as if built before the build stored the check
    study = open_study(copy)
    assert study.search_space == SearchSpace(max_exits=1)
    found = study.transfer_check("input-dependent", compute=True)
    want = transfer_check(study.cache, modes=("input-dependent",), space=SearchSpace(max_exits=1), **study.promise_rule)
    assert list(found["exits"]) == list(of_mode(want, "input-dependent")["exits"])
    mess = found[found["id"].str.startswith(("max_acc", "min_cost"))]
    assert len(mess) and all(e.count(">") <= 1 for e in mess["exits"])  # one early exit at most, then the final


def test_a_study_stored_before_the_check_covered_every_mode_gets_the_others_computed():
    shipped = open_study(PRECOMPUTED / "camvid-mobilenetv2-fcn")
    assert "mode" not in json.loads((shipped.path / "transfer.json").read_text())[0]
    stored = shipped.transfer_check("input-dependent")
    assert len(stored) == 12 and shipped.transfer_check("budgeted") is None
    budgeted = shipped.transfer_check("budgeted", compute=True)
    assert set(budgeted["mode"]) == {"budgeted"} and list(budgeted["id"]) == list(stored["id"])
    assert shipped.transfer_check("anytime", compute=True)["tuned_on"].nunique() == 2


def test_policy_comparison_reads_the_fronts_at_equal_accuracy(tiny_study):
    _, _, out, _ = tiny_study
    study = open_study(out)
    table = policy_comparison(study, drops=(1.0,))
    fronts = study.fronts()
    mess = fronts[fronts["series"] == "MESS input-dependent"]
    base_miou = study.cache.head_miou()[study.cache.final_head]
    best = mess[mess["miou"] >= base_miou - 0.01 - 1e-12]["cost"].min()
    assert table.loc[0, "MESS (edge-masked)"] == round(study.cache.stage_gflops.sum() / best, 2)
    # the oracle bound is solved on the same space and also starts from the policy's own assignment
    assert table.loc[0, "oracle bound"] >= table.loc[0, "MESS (edge-masked)"] - 0.01
    assert table.loc[0, "MESS / oracle"] <= 1.0 + 1e-9


def test_every_row_has_an_id_and_todays_label():
    assert [r.value for r in Row] == [
        "backbone",
        "max_acc_1x",
        "min_cost_01pp",
        "min_cost_1pp",
        "uniform_1pp",
        "naive_1pp",
        "oracle_1pp",
    ]
    assert set(ROW_LABELS) == set(Row)
    assert Row.MIN_COST_1PP.label == "MESS min-cost <= 1pp drop"
    for row in Row:
        assert row_id(row.value) is row and row_id(row.label) is row
    assert row_id("original") is None and row_id(None) is None and row_id(float("nan")) is None


def test_a_fresh_table_carries_ids_next_to_its_labels(tiny_study):
    _, _, out, _ = tiny_study
    table = results_table(open_study(out).cache, mode="input-dependent")
    assert list(table["id"]) == list(Row)
    assert list(table["row"]) == [r.label for r in Row]


def test_the_built_study_stores_ids_and_reads_them_back(tiny_study):
    _, _, out, _ = tiny_study
    stored = json.loads((out / "results.json").read_text())["input-dependent"]
    assert [r["id"] for r in stored] == [r.value for r in Row]
    assert [r["row"] for r in stored] == [r.label for r in Row]  # what readers of earlier versions look up
    study = open_study(out)
    assert list(study.results("input-dependent")["id"]) == list(Row)
    latency = study.latency()
    deployed = latency[latency["id"].notna()]
    assert all(row_id(v) is i for v, i in zip(deployed["variant"], deployed["id"]))
    assert set(latency.loc[latency["id"].isna(), "variant"]) >= {"original", "converted"}


@pytest.mark.parametrize("path", list_studies(PRECOMPUTED), ids=lambda p: p.name)
def test_shipped_studies_stored_by_label_open_with_ids(path):
    study = open_study(path)
    for mode in ("budgeted", "anytime", "input-dependent"):
        table = study.results(mode)
        assert all(isinstance(i, Row) for i in table["id"])
        assert Row.BACKBONE in set(table["id"]) and Row.MIN_COST_1PP in set(table["id"])
    figures = headline_figures(study)
    assert set(figures) == {t.name for t in TARGETS} and np.isfinite(figures["gflops_1pp"])
    assert len(headline(study)) == len(TARGETS)
    assert list(end_to_end_table(study)[""]) == list(study.results("input-dependent")["row"])


def test_a_stored_label_this_version_does_not_know_is_named(tiny_study, tmp_path):
    _, _, out, _ = tiny_study
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    data = json.loads((changed / "results.json").read_text())
    for row in data["budgeted"]:
        row.pop("id")
    data["budgeted"][1]["row"] = "MESS at any cost"
    (changed / "results.json").write_text(json.dumps(data))
    with pytest.raises(StudyError, match=r"results.json: row 'MESS at any cost' is none this version knows"):
        open_study(changed).results("budgeted")
    assert list(open_study(changed).results("anytime")["id"]) == list(open_study(out).results("anytime")["id"])


def test_ids_come_from_labels_when_a_table_has_none():
    import pandas as pd

    frame = with_row_ids(pd.DataFrame({"row": ["Backbone", "oracle (exits of MESS <= 1pp)"], "miou": [0.5, 0.6]}))
    assert list(frame.columns) == ["id", "row", "miou"] and list(frame["id"]) == [Row.BACKBONE, Row.ORACLE_1PP]
