"""The search against brute force, the thresholds' monotonicity, the instance file, the peers and the results table."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, InstanceError, KeptExit, evaluate, exit_histogram, output_costs
from mess_core.evaluate.policy import ConfidencePolicy
from mess_core.search.collector import Collector
from mess_core.search.constrained import pareto_front, search, uniform_exit
from mess_core.search.problem import Objective, SearchError, SearchSpace
from mess_core.search.report import all_fronts, format_table, results_table

OBJECTIVES = [
    Objective("min-cost", max_drop=0.0),
    Objective("min-cost", max_drop=1.0),
    Objective("min-cost", max_drop=5.0),
    Objective("max-acc", budget=0.6),
    Objective("max-acc", budget=1.0),
    Objective("max-acc", budget=1.3),
]


def every_instance(cache, space, mode):
    """Brute force: every instance of the space, with no pruning at all."""
    exits = list(range(1, cache.num_exits))
    if mode != "input-dependent":
        return [Instance(mode)] + [Instance(mode, (KeptExit(e, c),)) for e in exits for c in cache.configs]
    out = [Instance.input_dependent([], th_pix=space.th_pix[0], naive=space.policy == "naive")]
    for k in range(1, space.max_exits + 1):
        for subset in itertools.combinations(exits, k):
            for configs in itertools.product(cache.configs, repeat=k):
                for ths in itertools.product(space.th_img, repeat=k):
                    for p in space.th_pix if space.policy != "naive" else [0.5]:
                        out.append(
                            Instance(
                                "input-dependent",
                                tuple(KeptExit(e, c, t) for e, c, t in zip(subset, configs, ths)),
                                ConfidencePolicy(
                                    th_pix=p,
                                    edges=None if space.policy != "mess" else space.edges,
                                    naive=space.policy == "naive",
                                ),
                            )
                        )
    return out


def brute_force_best(cache, instances, objective, unit="gflops"):
    out = [evaluate(cache, i, unit=unit) for i in instances]
    cost = np.array([o.cost for o in out])
    miou = np.array([o.miou for o in out])
    final = evaluate(cache, Instance("budgeted"), unit=unit).miou
    if objective.kind == "min-cost":
        ok = miou >= final - objective.max_drop / 100 - 1e-12
        best_cost = cost[ok].min()
        return best_cost, miou[ok & np.isclose(cost, best_cost, rtol=0, atol=1e-12)].max()
    ok = cost <= objective.budget * evaluate(cache, Instance("budgeted"), unit=unit).cost + 1e-12
    if not ok.any():
        return None
    best = miou[ok].max()
    return cost[ok & np.isclose(miou, best, rtol=0, atol=1e-12)].min(), best


def brute_force_front(cache, instances, unit="gflops"):
    pts = sorted(
        {(round(o.cost, 12), round(o.miou, 12)) for o in (evaluate(cache, i, unit=unit) for i in instances)},
        key=lambda p: (p[0], -p[1]),
    )
    front, best = [], -np.inf
    for c, m in pts:
        if m > best + 1e-12:
            front.append((c, m))
            best = m
    return front


CASES = [  # (seed, N exits, configs, max_exits, policy)
    (0, 4, 2, 1, "mess"),
    (1, 4, 2, 2, "mess"),
    (2, 4, 2, 3, "mess"),
    (3, 5, 2, 2, "plain"),
    (4, 4, 3, 2, "naive"),
]


@pytest.mark.parametrize("seed,exits,configs,max_exits,policy", CASES)
def test_input_dependent_search_equals_brute_force(seed, exits, configs, max_exits, policy):
    cache = EvaluationCache.random(images=14, exits=exits, configs=configs, classes=3, seed=seed)
    space = SearchSpace(th_pix=(0.5, 0.7), th_img=(0.2, 0.45, 0.7, 0.9), max_exits=max_exits, policy=policy)
    assert_search_equals_brute_force(cache, space)


@pytest.mark.parametrize("policy", ["mess", "plain", "naive"])
def test_search_by_latency_equals_brute_force_counting_each_decision(policy):
    """In milliseconds an input-dependent instance also pays its rule's measured decision at every kept exit an
    image reaches (``meta["decision_ms"]``); the search and the brute force score the same costs."""
    cache = EvaluationCache.random(images=14, exits=4, configs=2, classes=3, seed=5, latency=True)
    space = SearchSpace(th_pix=(0.5, 0.7), th_img=(0.2, 0.45, 0.7, 0.9), max_exits=2, policy=policy)
    assert_search_equals_brute_force(cache, space, unit="ms")


def test_each_kept_exit_an_image_reaches_costs_its_rules_decision_in_milliseconds_only():
    cache = EvaluationCache.random(images=9, exits=4, configs=2, classes=3, seed=3, latency=True)
    decide = cache.meta["decision_ms"]
    assert decide["mess"] > 0 and cache.decision_cost("mess", "gflops") == 0.0
    kept = (KeptExit(1, cache.configs[0], 0.6), KeptExit(3, cache.configs[1], 0.4))
    for policy, rule in [("mess", ConfidencePolicy()), ("naive", ConfidencePolicy(naive=True))]:
        instance = Instance("input-dependent", kept, rule)
        reach, head = cache.reach_cost("ms"), cache.head_cost("ms")
        first, second = head[0, 0] + decide[policy], head[2, 1] + decide[policy]
        expected = [reach[1] + first, reach[3] + first + second, reach[-1] + first + second]
        assert output_costs(cache, instance, unit="ms") == pytest.approx(expected)
    static = Instance("budgeted", (KeptExit(2, cache.configs[0]),))  # no rule, no decision
    assert output_costs(cache, static, unit="ms")[0] == pytest.approx(cache.reach_cost("ms")[2] + head[1, 0])
    without = EvaluationCache.random(images=9, exits=4, configs=2, classes=3, seed=3, latency=True)
    del without.meta["decision_ms"]  # a cache built before decisions were measured costs them nothing
    assert output_costs(without, Instance("input-dependent", kept, ConfidencePolicy()), unit="ms")[-1] == pytest.approx(
        cache.reach_cost("ms")[-1] + head[0, 0] + head[2, 1]
    )


def test_search_equals_brute_force_with_a_class_nobody_labelled():
    """A class with no labelled pixel scores 0 where some output predicts it and leaves the mean where none does:
    the search's fast scoring must follow the same rule."""
    cache = EvaluationCache.random(images=14, exits=4, configs=2, classes=4, seed=12)
    rng = np.random.default_rng(12)
    cache.label[:, 3] = 0
    cache.tp[:, :, 3] = 0
    cache.pred[:, :, 3] = 0
    cache.pred[:, :, 3][rng.random(cache.pred.shape[:2]) < 0.08] = 5  # a few heads predict it on a few images
    assert_search_equals_brute_force(cache, SearchSpace(th_pix=(0.5, 0.7), th_img=(0.2, 0.45, 0.7, 0.9)))


