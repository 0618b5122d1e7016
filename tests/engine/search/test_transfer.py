"""The transfer check: every results row tuned on one scene part of the tuning images and scored on another."""

import numpy as np
import pytest

from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import MODES, Instance, evaluate
from mess_core.search.problem import SearchSpace
from mess_core.search.report import results_table
from mess_core.search.transfer import of_mode, part_names, scene_parts, transfer_check, transfer_summary

SPACE = SearchSpace(th_pix=(0.5, 0.7), th_img=(0.3, 0.6, 0.9))


def test_parts_are_whole_groups_when_there_are_enough_else_runs_of_each_groups_frames():
    cache = EvaluationCache.random(images=10, seed=1)
    cache.meta["image_groups"] = ["x"] * 6 + ["y"] * 4
    parts = scene_parts(cache)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9]] and part_names(cache) == ["x", "y"]
    three = scene_parts(cache, 3)  # two groups cannot make three parts: runs of every group's frames
    assert [p.tolist() for p in three] == [[0, 1, 6, 7], [2, 3, 8], [4, 5, 9]]
    assert sorted(np.concatenate(three).tolist()) == list(range(10))


@pytest.fixture(scope="module")
def checked():
    cache = EvaluationCache.random(images=30, exits=4, configs=2, seed=7)
    return cache, transfer_check(cache, space=SPACE)


@pytest.mark.parametrize("mode", MODES)
def test_each_direction_is_the_row_searched_on_one_part_and_evaluated_on_the_other(checked, mode):
    cache, every = checked
    check = of_mode(every, mode)
    first, second = (cache.subset(p) for p in scene_parts(cache))
    table = results_table(first, mode=mode, space=SPACE, oracle=False)
    base = evaluate(second, Instance(mode))
    forward = check[check["tuned_on"] == part_names(cache)[0]]
    searched = [r for r in table.itertuples() if r.instance is not None]
    assert len(forward) == len(searched) > 1
    for r, (_, c) in zip(searched, forward.iterrows()):
        assert c["id"] == r.id.value and c["exits"] == r.exits
        there = evaluate(second, r.instance)
        assert c["drop_pp"] == pytest.approx(100 * (base.miou - there.miou))
        assert c["speedup"] == pytest.approx(base.cost / there.cost)
        if c["id"] == "min_cost_1pp":
            assert c["held"] == (c["drop_pp"] <= 1.0 + 1e-9)


def test_a_check_stored_before_it_covered_every_mode_holds_the_input_dependent_rows(checked):
    _, every = checked
    old = of_mode(every, "input-dependent").drop(columns="mode")
    assert of_mode(old, "input-dependent") is old and of_mode(old, "budgeted") is None


def test_the_summary_takes_every_direction_of_a_row(checked):
    _, every = checked
    check = of_mode(every, "input-dependent")
    summary = transfer_summary(check)
    row = summary.set_index("id").loc["min_cost_1pp"]
    both = check[check["id"] == "min_cost_1pp"]
    assert row["worst_drop_pp"] == pytest.approx(both["drop_pp"].max())
    assert row["held"] == bool(both["held"].all())
