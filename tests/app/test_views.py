"""The app's figures as plain functions: uploads decoded with a clear word for every conversion or refusal, every
exit's maps for one image, where it leaves and what that saves, and the live dataset figures."""

import dataclasses
import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from app.views.instance_bars import NARROW, WIDE, class_iou_figure, exit_mix_figure
from app.views.one_image import (
    exit_firings,
    exit_taken,
    exit_views,
    explorer_defaults,
    heatmap,
    measure_early_exit,
    path_gflops,
    run_exits,
    shipped_heads,
)
from app.views.pareto import (
    SEARCHED,
    PointId,
    PointKind,
    SearchPoint,
    constraint_line,
    gflops_budget,
    instance_document,
    live_search,
    onnx_zip,
    parse_point_id,
    plot_points,
    sample_instances,
)
from app.views.pareto_figures import axes_ranges, search_figure, study_figure
from app.views.thresholds import instance_from_settings, threshold_defaults, threshold_summary
from app.views.upload import ImageError, dataset_sample, dataset_source, decode_image, synthetic_sample, to_input
from mess_core.data.info import colorize
from mess_core.data.registry import palette_for
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, KeptExit, evaluate, output_costs
from mess_core.evaluate.policy import ConfidencePolicy, EdgeMasking
from mess_core.search.constrained import search
from mess_core.search.problem import Objective, SearchError, SearchSpace
from mess_core.study import open_study


def png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def test_rgb_png_round_trips_in_rgb_order():
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0] = 200  # red
    image = decode_image(png(rgb[:, :, ::-1]), name="red.png")
    assert image.notices == [] and image.rgb[0, 0].tolist() == [200, 0, 0]


def test_sixteen_bit_gray_and_rgba_are_converted_with_a_notice():
    deep = decode_image(png(np.full((40, 40, 3), 65535, np.uint16)), name="deep.png")
    assert deep.rgb.dtype == np.uint8 and deep.rgb.max() == 255 and "16-bit" in deep.notices[0]
    gray = decode_image(png(np.full((40, 40), 90, np.uint8)), name="g.png")
    assert gray.rgb.shape == (40, 40, 3) and "grayscale" in gray.notices[0]
    bgra = np.zeros((40, 40, 4), np.uint8)
    bgra[..., 3] = 0  # fully transparent black: becomes white
    clear = decode_image(png(bgra), name="clear.png")
    assert clear.rgb.min() == 255 and "composited over white" in clear.notices[0]
    bgra[..., 3] = 255
    assert "alpha channel dropped" in decode_image(png(bgra), name="opaque.png").notices[0]


def test_palette_and_gif_images_go_through_pillow():
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 30, np.uint8)).convert("P").save(buffer, format="GIF")
    image = decode_image(buffer.getvalue(), name="a.gif")
    assert image.rgb.shape == (40, 40, 3)


def test_huge_images_are_downscaled_and_tiny_or_non_images_refused_by_name():
    big = decode_image(png(np.zeros((3000, 2000, 3), np.uint8)), name="big.png", max_side=1024)
    assert big.rgb.shape == (1024, 683, 3) and "downscaled to 1024x683" in big.notices[0]
    with pytest.raises(ImageError, match=r"small.png: 10x64 pixels is too small"):
        decode_image(png(np.zeros((10, 64, 3), np.uint8)), name="small.png")
    with pytest.raises(ImageError, match=r"notes.txt: not an image that OpenCV or Pillow can read"):
        decode_image(b"these are my notes, not pixels", name="notes.txt")
    with pytest.raises(ImageError, match=r"empty.png: the file is empty"):
        decode_image(b"", name="empty.png")


def test_to_input_normalises_like_the_training_data():
    from mess_core.data.transforms import denormalize

    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    x = to_input(rgb)
    assert x.shape == (1, 3, 30, 40)
    np.testing.assert_array_equal(denormalize(x[0]), rgb)
    assert to_input(rgb, (60, 80)).shape == (1, 3, 60, 80)


@pytest.fixture(scope="module")
def explored(tiny_study):
    _, _, out, _ = tiny_study
    study = open_study(out)
    net, _ = study.load_network()
    x = torch.randn(1, 3, 48, 64)
    # a different shipped head at alternate exits where the study ships more than one
    configs = {i: sorted(net.heads[str(i)].keys())[-(i % 2)] for i in range(1, net.num_exits)}
    return study, net, x, configs