def test_search_equals_brute_force_when_an_early_head_is_as_good_as_the_final():
    """Where an early head predicts exactly what the final exit does, the accuracy bound is tight: a search at
    0 pp drop must still find that head (a bound that errs low by any margin would skip it)."""
    cache = EvaluationCache.random(images=14, exits=4, configs=2, classes=3, seed=14)
    perfect = cache.head_index(2, 1)
    cache.tp[:, perfect] = cache.tp[:, cache.final_head]
    cache.pred[:, perfect] = cache.pred[:, cache.final_head]
    space = SearchSpace(th_pix=(0.5, 0.7), th_img=(0.0, 0.45, 0.9))
    assert_search_equals_brute_force(cache, space)
    # the cheapest way to lose nothing: every image leaves at that head (th_img 0)
    best = search(cache, Objective("min-cost", max_drop=0.0), space=space)
    assert best.instance.exits == (KeptExit(2, cache.configs[1], 0.0),)
    assert best.cost == pytest.approx(cache.stage_gflops[:2].sum() + cache.head_gflops[1, 1], abs=1e-12)


def test_search_equals_brute_force_when_counts_exceed_float32():
    """Split-wide counts beyond 2**24 pixels are not exact in float32: the search must switch to float64."""
    cache = EvaluationCache.random(images=14, exits=4, configs=2, classes=3, pixels=2**23, seed=13)
    assert cache.label.sum(0).max() > 2**24
    assert_search_equals_brute_force(cache, SearchSpace(th_pix=(0.5, 0.7), th_img=(0.2, 0.45, 0.7, 0.9)))


