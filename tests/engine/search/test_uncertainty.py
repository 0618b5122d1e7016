"""The uncertainty of a promise (mess_core.search.uncertainty): the bootstrap interval of an instance's mIoU drop
against the backbone, checked against a slow loop over the same resamples, and the confidence-aware objective, checked
against brute force over the Pareto front."""

import json

import numpy as np
import pytest

from mess_core.cli import main
from mess_core.evaluate.cache import CacheError, EvaluationCache
from mess_core.evaluate.instance import Instance, KeptExit, evaluate
from mess_core.search.constrained import pareto_front, search
from mess_core.search.problem import Objective, SearchError, SearchSpace
from mess_core.search.report import format_table, interval_name, interval_texts, results_table, with_drop_intervals
from mess_core.search.uncertainty import (
    UncertaintyError,
    confident_choice,
    drop_interval,
    drop_intervals,
    image_heads,
    resample_weights,
)

SPACE = SearchSpace(th_pix=(0.5, 0.7, 0.9), th_img=(0.2, 0.4, 0.6, 0.8))


def _instances(cache: EvaluationCache) -> list[Instance]:
    """Instances of every mode, the backbone included."""
    return [
        Instance("budgeted"),
        Instance("budgeted", (KeptExit(1, cache.configs[0]),)),
        Instance("anytime", (KeptExit(2, cache.configs[1]),)),
        Instance.input_dependent([KeptExit(1, cache.configs[1], 0.4), KeptExit(2, cache.configs[0], 0.6)], th_pix=0.7),
    ]


def _slow_drops(cache: EvaluationCache, instance: Instance, weights: np.ndarray) -> np.ndarray:
    """The reference: for each resample, the cache of the drawn images (repeats included), the instance's and the
    backbone's mIoU by :func:`evaluate`, one resample at a time."""
    drops = []
    for row in weights.astype(int):
        drawn = cache.subset(np.repeat(np.arange(cache.num_images), row))
        drops.append(100 * (evaluate(drawn, Instance(instance.mode)).miou - evaluate(drawn, instance).miou))
    return np.asarray(drops)


# ------------------------------------------------------------------------------------------------ the interval
@pytest.mark.parametrize("seed", [0, 5])
def test_the_interval_equals_a_slow_loop_over_the_same_resamples(seed):
    cache = EvaluationCache.random(images=15, exits=3, configs=2, classes=4, seed=seed)
    weights = resample_weights(cache.num_images, 200, seed=seed)
    for inst in _instances(cache):
        slow = _slow_drops(cache, inst, weights)
        found = drop_interval(cache, inst, resamples=200, seed=seed, level=0.8, confidence=0.95)
        point = 100 * (evaluate(cache, Instance(inst.mode)).miou - evaluate(cache, inst).miou)
        assert found.point == pytest.approx(point, abs=1e-9)
        assert found.mean == pytest.approx(slow.mean(), abs=1e-9)
        assert (found.low, found.high) == pytest.approx(tuple(np.quantile(slow, [0.1, 0.9])), abs=1e-9)
        assert found.upper == pytest.approx(np.quantile(slow, 0.95), abs=1e-9)
        assert found.resamples == 200 and found.images == 15 and found.seed == seed


def test_a_class_missing_from_a_resample_is_left_out_as_evaluate_does():
    # class 3 lives in one image only: most resamples lack it, and its IoU must then be NaN (left out), not 0
    cache = EvaluationCache.random(images=8, exits=3, configs=2, classes=4, seed=2)
    for name in ("tp", "pred"):
        getattr(cache, name)[1:, :, 3] = 0
    cache.label[1:, 3] = 0
    weights = resample_weights(cache.num_images, 100, seed=1)
    assert (weights[:, 0] == 0).any()
    inst = _instances(cache)[3]
    slow = _slow_drops(cache, inst, weights)
    assert drop_interval(cache, inst, resamples=100, seed=1).mean == pytest.approx(slow.mean(), abs=1e-9)


def test_the_backbone_against_itself_has_a_zero_interval():
    cache = EvaluationCache.random(images=12, seed=1)
    found = drop_interval(cache, Instance("input-dependent"))
    assert (found.point, found.mean, found.low, found.high, found.upper) == (0, 0, 0, 0, 0)
    assert found.within(0.0)


