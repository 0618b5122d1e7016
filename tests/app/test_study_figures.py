"""The Study page's figures as plain functions: the workload layer by layer with its exits, and the exit space."""

import numpy as np
import pytest

from app.views.study_figures import profile_figure, profile_table, space_heatmap, space_table
from mess_core.evaluate.cache import EvaluationCache
from mess_core.study import open_study


def test_the_workload_cumulates_to_the_total_and_places_every_exit_on_its_layer():
    profile = {
        "profile": {
            "nodes": [
                {"name": "conv1", "flops": 2e9},
                {"name": "block1", "flops": 1e9},
                {"name": "block2", "flops": 3e9},
                {"name": "head", "flops": 0.5e9},
            ]
        },
        "exits": [
            {
                "index": 1,
                "node": "block1",
                "module": "features.1",
                "cost_fraction": 3 / 6.5,
                "gflops": 3.0,
                "channels": 16,
                "stride": 4,
            },
            {
                "index": 2,
                "node": "not traced",
                "module": "features.9",
                "cost_fraction": 0.9,
                "gflops": 6.0,
                "channels": 32,
                "stride": 8,
            },
        ],
    }
    workload = profile_table(profile)
    np.testing.assert_allclose(workload.layers["gflops"], [2, 1, 3, 0.5])
    np.testing.assert_allclose(workload.layers["cumulative"], [2, 3, 6, 6.5])
    assert workload.exit_positions == {1: 1}  # an exit whose node is not among the layers is not drawn
    assert list(workload.exits["index"]) == [1, 2] and "cost_fraction" in workload.exits


def test_the_workload_of_a_real_study_agrees_with_its_cache(tiny_study):
    study = open_study(tiny_study[2])
    workload = profile_table(study.profile())
    assert sorted(workload.exit_positions) == list(range(1, study.cache.num_exits))
    positions = [workload.exit_positions[i] for i in sorted(workload.exit_positions)]
    assert positions == sorted(positions)  # deeper exits branch from later layers
    # the profile counts the same network the cache costs: the last layer's cumulative is the backbone's GFLOPs,
    # and each exit's "GFLOPs to here" is the cumulative at its layer
    assert workload.layers["cumulative"].iloc[-1] == pytest.approx(study.cache.stage_gflops.sum(), rel=0.02)
    for row in workload.exits.itertuples():
        assert row.gflops == pytest.approx(
            workload.layers["cumulative"].iloc[workload.exit_positions[row.index]], rel=0.02
        )


def test_the_exit_space_is_each_exits_reach_plus_its_head_and_its_miou():
    cache = EvaluationCache.random(images=12, exits=4, configs=3, classes=4, seed=2)
    space = space_table(cache)
    assert list(space.cost.index) == list(cache.configs) == list(space.miou.index)
    assert list(space.cost.columns) == ["exit 1", "exit 2", "exit 3"] == list(space.miou.columns)
    reach = cache.reach_cost("gflops")
    heads = cache.head_miou()
    for e in range(1, cache.num_exits):
        for c, config in enumerate(cache.configs):
            assert space.cost.loc[config, f"exit {e}"] == pytest.approx(reach[e] + cache.head_gflops[e - 1, c])
            assert space.miou.loc[config, f"exit {e}"] == pytest.approx(heads[(e - 1) * len(cache.configs) + c])
    assert space.final_miou == pytest.approx(heads[cache.final_head])
    assert space.backbone_gflops == pytest.approx(cache.stage_gflops.sum())


def test_the_study_figures_draw_the_tables_they_are_given():
    profile = {
        "profile": {"nodes": [{"name": "conv1", "flops": 2e9}, {"name": "block1", "flops": 1e9}]},
        "exits": [
            {
                "index": 1,
                "node": "conv1",
                "module": "features.0",
                "cost_fraction": 2 / 3,
                "gflops": 2.0,
                "channels": 8,
                "stride": 2,
            }
        ],
    }
    figure = profile_figure(profile_table(profile))
    assert [trace.type for trace in figure.data] == ["bar", "scatter"]
    assert list(figure.data[1].y) == [2, 3]  # the cumulative line, on its own axis
    assert [shape.x0 for shape in figure.layout.shapes] == [0]  # the exit's dotted line, at its layer
    space = space_table(EvaluationCache.random(images=8, exits=3, configs=2, classes=3, seed=0))
    heatmap = space_heatmap(space.cost, "GFLOPs per image", "Blues", ".3f")
    np.testing.assert_allclose(heatmap.data[0].z, space.cost.to_numpy())
    assert heatmap.layout.height == 90 + 28 * len(space.cost)