@pytest.mark.parametrize(
    "objective",
    [Objective("min-cost", max_drop=1.0), Objective("max-acc", budget=1.0), Objective("pareto")],
    ids=lambda o: o.kind,
)
def test_the_approximate_shortlist_decides_exactly_as_scoring_everything(objective):
    """The search scores every candidate with an mIoU within ``tol`` of the exact one and computes the exact mIoU
    only for the collector's shortlist. Offering only the shortlist must decide exactly as offering every candidate,
    near-ties (closer than ``tol``) and equal costs included."""
    rng = np.random.default_rng(0)
    tol = 1e-6
    for _ in range(400):
        n = 40
        cost = rng.choice(np.linspace(0.6, 1.2, 5), n) + rng.choice([0.0, 1e-13, 1e-9], n)
        miou = 0.5 + rng.choice([-1, 0, 1], n) * rng.choice([0.0, 1e-12, 1e-7, 1e-6, 3e-6, 1e-3], n)
        approx = miou + rng.uniform(-tol, tol, n)
        valid = rng.random(n) < 0.8
        everything, shortlisted = (Collector(objective, target_miou=0.5, budget_cost=1.0) for _ in range(2))
        every = np.flatnonzero(valid)
        everything.offer(cost[every], miou[every], key=lambda i: int(every[i]))
        short = np.flatnonzero(shortlisted.shortlist(cost, approx, valid, tol))
        assert set(short) <= set(every)
        shortlisted.offer(cost[short], miou[short], key=lambda i: int(short[i]))
        if objective.kind == "pareto":
            want, got = everything.front(), shortlisted.front()
            assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
        elif everything.best is None:
            assert shortlisted.best is None
        else:
            assert shortlisted.best[:2] == pytest.approx(everything.best[:2], abs=1e-12)


def assert_search_equals_brute_force(cache, space, unit="gflops"):
    """The search gives the best (and the Pareto front of) every instance of the space, enumerated with no pruning."""
    policy = space.policy
    instances = every_instance(cache, space, "input-dependent")
    assert space.size(cache, "input-dependent") == len(instances) if policy != "naive" else True
    for objective in OBJECTIVES:
        result = search(cache, objective, mode="input-dependent", space=space, unit=unit)
        expected = brute_force_best(cache, instances, objective, unit)
        if expected is None:
            assert result.instance is None
            continue
        assert (result.cost, result.miou) == pytest.approx(expected, abs=1e-12), objective
        # the returned instance really has the figures reported
        check = evaluate(cache, result.instance, unit=unit)
        assert (check.cost, check.miou) == pytest.approx((result.cost, result.miou), abs=1e-12)
        assert_thresholds_are_the_highest_with_their_outcome(cache, result.instance, space.th_img)
    front = search(cache, Objective("pareto"), mode="input-dependent", space=space, unit=unit).front
    got = [(round(c, 12), round(m, 12)) for c, m in zip(front["cost"], front["miou"])]
    assert got == brute_force_front(cache, instances, unit)
    for instance in front["instance"]:
        assert_thresholds_are_the_highest_with_their_outcome(cache, instance, space.th_img)