def test_each_exit_runs_the_chosen_head_once_and_equals_the_full_forward(explored):
    study, net, x, configs = explored
    logits, seconds = run_exits(net, x, configs)
    heads, final = net.forward_all(x)
    assert sorted(logits) == [1, 2, 3, 4, 5, 6] and seconds > 0
    for i, spec in configs.items():
        torch.testing.assert_close(logits[i], heads[i][spec])
    torch.testing.assert_close(logits[6], final)


@pytest.mark.parametrize("th_pix, size, window", [(0.5, 3, 7), (0.9, 5, 3), (0.7, 1, 5)])
def test_exit_views_give_the_deployed_policys_image_confidence(explored, th_pix, size, window):
    _, net, x, configs = explored
    logits, _ = run_exits(net, x, configs)
    views = exit_views(logits, configs, th_pix=th_pix, edges=EdgeMasking(size=size, window=window))
    policy = ConfidencePolicy(th_pix=th_pix, edges=EdgeMasking(size=size, window=window))
    plain = ConfidencePolicy(th_pix=th_pix, edges=None)
    for view in views:
        assert view.c_img == pytest.approx(float(policy.image_confidence(logits[view.exit])[0]), abs=1e-6)
        assert view.c_img_plain == pytest.approx(float(plain.image_confidence(logits[view.exit])[0]), abs=1e-6)
        assert view.edge_mask.dtype == bool and view.labels.shape == (48, 64)
        unmasked = ~view.edge_mask
        np.testing.assert_array_equal(view.masked_confidence[unmasked], view.confidence[unmasked])
    assert views[-1].config == "final"


def test_where_an_image_leaves_matches_the_deployed_network_and_its_counted_cost(explored):
    study, net, x, configs = explored
    logits, _ = run_exits(net, x, configs)
    views = exit_views(logits, configs, th_pix=0.5, edges=EdgeMasking())
    c2 = next(v.c_img for v in views if v.exit == 2)
    for th_img in ({}, {2: 0.0}, {2: min(1.0, c2 + 0.01), 4: 0.0}, {1: 1.0, 3: 1.0}):
        leave = exit_taken(views, th_img)
        inst = instance_from_settings("input-dependent", th_img, configs, th_pix=0.5, edges=EdgeMasking())
        timed = measure_early_exit(net, inst, x, repeats=1)
        assert timed.exit == leave and timed.speedup == pytest.approx(timed.full_ms / timed.early_exit_ms)
        path = path_gflops(net, (48, 64), {i: configs[i] for i in th_img}, leave)
        cost, full = path.gflops, path.full_gflops
        assert path.saved == pytest.approx(1 - cost / full)
        # the cache counted the same heads at the same size: the costs agree with the cache's arithmetic
        reach = output_costs(study.cache, inst)
        position = [e.exit for e in inst.exits].index(leave) if leave in th_img else len(inst.exits)
        assert cost == pytest.approx(reach[position], rel=1e-6)
        assert full == pytest.approx(study.cache.stage_gflops.sum(), rel=1e-6)
    assert exit_taken(views, {2: 0.0}) == 2 and exit_taken(views, {}) == 6


def test_colours_and_heatmaps():
    palette = palette_for("synthetic", 7)
    assert palette.shape == (7, 3) and palette.dtype == np.uint8
    assert palette_for("somewhere", 4).shape == (4, 3)
    out = colorize(np.array([[0, 6], [-1, 9]]), palette)
    assert out[0, 1].tolist() == palette[6].tolist() and out[1].max() == 0
    hot = heatmap(np.array([[0.0, 1.0]]))
    assert hot.shape == (1, 2, 3) and hot[0, 0].tolist() != hot[0, 1].tolist()


@pytest.fixture(scope="module")
def cache():
    return EvaluationCache.random(images=24, exits=4, configs=3, classes=4, seed=5)