def test_identical_images_give_a_zero_width_interval():
    cache = EvaluationCache.random(images=6, exits=3, configs=2, seed=3).subset([2] * 20)  # one image, 20 times
    for inst in _instances(cache):
        found = drop_interval(cache, inst, resamples=300)
        assert found.low == pytest.approx(found.point, abs=1e-9) and found.high == pytest.approx(found.point, abs=1e-9)
        assert found.upper == pytest.approx(found.point, abs=1e-9)


def test_the_upper_bound_rises_with_the_confidence_and_the_interval_with_the_level():
    cache = EvaluationCache.random(images=40, exits=4, configs=2, seed=7)
    inst = Instance("budgeted", (KeptExit(1, cache.configs[0]),))
    uppers = [drop_interval(cache, inst, confidence=c).upper for c in (0.5, 0.8, 0.9, 0.95, 0.99)]
    assert np.all(np.diff(uppers) >= 0) and uppers[-1] > uppers[0]
    widths = [(lambda f: f.high - f.low)(drop_interval(cache, inst, level=lv)) for lv in (0.5, 0.8, 0.9, 0.99)]
    assert np.all(np.diff(widths) >= 0) and widths[-1] > widths[0]
    at90 = drop_interval(cache, inst, level=0.9, confidence=0.9)
    assert at90.low <= at90.upper <= at90.high  # the one-sided 90% bound lies inside the central 90% interval


def test_a_fixed_seed_reproduces_the_figures_and_batches_agree_with_single_calls():
    cache = EvaluationCache.random(images=25, exits=3, configs=2, seed=4)
    insts = _instances(cache)
    assert drop_interval(cache, insts[3], seed=3) == drop_interval(cache, insts[3], seed=3)
    assert drop_interval(cache, insts[3], seed=3) != drop_interval(cache, insts[3], seed=4)
    batch = drop_intervals(cache, insts, seed=2)
    for inst, found in zip(insts, batch):
        single = drop_interval(cache, inst, seed=2)
        assert found.to_dict() == pytest.approx(single.to_dict())
    assert drop_intervals(cache, []) == []


def test_resample_weights_draw_every_image_count_with_replacement():
    w = resample_weights(30, 2000, seed=0)
    assert w.shape == (2000, 30) and (w.sum(1) == 30).all() and not w.flags.writeable
    assert abs(w.mean() - 1.0) < 1e-12 and (w == 0).mean() == pytest.approx((29 / 30) ** 30, abs=0.01)
    assert image_heads(EvaluationCache.random(images=5), Instance("budgeted")).tolist() == [4] * 5
    with pytest.raises(UncertaintyError):
        resample_weights(0)
    with pytest.raises(UncertaintyError, match="level"):
        drop_interval(EvaluationCache.random(), Instance("budgeted"), level=1.0)


def test_the_instance_file_fields_are_json_ready():
    found = drop_interval(EvaluationCache.random(images=10, seed=2), Instance("budgeted"))
    data = json.loads(json.dumps(found.to_dict()))
    assert {"drop_point_pp", "drop_low_pp", "drop_high_pp", "drop_upper_pp", "confidence", "resamples"} <= set(data)
    assert "90% interval" in found.describe()


# ------------------------------------------------------------------------------------------------ subsets
def test_a_subset_of_images_is_the_cache_of_those_images():
    cache = EvaluationCache.random(images=10, exits=3, configs=2, seed=5)
    first, second = cache.subset(range(5)), cache.subset(np.arange(5, 10))
    assert first.num_images == 5 and first.meta["images"] == [f"img{i}" for i in range(5)]
    first.validate()
    inst = _instances(cache)[3]
    whole = evaluate(cache, inst)
    halves = [evaluate(part, inst) for part in (first, second)]
    assert np.concatenate([h.exit_taken for h in halves]).tolist() == whole.exit_taken.tolist()
    assert (first.tp.sum(0) + second.tp.sum(0) == cache.tp.sum(0)).all()
    assert cache.subset([9, 9]).label.tolist() == [cache.label[9].tolist()] * 2
    assert cache.num_images == 10  # the original is untouched
    for bad in ([], [10], [-11]):
        with pytest.raises(CacheError, match="subset"):
            cache.subset(bad)