def assert_thresholds_are_the_highest_with_their_outcome(cache, instance, grid):
    """Of the th_img values that send every image to the same output, the search reports the highest (the most
    cautious on other data): raising any of them to the next grid value changes where some image leaves."""
    taken = evaluate(cache, instance).exit_taken
    for m, kept in enumerate(instance.exits):
        higher = [t for t in sorted(grid) if t > kept.th_img]
        if higher:
            exits = list(instance.exits)
            exits[m] = KeptExit(kept.exit, kept.config, higher[0])
            raised = Instance(instance.mode, tuple(exits), instance.policy)
            assert not np.array_equal(evaluate(cache, raised).exit_taken, taken), (instance.describe(), m)


@pytest.mark.parametrize("mode", ["budgeted", "anytime"])
def test_single_exit_modes_equal_brute_force(mode):
    cache = EvaluationCache.random(images=10, exits=5, configs=3, seed=7)
    instances = every_instance(cache, SearchSpace(), mode)
    for objective in OBJECTIVES:
        result = search(cache, objective, mode=mode)
        expected = brute_force_best(cache, instances, objective)
        assert (result.cost, result.miou) == pytest.approx(expected, abs=1e-12)
    front = search(cache, Objective("pareto"), mode=mode).front
    assert [(round(c, 12), round(m, 12)) for c, m in zip(front["cost"], front["miou"])] == brute_force_front(
        cache, instances
    )


def test_lossless_pruning_really_skips_work_on_a_larger_space():
    cache = EvaluationCache.random(images=30, exits=6, configs=4, seed=11)
    space = SearchSpace(th_pix=(0.5, 0.7, 0.9), th_img=(0.1, 0.3, 0.5, 0.7, 0.9), max_exits=2)
    result = search(cache, Objective("min-cost", max_drop=1.0), space=space)
    assert result.evaluated < result.space_size / 2


def test_anytime_reports_every_output_and_the_total_cost():
    cache = EvaluationCache.random(images=10, exits=4, configs=2, seed=5)
    inst = Instance("anytime", (KeptExit(1, cache.configs[0]), KeptExit(2, cache.configs[1])))
    out = evaluate(cache, inst)
    assert [s["exit"] for s in out.steps] == [1, 2, 4]
    costs = [s["cost"] for s in out.steps]
    assert costs == sorted(costs) and out.total_cost == pytest.approx(costs[-1])
    assert out.cost == pytest.approx(costs[0]) and out.miou == pytest.approx(out.steps[0]["miou"])
    head = cache.head_gflops
    assert out.total_cost == pytest.approx(cache.stage_gflops.sum() + head[0, 0] + head[1, 1])


# ------------------------------------------------------------------------------------------------ monotonicity
def _instance(cache, th1, th2, th_pix):
    return Instance.input_dependent(
        [KeptExit(1, cache.configs[0], th1), KeptExit(3, cache.configs[1], th2)], th_pix=th_pix
    )


@pytest.mark.parametrize("seed", range(4))
def test_cost_never_falls_as_any_threshold_rises(seed):
    cache = EvaluationCache.random(images=25, exits=5, configs=2, seed=seed)
    grid = np.linspace(0, 1, 11)
    for a, b in itertools.product(grid, grid):
        costs = [evaluate(cache, _instance(cache, a, b, p)).cost for p in cache.th_pix_grid]
        assert np.all(np.diff(costs) >= -1e-12)  # stricter pixels: fewer confident images, later exits
    for p in cache.th_pix_grid:
        table = np.array([[evaluate(cache, _instance(cache, a, b, p)).cost for b in grid] for a in grid])
        assert np.all(np.diff(table, axis=0) >= -1e-12) and np.all(np.diff(table, axis=1) >= -1e-12)