def test_threshold_summary_is_the_exact_evaluation(cache):
    inst = instance_from_settings(
        "input-dependent", {1: 0.6, 3: 0.3}, {1: cache.configs[0], 3: cache.configs[2]}, th_pix=0.7, edges=EdgeMasking()
    )
    figures = threshold_summary(cache, inst)
    out, base = evaluate(cache, inst), evaluate(cache, Instance("input-dependent"))
    assert figures.miou == out.miou and figures.gflops == out.cost
    assert figures.speedup == pytest.approx(base.cost / out.cost)
    assert figures.drop_pp == pytest.approx(100 * (base.miou - out.miou))
    assert figures.histogram["images"].sum() == cache.num_images
    np.testing.assert_array_equal(figures.per_class["IoU"], out.iou)
    # the images that leave early are those the histogram does not count at the final exit
    leaving = figures.histogram["images"].iloc[:-1].sum() / cache.num_images
    assert figures.left_early == pytest.approx(leaving)
    assert list(figures.scalars()) == ["miou", "gflops", "speedup", "backbone_miou", "backbone_gflops", "drop_pp"]
    assert not figures.measured  # a random cache has no measured latency


def test_an_instances_bars_show_where_its_images_leave_and_its_iou_per_class_beside_the_backbone(cache):
    inst = instance_from_settings("input-dependent", {2: 0.5}, {2: cache.configs[1]}, th_pix=0.7, edges=EdgeMasking())
    figures = threshold_summary(cache, inst)
    for layout in (WIDE, NARROW):
        mix, classes = exit_mix_figure(figures.histogram, layout), class_iou_figure(figures.per_class, layout)
        assert sum(mix.data[0].y) == cache.num_images and mix.layout.height == layout.mix_height
        assert [t.name for t in classes.data] == ["this instance", "backbone"]
        np.testing.assert_allclose(classes.data[0].y, 100 * figures.per_class["IoU"])
        np.testing.assert_allclose(classes.data[1].y, 100 * figures.per_class["backbone IoU"])
    assert exit_mix_figure(figures.histogram, WIDE).data[0].x[0] == f"exit 2 ({cache.configs[1]})"
    assert exit_mix_figure(figures.histogram, NARROW).data[0].x[0] == "exit 2"


@pytest.mark.parametrize("objective", [Objective("min-cost", max_drop=1.0), Objective("max-acc", budget=0.7)])
def test_live_search_chooses_what_the_search_chooses_and_reports_peers(cache, objective):
    space = SearchSpace(th_pix=(0.7,), th_img=(0.3, 0.6, 0.9))
    found = live_search(cache, objective, mode="input-dependent", space=space)
    assert found.chosen.instance == search(cache, objective, space=space).instance
    assert found.backbone.instance == Instance("input-dependent")
    assert found.backbone.cost == pytest.approx(float(cache.stage_gflops.sum()))
    assert {"uniform-exit MESS", "naive policy", "backbone"} <= set(found.peers())
    assert list(found.peers())[0] == "backbone"
    if found.chosen.instance is not None:
        assert found.speedup == pytest.approx(found.backbone.cost / found.chosen.cost)
    if found.chosen.instance is not None and found.chosen.instance.exits:
        assert found.oracle is not None and found.oracle.instance is None
        if objective.kind == "min-cost":  # knowing the labels never does worse than the policy on the same exits
            assert found.oracle.cost <= found.chosen.cost + 1e-9
        else:
            assert found.oracle.miou >= found.chosen.miou - 1e-9
    else:
        assert found.oracle is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.seconds = 0.0


def test_live_search_carries_the_chosen_drop_interval_and_takes_a_confidence(cache):
    from mess_core.search.uncertainty import drop_interval

    space = SearchSpace(th_pix=(0.7,), th_img=(0.3, 0.6, 0.9))
    plain = live_search(cache, Objective("min-cost", max_drop=2.0), mode="input-dependent", space=space)
    assert plain.chosen.interval == drop_interval(cache, plain.chosen.instance)
    sure = live_search(cache, Objective("min-cost", max_drop=2.0, confidence=0.9), mode="input-dependent", space=space)
    expected = search(cache, Objective("min-cost", max_drop=2.0, confidence=0.9), space=space)
    assert sure.chosen.instance == expected.instance
    assert sure.chosen.interval.upper <= 2.0 + 1e-9  # the promise holds at 90% confidence
    assert sure.chosen.cost >= plain.chosen.cost - 1e-12  # a surer promise never costs less
    # the peers answer the plain constraint in both cases
    assert sure.uniform == plain.uniform and sure.naive == plain.naive
    ahead = live_search(
        cache,
        Objective("min-cost", max_drop=2.0, confidence=0.9, fresh_images=cache.num_images),
        mode="input-dependent",
        space=space,
    )
    assert ahead.chosen.interval.fresh_images == cache.num_images and ahead.chosen.interval.upper <= 2.0 + 1e-9
    assert ahead.chosen.cost >= sure.chosen.cost - 1e-12  # the predictive bound is the wider one
    with pytest.raises(SearchError, match="fresh_images needs a confidence"):
        Objective("min-cost", max_drop=1.0, fresh_images=10)