# ------------------------------------------------------------------------------------------------ the objective
def _brute_force(cache, mode, max_drop, confidence):
    """Every front instance, cheapest first: the first whose point drop and one-sided bound both stay within
    max_drop (computed one at a time); the backbone when none does."""
    front = pareto_front(cache, mode=mode, space=SPACE).sort_values("cost", kind="stable")
    base = evaluate(cache, Instance(mode)).miou
    for _, row in front.iterrows():
        if row["miou"] < base - max_drop / 100 - 1e-12:
            continue
        if drop_interval(cache, row["instance"], confidence=confidence).upper <= max_drop + 1e-9:
            return row["instance"], row["cost"]
    return Instance(mode), evaluate(cache, Instance(mode)).cost


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", ["input-dependent", "budgeted"])
def test_the_confident_search_equals_brute_force_over_the_front(seed, mode):
    cache = EvaluationCache.random(images=24, exits=4, configs=2, seed=seed)
    for max_drop in (0.5, 2.0, 5.0):
        for confidence in (0.6, 0.9):
            found = search(
                cache, Objective("min-cost", max_drop=max_drop, confidence=confidence), mode=mode, space=SPACE
            )
            instance, cost = _brute_force(cache, mode, max_drop, confidence)
            assert found.instance == instance and found.cost == pytest.approx(cost)
            assert found.cost == pytest.approx(evaluate(cache, found.instance).cost)
            assert found.miou == pytest.approx(evaluate(cache, found.instance).miou)
            if found.interval is not None:
                assert found.interval.upper <= max_drop + 1e-9 and found.interval.confidence == confidence
            plain = search(cache, Objective("min-cost", max_drop=max_drop), mode=mode, space=SPACE)
            assert found.cost >= plain.cost - 1e-9  # a surer promise never costs less


def test_a_higher_confidence_never_costs_less():
    cache = EvaluationCache.random(images=30, exits=4, configs=2, seed=9)
    front = pareto_front(cache, space=SPACE)
    costs = []
    for confidence in (0.5, 0.7, 0.9, 0.99):
        choice = confident_choice(cache, front, 2.0, confidence)
        costs.append(front["cost"].iloc[choice.row] if choice.row is not None else np.inf)
        assert list(choice.rows) == sorted(choice.rows, key=lambda i: front["cost"].iloc[i])
    assert np.all(np.diff(costs) >= 0)


def test_the_confidence_is_validated():
    for bad in (0.4, 1.0, 1.5, -0.1, True):
        with pytest.raises(SearchError, match="confidence"):
            Objective("min-cost", max_drop=1.0, confidence=bad)
    with pytest.raises(SearchError, match="min-cost only"):
        Objective("max-acc", budget=1.0, confidence=0.9)
    assert "at 90% confidence" in Objective("min-cost", max_drop=1.0, confidence=0.9).describe()