def test_accuracy_never_falls_as_thresholds_rise_when_later_outputs_are_better_per_image():
    """Raising a threshold only sends images to later outputs; when each later output is at least as good on every
    image and class (here: a perfect final exit), mIoU cannot fall."""
    cache = EvaluationCache.random(images=25, exits=4, configs=2, seed=3)
    cache.tp[:, cache.final_head] = cache.label
    cache.pred[:, cache.final_head] = cache.label
    grid = np.linspace(0, 1, 21)
    for p in cache.th_pix_grid:
        mious = [
            evaluate(cache, Instance.input_dependent([KeptExit(2, cache.configs[1], t)], th_pix=p)).miou for t in grid
        ]
        assert np.all(np.diff(mious) >= -1e-12)
    by_pix = [
        evaluate(cache, Instance.input_dependent([KeptExit(2, cache.configs[1], 0.4)], th_pix=p)).miou
        for p in cache.th_pix_grid
    ]
    assert np.all(np.diff(by_pix) >= -1e-12)


# ------------------------------------------------------------------------------------------------ peers
@pytest.mark.parametrize("unit", ["gflops", "ms"])
def test_uniform_exit_equals_brute_force_over_its_own_space(unit):
    cache = EvaluationCache.random(images=12, exits=4, configs=3, seed=9, latency=True)
    space = SearchSpace(th_pix=(0.5, 0.9), th_img=(0.3, 0.6, 0.9))
    objective = Objective("min-cost", max_drop=2.0)
    result = uniform_exit(cache, objective, space=space, unit=unit)
    instances = [
        Instance.input_dependent([KeptExit(e, c, t) for e in (1, 2, 3)], th_pix=p)
        for c in cache.configs
        for p in space.th_pix
        for t in space.th_img
    ]
    expected = brute_force_best(cache, instances, objective, unit)
    assert (result.cost, result.miou) == pytest.approx(expected, abs=1e-12)
    assert len({e.config for e in result.instance.exits}) == 1


# ------------------------------------------------------------------------------------------------ instance file
def test_instance_json_round_trips_and_bad_fields_are_named(tmp_path):
    cache = EvaluationCache.random(images=8, exits=4, configs=2, seed=1)
    result = search(cache, Objective("min-cost", max_drop=5.0), space=SearchSpace(th_pix=(0.5, 0.7)))
    path = result.instance.save(tmp_path / "i.json", tuned={"miou": result.miou})
    assert Instance.load(path) == result.instance
    data = json.loads(path.read_text())
    for change, message in [
        ({"format": "x"}, "format"),
        ({"mode": "fast"}, "mode must be one of"),
        (
            {
                "exits": [
                    {"exit": 2, "config": "crm25p-b1-fcn", "th_img": 0.5},
                    {"exit": 1, "config": "crm25p-b1-fcn", "th_img": 0.5},
                ]
            },
            "shallowest first",
        ),
        ({"exits": [{"exit": 1, "config": "crm25p-b1-fcn", "th_img": 1.5}]}, "th_img must be a number in"),
        ({"exits": [{"exit": 1, "config": "crm25p-b1-fcn"}]}, "th_img must be a number in"),
        (
            {"exits": [{"exit": "1", "config": "crm25p-b1-fcn", "th_img": 0.5}]},
            r"exits\[0\].exit must be an early exit",
        ),
        ({"exits": [{"config": "crm25p-b1-fcn"}]}, r"exits\[0\] needs 'exit'"),
        ({"exits": [{"exit": -3, "config": "crm25p-b1-fcn", "th_img": 0.5}]}, r"exits\[0\].exit must be an early"),
        ({"policy": {"th_pix": 0.8, "edges": "x"}}, "policy.edges must be null or an object"),
        ({"policy": {"th_pix": 0.8, "edges": {"size": 2, "window": 7}}}, "odd"),
    ]:
        (tmp_path / "bad.json").write_text(json.dumps({**data, **change}))
        with pytest.raises((InstanceError, ValueError), match=message):
            Instance.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InstanceError, match="bad.json: not valid JSON"):
        Instance.load(tmp_path / "bad.json")
    with pytest.raises(Exception, match="exit 9 is not an early exit"):
        evaluate(cache, Instance.input_dependent([KeptExit(9, cache.configs[0], 0.5)], th_pix=0.5))


