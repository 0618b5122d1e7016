"""The app's figures as plain functions: uploads decoded with a clear word for every conversion or refusal, every
exit's maps for one image, where it leaves and what that saves, and the live dataset figures."""

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mess_core.cache import EvaluationCache
from mess_core.explore import (ImageError, colorize, decode_image, exit_taken, exit_views, heatmap,
                               instance_from_settings, live_search, measure_early_exit, palette_for, path_gflops,
                               run_exits, sample_instances, threshold_summary, to_input)
from mess_core.instance import Instance, evaluate, output_costs
from mess_core.policy import ConfidencePolicy, EdgeMasking
from mess_core.search import Objective, SearchSpace, search
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
        assert measure_early_exit(net, inst, x, repeats=1)["exit"] == leave
        cost, full = path_gflops(net, (48, 64), {i: configs[i] for i in th_img}, leave)
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
    inst = instance_from_settings("input-dependent", {1: 0.6, 3: 0.3}, {1: cache.configs[0], 3: cache.configs[2]},
                                  th_pix=0.7, edges=EdgeMasking())
    figures = threshold_summary(cache, inst)
    out, base = evaluate(cache, inst), evaluate(cache, Instance("input-dependent"))
    assert figures["miou"] == out.miou and figures["gflops"] == out.cost
    assert figures["speedup"] == pytest.approx(base.cost / out.cost)
    assert figures["drop_pp"] == pytest.approx(100 * (base.miou - out.miou))
    assert figures["histogram"]["images"].sum() == cache.num_images
    np.testing.assert_array_equal(figures["per_class"]["IoU"], out.iou)


@pytest.mark.parametrize("objective", [Objective("min-cost", max_drop=1.0), Objective("max-acc", budget=0.7)])
def test_live_search_chooses_what_the_search_chooses_and_reports_peers(cache, objective):
    space = SearchSpace(th_pix=(0.7,), th_img=(0.3, 0.6, 0.9))
    found = live_search(cache, objective, mode="input-dependent", space=space)
    assert found["chosen"]["instance"] == search(cache, objective, space=space).instance
    assert {"uniform-exit MESS", "naive policy", "backbone"} <= set(found)
    if found["chosen"]["instance"] is not None and found["chosen"]["instance"].exits:
        assert "oracle" in found


def test_sampled_instances_carry_their_exact_figures(cache):
    cloud = sample_instances(cache, count=40, seed=1, space=SearchSpace(th_pix=(0.7, 0.9)))
    assert len(cloud) == 1 + (cache.num_exits - 1) * len(cache.configs) + 40
    for row in cloud.sample(10, random_state=0).itertuples():
        out = evaluate(cache, row.instance)
        assert (row.miou, row.cost) == (out.miou, out.cost)