def test_sampled_instances_carry_their_exact_figures(cache):
    cloud = sample_instances(cache, count=40, seed=1, space=SearchSpace(th_pix=(0.7, 0.9)))
    assert len(cloud) == 1 + (cache.num_exits - 1) * len(cache.configs) + 40
    for row in cloud.sample(10, random_state=0).itertuples():
        out = evaluate(cache, row.instance)
        assert (row.miou, row.cost) == (out.miou, out.cost)


# ------------------------------------------------------------------------------ what the pages start from and draw
def test_dataset_source_resolves_the_studys_folder_and_says_whether_its_images_are_here(tmp_path):
    (tmp_path / "data" / "camvid").mkdir(parents=True)
    meta = {"dataset": "camvid", "split": "test"}
    here = dataset_source({"data_root": "data/camvid", "data_options": {"size": [48, 64]}}, meta, tmp_path)
    assert here.root == str(tmp_path / "data" / "camvid") and here.on_disk and here.split == "test"
    assert here.options == (("size", (48, 64)),)  # hashable, for the app's dataset cache
    hash(here.options)
    elsewhere = dataset_source({"data_root": "/nowhere/camvid"}, meta, tmp_path)
    assert elsewhere.root == "/nowhere/camvid" and not elsewhere.on_disk
    generated = dataset_source({}, {}, tmp_path)  # a run folder without a build config: synthetic val
    assert (generated.name, generated.split, generated.root, generated.on_disk) == ("synthetic", "val", None, True)


def test_samples_come_as_display_rgb_with_labels_only_where_the_classes_match():
    from mess_core.data import build_dataset

    dataset = build_dataset("synthetic", split="test", seed=7, length=1, size=(48, 64))
    rgb, label = dataset_sample(dataset, 0)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 and label.shape == (48, 64)
    own, own_label = synthetic_sample((48, 64), 7, dataset.info.num_classes)
    np.testing.assert_array_equal(own, rgb)
    np.testing.assert_array_equal(own_label, label)
    assert synthetic_sample((48, 64), 7, dataset.info.num_classes + 5)[1] is None


def test_explorer_starts_from_the_searched_instance_and_else_the_most_accurate_shipped_heads(explored):
    study, net, _, _ = explored
    cache = study.cache
    shipped = shipped_heads(net)
    assert sorted(shipped) == list(range(1, net.num_exits))
    assert all(set(heads) <= set(cache.configs) for heads in shipped.values())
    miou = cache.head_miou()[:-1].reshape(cache.num_exits - 1, len(cache.configs))
    plain = explorer_defaults(cache, shipped, None)
    assert plain.th_img == {} and plain.th_pix == 0.8
    for e, config in plain.configs.items():  # the most accurate of the shipped heads, never one left out
        assert config in shipped[e]
        assert miou[e - 1, cache.config_index(config)] == max(miou[e - 1, cache.config_index(c)] for c in shipped[e])
    searched = instance_from_settings(
        "input-dependent", {2: 0.4}, {2: shipped[2][-1]}, th_pix=0.65, edges=EdgeMasking()
    )
    start = explorer_defaults(cache, shipped, searched)
    assert start.th_pix == 0.65 and start.th_img == {2: 0.4} and start.configs[2] == shipped[2][-1]
    assert {e: c for e, c in start.configs.items() if e != 2} == {e: c for e, c in plain.configs.items() if e != 2}
    missing = {e: [c for c in heads if c != shipped[2][-1]] if e == 2 else heads for e, heads in shipped.items()}
    if missing[2]:  # a searched exit whose head is not shipped is not kept
        assert explorer_defaults(cache, missing, searched).th_img == {}