def test_objectives_and_spaces_refuse_nonsense():
    with pytest.raises(SearchError, match="max_drop"):
        Objective("min-cost")
    with pytest.raises(SearchError, match="budget"):
        Objective("max-acc", budget=0)
    cache = EvaluationCache.random()
    with pytest.raises(SearchError, match="candidate exit 7"):
        search(cache, Objective("pareto"), space=SearchSpace(exits=(7,)))
    with pytest.raises(Exception, match="th_pix=0.8 is not on"):
        search(cache, Objective("pareto"), space=SearchSpace(th_pix=(0.8,)))
    with pytest.raises(Exception, match="no measured latency"):
        search(cache, Objective("pareto"), unit="ms")


# ------------------------------------------------------------------------------------------------ results
def test_results_table_has_the_seed_shape_and_true_figures():
    cache = EvaluationCache.random(images=20, exits=5, configs=3, seed=2, latency=True)
    other = EvaluationCache.random(images=15, exits=5, configs=3, seed=8, latency=True)
    space = SearchSpace(th_pix=(0.5, 0.7, 0.9), th_img=(0.3, 0.5, 0.7, 0.9))
    table = results_table(cache, space=space, eval_cache=other)
    assert list(table["row"]) == [
        "Backbone",
        "MESS max-acc <= 1x cost",
        "MESS min-cost <= 0.1pp drop",
        "MESS min-cost <= 1pp drop",
        "uniform-exit MESS (<= 1pp)",
        "naive-confidence policy (<= 1pp)",
        "oracle bound (<= 1pp)",
    ]
    base = table.iloc[0]
    assert base["speedup"] == pytest.approx(1.0)
    assert table.loc[2, "miou"] >= base["miou"] - 0.001 - 1e-12 and table.loc[3, "miou"] >= base["miou"] - 0.01 - 1e-12
    assert table.loc[1, "gflops"] <= base["gflops"] + 1e-12
    for _, row in table.iterrows():
        if row["instance"] is not None:
            assert row["miou"] == pytest.approx(evaluate(cache, row["instance"]).miou)
            assert row["eval_miou"] == pytest.approx(evaluate(other, row["instance"]).miou)
            assert row["latency_ms"] == pytest.approx(evaluate(cache, row["instance"], unit="ms").cost)
    oracle_row = table.iloc[-1]
    assert oracle_row["gflops"] <= table.loc[3, "gflops"] + 1e-12  # the bound is never above the policy it bounds
    assert oracle_row["miou"] >= base["miou"] - 0.01 - 1e-12
    text = format_table(table)
    assert "oracle" in text and "on the other split" in text


def test_fronts_and_histogram_are_dataframes_the_app_can_plot():
    cache = EvaluationCache.random(images=12, exits=4, configs=2, seed=6)
    space = SearchSpace(th_pix=(0.5, 0.7), th_img=(0.3, 0.6, 0.9))
    fronts = all_fronts(cache, space=space)
    assert {"series", "mode", "cost", "miou", "description"} <= set(fronts.columns)
    assert set(fronts["series"]) == {
        "budgeted",
        "anytime (first output)",
        "MESS input-dependent",
        "no edge masking",
        "naive policy",
    }
    for _, part in fronts.groupby("series"):
        assert np.all(np.diff(part["cost"]) > 0) and np.all(np.diff(part["miou"]) > 0)  # a front rises with cost
    front = pareto_front(cache, space=space)
    hist = exit_histogram(cache, front["instance"].iloc[len(front) // 2])
    assert list(hist.columns) == ["output", "exit", "config", "images", "fraction"]
    assert hist["images"].sum() == cache.num_images and hist["fraction"].sum() == pytest.approx(1.0)