# ------------------------------------------------------------------------------------------------ where people see it
def test_the_search_command_shows_intervals_and_writes_them(tmp_path, capsys):
    path = EvaluationCache.random(images=30, exits=4, configs=2, seed=3).save(tmp_path / "val.npz")
    out = tmp_path / "inst.json"
    assert (
        main(
            [
                "search",
                "--cache",
                str(path),
                "--max-drop",
                "2",
                "--confidence",
                "0.9",
                "--th-pix",
                "0.5,0.7",
                "--th-img",
                "0.3,0.6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "at 90% confidence" in text and "drop pp [90%]" in text and "bootstrap interval" in text
    data = json.loads(out.read_text())
    sure = data["tuned"]["uncertainty"]
    assert sure["confidence"] == 0.9 and sure["drop_upper_pp"] <= 2 + 1e-9
    assert sure["drop_point_pp"] == pytest.approx(
        100 * (evaluate(EvaluationCache.load(path), Instance("input-dependent")).miou - data["tuned"]["miou"])
    )
    for bad in ("1", "0.3", "x"):
        with pytest.raises(SystemExit):
            main(["search", "--cache", str(path), "--confidence", bad])
    assert main(["search", "--cache", str(path), "--objective", "pareto", "--confidence", "0.9"]) == 2


def test_results_tables_carry_each_rows_interval():
    cache = EvaluationCache.random(images=20, exits=4, configs=2, seed=2)
    table = with_drop_intervals(results_table(cache, space=SPACE), cache)
    has = table["instance"].notna()
    assert np.isfinite(table.loc[has, "drop_low"]).all() and table.loc[~has, "drop_pp"].isna().all()
    assert (table["drop_low"][has] <= table["drop_pp"][has] + 1e-9).all()
    assert interval_texts(table)[0] == "0.00 [0.00, 0.00]" and interval_texts(table)[-1] == "-"
    assert "drop pp [90%]" in format_table(table)
    assert table.attrs["drop_block"] is None and interval_name(table) == "90% interval"
    scenes = with_drop_intervals(table, cache, block=4)  # 5 blocks of 4 images: a study's own rule
    row = scenes[has].iloc[-1]
    want = drop_interval(cache, row["instance"], block=4)
    assert (row["drop_low"], row["drop_high"]) == pytest.approx((want.low, want.high))
    assert interval_name(scenes) == "90% interval, scene blocks of 4"


def test_a_shipped_study_reports_intervals_without_a_rebuild():
    from mess_core.study import open_study
    from mess_core.study.report import markdown_report
    from tests.paths import PRECOMPUTED

    study = open_study(PRECOMPUTED / "synthetic-mobilenetv2-fcn")
    assert study.verify() == []
    text = markdown_report(study)
    assert "drop pp [90% interval] (val)" in text and "| Backbone | " in text and "0.00 [0.00, 0.00]" in text
    assert "bootstrap interval over the" in text


def test_the_predictive_bound_for_a_fresh_sample_equals_a_slow_loop_and_is_wider():
    cache = EvaluationCache.random(images=14, exits=3, configs=2, classes=4, seed=6)
    inst = _instances(cache)[3]
    here = resample_weights(cache.num_images, 150, seed=2)
    fresh = resample_weights(cache.num_images, 150, seed=2, size=7)
    assert (fresh.sum(1) == 7).all() and not np.array_equal(resample_weights(14, 150, 2, size=14), here)
    point = drop_interval(cache, inst).point
    slow = point + _slow_drops(cache, inst, fresh) - _slow_drops(cache, inst, here)
    found = drop_interval(cache, inst, resamples=150, seed=2, fresh_images=7)
    assert found.fresh_images == 7 and "fresh sample of 7" in found.describe()
    assert found.upper == pytest.approx(np.quantile(slow, 0.9), abs=1e-9)
    assert (found.low, found.high) == pytest.approx(tuple(np.quantile(slow, [0.05, 0.95])), abs=1e-9)
    big = EvaluationCache.random(images=60, exits=3, configs=2, seed=6)
    for inst in _instances(big)[1:]:
        plain, ahead = drop_interval(big, inst), drop_interval(big, inst, fresh_images=60)
        assert ahead.high - ahead.low > plain.high - plain.low and ahead.upper > plain.upper
    same = cache.subset([3] * 10)
    found = drop_interval(same, _instances(same)[3], fresh_images=5)
    assert found.low == pytest.approx(found.point) and found.upper == pytest.approx(found.point)


def test_the_search_command_bounds_a_fresh_sample_when_asked(tmp_path, capsys):
    path = EvaluationCache.random(images=30, exits=4, configs=2, seed=3).save(tmp_path / "val.npz")
    out = tmp_path / "inst.json"
    argv = [
        "search",
        "--cache",
        str(path),
        "--max-drop",
        "2",
        "--th-pix",
        "0.5,0.7",
        "--th-img",
        "0.3,0.6",
        "--out",
        str(out),
    ]
    assert main(argv + ["--fresh-images", "30"]) == 2  # needs --confidence
    assert main(argv + ["--confidence", "0.9", "--fresh-images", "30"]) == 0
    assert "for a fresh sample of 30 images" in capsys.readouterr().out
    tuned = json.loads(out.read_text())["tuned"]
    assert tuned["uncertainty_fresh"]["fresh_images"] == 30 and tuned["uncertainty_fresh"]["drop_upper_pp"] <= 2 + 1e-9
    assert tuned["uncertainty_fresh"]["drop_upper_pp"] >= tuned["uncertainty"]["drop_upper_pp"] - 1e-9


def test_the_thresholds_page_figures_carry_the_drop_interval():
    from app.views.thresholds import threshold_summary

    cache = EvaluationCache.random(images=20, exits=3, configs=2, seed=1)
    inst = _instances(cache)[3]
    figures = threshold_summary(cache, inst)
    assert figures.drop_interval == drop_interval(cache, inst)
    assert figures.drop_interval.point == pytest.approx(figures.drop_pp)
    assert "drop_interval" not in figures.scalars()  # the downloaded instance's figures are unchanged


def test_scene_blocks_resample_whole_runs_of_frames_and_equal_a_slow_loop_over_the_drawn_blocks():
    from mess_core.search.uncertainty import scene_blocks

    cache = EvaluationCache.random(images=12, exits=3, configs=2, classes=4, seed=3)
    cache.meta["image_groups"] = ["a"] * 7 + ["b"] * 5
    blocks = scene_blocks(cache, 3)
    assert blocks.tolist() == [0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 4]  # runs never cross a group
    weights = resample_weights(cache.num_images, 120, seed=1, blocks=blocks)
    for b in range(5):  # every image of a block is drawn as often as its block
        members = np.flatnonzero(blocks == b)
        assert (weights[:, members] == weights[:, members[:1]]).all()
    inst = _instances(cache)[3]
    slow = _slow_drops(cache, inst, weights)
    found = drop_interval(cache, inst, resamples=120, seed=1, block=3)
    assert found.block == 3 and "scene blocks of 3" in found.describe()
    assert found.mean == pytest.approx(slow.mean(), abs=1e-9)
    assert found.upper == pytest.approx(np.quantile(slow, 0.9), abs=1e-9)
    # a fresh sample of 6 images is round(6 / 2.4) = 2 fresh blocks (5 blocks of 2.4 images on average)
    fresh = resample_weights(cache.num_images, 50, seed=1, size=6, blocks=blocks)
    assert (fresh[:, [0, 3, 6, 7, 10]].sum(1) == 2).all()
    with pytest.raises(UncertaintyError, match="scene block"):
        scene_blocks(cache, 0)
    with pytest.raises(SearchError, match="block needs a confidence"):
        Objective("min-cost", max_drop=1.0, block=10)


def test_frames_that_move_together_widen_the_interval_when_resampled_as_scenes():
    # six scenes of five identical frames each: as single images the split looks like thirty independent draws
    cache = EvaluationCache.random(images=6, exits=3, configs=2, classes=4, seed=9).subset(np.repeat(np.arange(6), 5))
    cache.meta["image_groups"] = ["a"] * 30
    inst = _instances(cache)[1]
    frames, scenes = drop_interval(cache, inst), drop_interval(cache, inst, block=5)
    assert scenes.high - scenes.low > frames.high - frames.low


def test_too_few_scene_blocks_to_resample_fall_back_to_single_images():
    from mess_core.search.uncertainty import MIN_BLOCKS

    cache = EvaluationCache.random(images=10, exits=3, configs=2, classes=4, seed=2)
    inst = _instances(cache)[1]
    one_block = drop_interval(cache, inst, block=10)  # every resample would draw the same ten images
    assert one_block == drop_interval(cache, inst) and one_block.block is None
    assert one_block.high > one_block.low
    enough = drop_interval(cache, inst, block=10 // MIN_BLOCKS)
    assert enough.block == 10 // MIN_BLOCKS and "scene blocks of 2" in enough.describe()


def test_a_results_table_can_keep_its_promises_for_fresh_scenes_and_a_study_says_so():
    from mess_core.study import StudyConfig, StudyError

    cache = EvaluationCache.random(images=30, exits=4, configs=2, seed=3)
    cache.meta["image_groups"] = ["a"] * 15 + ["b"] * 15
    table = results_table(cache, space=SPACE, confidence=0.9, block=5, oracle=False)
    wanted = Objective("min-cost", max_drop=1.0, confidence=0.9, fresh_images=30, block=5)
    row = table.set_index("id").loc["min_cost_1pp"]
    assert row["instance"] == search(cache, wanted, space=SPACE).instance
    assert table.attrs == {"confidence": 0.9, "block": 5}
    plain = results_table(cache, space=SPACE, oracle=False).set_index("id")
    assert plain.loc["max_acc_1x", "instance"] == table.set_index("id").loc["max_acc_1x", "instance"]
    # a study keeps its promises for fresh scenes unless its YAML says otherwise; null confidence: the plain search
    default = StudyConfig.from_dict({"name": "x"})
    assert (default.promise_confidence, default.promise_block) == (0.9, 10)
    plain_study = StudyConfig.from_dict({"name": "x", "promise_confidence": None})
    assert (plain_study.promise_confidence, plain_study.promise_block) == (None, None)
    assert StudyConfig.from_dict({"name": "x", "promise_confidence": 0.95, "promise_block": 1}).promise_block == 1
    with pytest.raises(StudyError, match="promise_block needs promise_confidence"):
        StudyConfig.from_dict({"name": "x", "promise_confidence": None, "promise_block": 10})