def test_exit_firings_say_which_kept_exit_fires(explored):
    _, net, x, configs = explored
    logits, _ = run_exits(net, x, configs)
    views = exit_views(logits, configs, th_pix=0.5, edges=EdgeMasking())
    c2 = next(v.c_img for v in views if v.exit == 2)
    firings = exit_firings(views, {2: c2, 3: min(1.0, views[2].c_img + 0.01)})
    assert [f.exit for f in firings] == [v.exit for v in views]
    by_exit = {f.exit: f for f in firings}
    assert by_exit[2].fires and by_exit[2].th_img == c2  # reaching the threshold exactly fires
    assert not by_exit[3].fires and not by_exit[1].fires and by_exit[1].th_img is None
    assert by_exit[6].config == "final" and not by_exit[6].fires
    assert exit_taken(views, {2: c2}) == next(f.exit for f in firings if f.fires)


def test_threshold_defaults_sit_on_the_caches_grid_with_its_edge_masking(cache):
    start = threshold_defaults(cache)
    assert start.kept == [1] and start.th_img == 0.8  # exits 1..3 of 4: the middle one
    assert start.th_pix in cache.th_pix_grid and start.th_pix == 0.7  # 0.8 is not on [0.5, 0.7, 0.9]
    assert (start.edges.size, start.edges.window) == (3, 7)
    other = EvaluationCache.random(images=8, exits=7, configs=2, classes=3, seed=1)
    assert threshold_defaults(other).kept == [3]


def test_a_gflops_budget_converts_to_the_searchs_fraction_of_the_backbone():
    budget = gflops_budget(2.0)
    assert (budget.low, budget.high, budget.value, budget.step) == (0.1, 3.0, 2.0, 0.01)
    assert budget.fraction(1.0) == 0.5 and budget.fraction(budget.value) == 1.0


def test_the_constraint_line_is_the_allowed_drop_below_or_the_budget_times_the_backbone():
    backbone = SearchPoint(Instance("input-dependent"), 0.62, 4.0)
    drop = constraint_line(Objective("min-cost", max_drop=1.5), backbone)
    assert drop.axis == "miou" and drop.at == pytest.approx(60.5)
    budget = constraint_line(Objective("max-acc", budget=0.25), backbone)
    assert budget.axis == "cost" and budget.at == pytest.approx(1.0)


def test_plot_points_hold_the_cloud_the_fronts_the_finite_peers_and_the_searched_instance(cache):
    space = SearchSpace(th_pix=(0.7,), th_img=(0.3, 0.6, 0.9))
    cloud = sample_instances(cache, count=5, seed=0, space=space)
    fronts = cloud.head(3).assign(series="front: test")
    found = live_search(cache, Objective("min-cost", max_drop=1.0), mode="input-dependent", space=space)
    points = plot_points(cloud, fronts, found)
    assert all(key == point.id for key, point in points.items())
    assert sum(p.kind is PointKind.CLOUD for p in points.values()) == len(cloud)
    assert sum(p.kind is PointKind.FRONT for p in points.values()) == 3
    first_front = points[PointId(PointKind.FRONT, index=0)]
    assert first_front.series == "front: test" and first_front.instance == cloud["instance"].iloc[0]
    assert points[PointId(PointKind.PEER, name="backbone")].cost == found.backbone.cost
    for name, peer in found.peers().items():
        assert (PointId(PointKind.PEER, name=name) in points) == bool(np.isfinite(peer.cost))
    assert (SEARCHED in points) == (found.chosen.instance is not None)
    if SEARCHED in points:
        assert points[SEARCHED].series == "searched" and points[SEARCHED].miou == found.chosen.miou
    impossible = live_search(cache, Objective("max-acc", budget=1e-6), mode="budgeted", space=space)
    assert SEARCHED not in plot_points(cloud, fronts, impossible)


def test_a_point_id_goes_through_plotly_as_text_and_back():
    ids = [
        PointId(PointKind.CLOUD, index=0),
        PointId(PointKind.FRONT, index=12),
        PointId(PointKind.PEER, name="uniform-exit MESS"),
        SEARCHED,
    ]
    assert [i.text for i in ids] == ["cloud:0", "front:12", "peer:uniform-exit MESS", "chosen"]
    assert [parse_point_id(i.text) for i in ids] == ids
    for text in [None, 3, "", "cloud", "cloud:", "cloud:-1", "front:x", "peer:", "chosen:1", "other:1"]:
        assert parse_point_id(text) is None, text


