"""The image browser's and the Pareto page's linked views, checked for meaning on a random cache: every image's IoU
recomputed by hand from its counts, filters that return exactly the matching images, and the presets' order."""

import numpy as np
import pytest

from app.views.image_table import (
    PRESETS,
    ImageTableError,
    compare_figures,
    exit_examples,
    image_table,
    images_with_class,
    linked_view,
    select_images,
)
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, KeptExit, evaluate


@pytest.fixture(scope="module")
def cache():
    return EvaluationCache.random(images=40, exits=4, configs=2, classes=4, seed=3)


@pytest.fixture(scope="module")
def instance(cache):
    return Instance.input_dependent(
        [KeptExit(1, cache.configs[1], th_img=0.3), KeptExit(2, cache.configs[0], th_img=0.5)], th_pix=0.7
    )


def own_miou(cache, b, head):
    """An image's mIoU at one head, from its counts, one class at a time."""
    ious = []
    for k in range(cache.num_classes):
        tp, pred, label = int(cache.tp[b, head, k]), int(cache.pred[b, head, k]), int(cache.label[b, k])
        union = label + pred - tp
        if union > 0:
            ious.append(tp / union)
    return sum(ious) / len(ious) if ious else 0.0


def test_every_row_is_the_image_s_own_iou_at_the_exit_it_takes(cache, instance):
    table = image_table(cache, instance)
    assert list(table["image"]) == list(range(cache.num_images))
    assert list(table["name"]) == cache.meta["images"]
    c_img = cache.image_confidence(policy="mess", th_pix=0.7)
    heads = {1: cache.head_index(1, cache.configs[1]), 2: cache.head_index(2, cache.configs[0]), 4: cache.final_head}
    for row in table.itertuples(index=False):
        b = row.image
        # the shallowest kept exit whose confidence reaches its threshold, else the final exit
        expected = 1 if c_img[b, heads[1]] >= 0.3 else 2 if c_img[b, heads[2]] >= 0.5 else 4
        assert row.exit == expected
        assert row.IoU == pytest.approx(own_miou(cache, b, heads[expected]))
        assert row[table.columns.get_loc("final IoU")] == pytest.approx(own_miou(cache, b, cache.final_head))
        assert row.loss == pytest.approx(own_miou(cache, b, cache.final_head) - own_miou(cache, b, heads[expected]))
        best = max(own_miou(cache, b, h) for h in range(cache.num_heads))
        assert row[table.columns.get_loc("best IoU")] == pytest.approx(best)
        assert row[table.columns.get_loc("c_img exit 1")] == pytest.approx(c_img[b, heads[1]])
        assert row[table.columns.get_loc("c_img exit 2")] == pytest.approx(c_img[b, heads[2]])
    # the same exits the engine's evaluation counts
    taken = evaluate(cache, instance).exit_taken
    assert list(table["exit"]) == [[1, 2, 4][t] for t in taken]
    assert set(table.loc[table["exit"] == 4, "loss"]) == {0.0}


def test_a_static_instance_has_no_confidence_columns_and_every_image_at_its_exit(cache):
    table = image_table(cache, Instance("budgeted", (KeptExit(2, cache.configs[0]),)))
    assert set(table["exit"]) == {2}
    assert not [c for c in table.columns if c.startswith("c_img")]


def test_the_class_filter_returns_exactly_the_images_holding_that_class(cache, instance):
    table = image_table(cache, instance)
    # a class absent from some images, so that the filter has something to drop
    cache = EvaluationCache.random(images=40, exits=4, configs=2, classes=4, seed=3)
    cache.label[::3, 2] = 0
    for k, name in enumerate(cache.meta["classes"]):
        expected = [b for b in range(cache.num_images) if cache.label[b, k] > 0]
        assert list(np.flatnonzero(images_with_class(cache, name))) == expected
        assert sorted(select_images(cache, table, "all images", contains=name)["image"]) == expected
    assert len(select_images(cache, table, "all images", contains="c2")) < cache.num_images
    with pytest.raises(ImageTableError, match="no class 'sky'"):
        images_with_class(cache, "sky")


def test_presets_keep_and_order_the_right_images(cache, instance):
    table = image_table(cache, instance)
    assert set(PRESETS) == {
        "all images",
        "left early and lost most",
        "hardest at the final exit",
        "hardest for every exit",
    }
    early = select_images(cache, table, "left early and lost most")
    assert sorted(early["image"]) == sorted(table.loc[table["exit"] < 4, "image"])
    assert list(early["loss"]) == sorted(early["loss"], reverse=True)
    assert early["loss"].iloc[0] == table.loc[table["exit"] < 4, "loss"].max()
    hardest = select_images(cache, table, "hardest at the final exit")
    assert len(hardest) == cache.num_images and list(hardest["final IoU"]) == sorted(table["final IoU"])
    every = select_images(cache, table, "hardest for every exit")
    assert list(every["best IoU"]) == sorted(table["best IoU"])
    assert list(select_images(cache, table)["image"]) == list(range(cache.num_images))
    # the class filter and a preset together: the preset's order over the matching images only
    both = select_images(cache, table, "hardest at the final exit", contains="c1")
    assert set(both["image"]) == set(np.flatnonzero(cache.label[:, 1] > 0))
    assert list(both["final IoU"]) == sorted(both["final IoU"])
    with pytest.raises(ImageTableError, match="no preset"):
        select_images(cache, table, "prettiest")


def test_exit_examples_spread_over_each_exit_s_iou(cache, instance):
    table = image_table(cache, instance)
    examples = exit_examples(table, per_exit=3)
    for exit_, rows in examples.groupby("exit"):
        at_exit = table[table["exit"] == exit_]
        assert len(rows) == min(3, len(at_exit))
        assert rows["IoU"].iloc[0] == at_exit["IoU"].min() and rows["IoU"].iloc[-1] == at_exit["IoU"].max()
        assert set(rows["image"]) <= set(at_exit["image"])
    assert list(examples["exit"]) == sorted(examples["exit"])
    assert set(examples["exit"]) == set(table["exit"])


def test_the_linked_view_and_the_comparison_agree_with_the_evaluation(cache, instance):
    view = linked_view(cache, instance)
    out = evaluate(cache, instance)
    assert view.figures.miou == pytest.approx(out.miou)
    assert list(view.figures.histogram["images"]) == list(np.bincount(out.exit_taken, minlength=3))
    backbone = linked_view(cache, Instance("input-dependent"))
    table = compare_figures(backbone.figures, view.figures).set_index("figure")
    assert table.loc["mIoU (%)", "A"] == pytest.approx(100 * backbone.figures.miou)
    assert table.loc["mIoU (%)", "B - A"] == pytest.approx(100 * (out.miou - backbone.figures.miou))
    assert table.loc["drop (pp)", "A"] == pytest.approx(0.0)
    assert table.loc["drop, 90% interval low (pp)", "A"] == table.loc["drop, 90% interval high (pp)", "A"] == 0.0
    assert (
        table.loc["drop, 90% interval low (pp)", "B"]
        <= table.loc["drop (pp)", "B"]
        <= table.loc["drop, 90% interval high (pp)", "B"]
    )
    assert table.loc["images leaving early (%)", "A"] == 0.0