def test_the_pareto_figures_carry_every_clickable_point_by_its_id(cache):
    space = SearchSpace(th_pix=(0.7,), th_img=(0.3, 0.6, 0.9))
    cloud = sample_instances(cache, count=5, seed=0, space=space)
    fronts = cloud.head(3).assign(series="budgeted")
    found = live_search(cache, Objective("max-acc", budget=0.8), mode="input-dependent", space=space)
    points = plot_points(cloud, fronts, found)

    def clickable(figure):  # what a click hands back, one per point, in order
        rows = [row for trace in figure.data if trace.customdata is not None for row in trace.customdata]
        return sorted((parse_point_id(row[0]) for row in rows), key=lambda i: i.text)

    def of_kinds(*kinds):
        return sorted((k for k, p in points.items() if p.kind in kinds), key=lambda i: i.text)

    front = PointId(PointKind.FRONT, index=1)
    study = study_figure(points, front)
    assert clickable(study) == of_kinds(PointKind.CLOUD, PointKind.FRONT)
    assert study.data[-1].name == "selected" and study.data[-1].x == (points[front].cost,)
    peer = PointId(PointKind.PEER, name="backbone")
    search = search_figure(points, Objective("max-acc", budget=0.8), found, peer)
    assert clickable(search) == of_kinds(PointKind.PEER, PointKind.CHOSEN)
    assert search.data[-1].name == "selected" and search.data[-1].x == (points[peer].cost,)
    assert search.layout.shapes[0].x0 == pytest.approx(0.8 * found.backbone.cost)
    assert study.layout.xaxis.range == search.layout.xaxis.range == tuple(axes_ranges(points)[0])


def test_a_downloaded_instance_reads_back_and_carries_its_figures_and_source(cache):
    import json

    inst = instance_from_settings("input-dependent", {2: 0.5}, {2: cache.configs[1]}, th_pix=0.7, edges=EdgeMasking())
    figures = threshold_summary(cache, inst)
    doc = json.loads(json.dumps(instance_document(cache, "tiny", inst, figures)))
    assert Instance.from_dict(doc) == inst
    assert doc["figures"] == pytest.approx(figures.scalars())
    assert doc["source"] == {
        "model": "random",
        "dataset": "random",
        "split": "random",
        "input_size": [8, 8],
        "num_classes": 4,
        "num_exits": 4,
        "study": "tiny",
    }


def test_the_onnx_zip_holds_the_exported_files_with_their_manifest(explored):
    import json
    import zipfile

    _, net, _, configs = explored
    # a budgeted instance is one file: the zip's packing is what is tested here (the per-stage export, in test_export)
    inst = Instance("budgeted", (KeptExit(2, configs[2]),))
    with zipfile.ZipFile(io.BytesIO(onnx_zip(net, inst, (48, 64)))) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("mess_onnx/manifest.json"))
    assert all(n.startswith("mess_onnx/") for n in names) and any(n.endswith(".onnx") for n in names)
    assert manifest["input_size"] == [48, 64] and Instance.from_dict(manifest["instance"]) == inst


def test_the_thinned_cloud_keeps_the_first_point_of_every_occupied_cell(cache):
    from app.views.pareto import thin_cloud

    cloud = sample_instances(cache, count=200, seed=2).assign(position=lambda f: np.arange(len(f)))
    thin = thin_cloud(cloud, cells=(20, 10))

    def cells(frame):
        x = np.floor((frame["cost"] - cloud["cost"].min()) / np.ptp(cloud["cost"]) * 20)
        y = np.floor((frame["miou"] - cloud["miou"].min()) / np.ptp(cloud["miou"]) * 10)
        return list(zip(x, y))

    assert len(set(cells(thin))) == len(thin) < len(cloud)  # one point per cell, fewer points
    assert set(cells(thin)) == set(cells(cloud))  # every occupied cell still has one
    first = {}
    for position, c in zip(cloud["position"], cells(cloud)):
        first.setdefault(c, position)
    assert list(thin["position"]) == sorted(first.values())  # the first of each cell, in the cloud's order
    assert len(thin_cloud(cloud, cells=(10**6, 10**6))) == len(cloud.drop_duplicates(["cost", "miou"]))
