"""The exit policy against OpenCV on the same label maps, and its thresholds' monotonicity."""

import cv2
import numpy as np
import pytest
import torch

from mess_core.evaluate.policy import (
    ConfidencePolicy,
    EdgeMasking,
    confidence_curve,
    edge_masked_confidence,
    edge_masked_fraction,
    image_confidence,
    label_edges,
    naive_confidence,
    pixel_confidence,
    predicted_labels,
    widen,
)


def blob_labels(seed, shape=(37, 53), classes=4):
    """Label maps with irregular regions, thin structures and image-border contact."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    for _ in range(8):
        c = int(rng.integers(1, classes))
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        cv2.ellipse(
            labels,
            (int(x), int(y)),
            (int(rng.integers(2, 15)), int(rng.integers(1, 9))),
            float(rng.uniform(0, 180)),
            0,
            360,
            c,
            -1,
        )
    cv2.line(labels, (0, 3), (shape[1] - 1, 30), classes - 1, 1)
    return labels


@pytest.mark.parametrize("seed", range(4))
def test_label_edges_match_opencv_morphological_gradient(seed):
    labels = blob_labels(seed)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    expected = cv2.morphologyEx(labels, cv2.MORPH_GRADIENT, cross) != 0
    got = label_edges(torch.from_numpy(labels.astype(np.int64))[None])[0].numpy()
    assert got.any() and np.array_equal(got, expected)


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_widening_matches_opencv_dilate(size):
    labels = blob_labels(7)
    edges = label_edges(torch.from_numpy(labels.astype(np.int64))[None])
    expected = cv2.dilate(edges[0].numpy().astype(np.uint8), np.ones((size, size), np.uint8)) != 0
    assert np.array_equal(widen(edges, size)[0].numpy(), expected)


@pytest.mark.parametrize("window", [3, 5])
def test_edge_median_matches_opencv_median_blur_on_the_mask_and_leaves_the_rest(window):
    g = torch.Generator().manual_seed(window)
    labels = torch.from_numpy(blob_labels(window).astype(np.int64))[None]
    conf = torch.rand(labels.shape, generator=g)
    got = edge_masked_confidence(conf, labels, size=3, window=window)[0].numpy()
    mask = widen(label_edges(labels), 3)[0].numpy()
    median = cv2.medianBlur(conf[0].numpy().astype(np.float32), window)  # float32: windows 3 and 5
    assert np.allclose(got[mask], median[mask])
    assert np.array_equal(got[~mask], conf[0].numpy()[~mask])


def test_edge_median_matches_opencv_for_wide_windows_on_8_bit_confidences():
    labels = torch.from_numpy(blob_labels(11).astype(np.int64))[None]
    conf8 = np.random.default_rng(1).integers(0, 256, labels.shape[1:], dtype=np.uint8)
    got = edge_masked_confidence(torch.from_numpy(conf8.astype(np.float32))[None], labels, size=5, window=7)[0]
    mask = widen(label_edges(labels), 5)[0].numpy()
    assert np.array_equal(got.numpy()[mask], cv2.medianBlur(conf8, 7)[mask].astype(np.float32))


def test_a_batch_gives_each_image_the_result_it_gets_alone():
    labels = torch.stack([torch.from_numpy(blob_labels(s).astype(np.int64)) for s in range(3)])
    conf = torch.rand(labels.shape, generator=torch.Generator().manual_seed(0))
    batched = edge_masked_confidence(conf, labels, size=3, window=5)
    for i in range(3):
        assert torch.equal(batched[i], edge_masked_confidence(conf[i : i + 1], labels[i : i + 1], size=3, window=5)[0])


def test_edge_masking_lifts_an_image_whose_only_doubt_is_on_boundaries():
    # two confident regions; only the boundary columns are unsure
    logits = torch.zeros(1, 2, 20, 20)
    logits[0, 0, :, :10] = 5.0
    logits[0, 1, :, 10:] = 5.0
    logits[0, :, :, 9:11] = 0.0  # boundary: 50/50
    plain = ConfidencePolicy(th_pix=0.9, edges=None).image_confidence(logits)
    masked = ConfidencePolicy(th_pix=0.9, edges=EdgeMasking(size=3, window=7)).image_confidence(logits)
    assert plain.item() == pytest.approx(0.9)  # 2 of 20 columns below th_pix
    assert masked.item() == pytest.approx(1.0)


def test_image_confidence_and_exit_decisions_are_monotone_in_the_thresholds():
    logits = torch.randn(6, 5, 16, 16, generator=torch.Generator().manual_seed(2)) * 3
    policy_at = lambda th: ConfidencePolicy(th_pix=th)  # noqa: E731
    values = torch.stack([policy_at(th).image_confidence(logits) for th in (0.2, 0.4, 0.6, 0.8, 0.95)])
    assert (values[1:] <= values[:-1]).all()
    exits = torch.stack([policy_at(0.6).exits(logits, th_img) for th_img in (0.1, 0.5, 0.9)])
    assert (exits[1:] <= exits[:-1]).all()  # a stricter th_img lets fewer images out, never new ones


def test_confidence_curve_equals_thresholding_at_every_grid_point():
    conf = torch.rand(4, 9, 11, generator=torch.Generator().manual_seed(3))
    conf[0, 0, :4] = torch.tensor([0.5, 0.25, 0.0, 1.0])  # values exactly on the grid
    grid = torch.linspace(0, 1, 21)
    curve = confidence_curve(conf, grid)
    direct = torch.stack([image_confidence(conf, float(t)) for t in grid], dim=1)
    assert torch.allclose(curve, direct)
    with pytest.raises(ValueError, match="ascending"):
        confidence_curve(conf, grid.flip(0))


def test_naive_confidence_and_pixel_confidence():
    logits = torch.tensor([[[[0.0, 2.0]], [[0.0, 0.0]]]])  # 1 image, 2 classes, 1x2 pixels
    conf = pixel_confidence(logits)
    assert conf[0, 0, 0].item() == pytest.approx(0.5)
    assert conf[0, 0, 1].item() == pytest.approx(1 / (1 + np.exp(-2)))
    assert naive_confidence(conf).item() == pytest.approx(conf.mean().item())
    assert ConfidencePolicy(naive=True).image_confidence(logits).item() == pytest.approx(conf.mean().item())


@pytest.mark.parametrize("kwargs", [{"size": 2}, {"window": 4}, {"size": 0}])
def test_bad_edge_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        EdgeMasking(**kwargs)


@pytest.mark.parametrize("backend", ["opencv", "tensor"])
@pytest.mark.parametrize("size, window", [(1, 3), (3, 7), (5, 9)])
def test_the_median_free_fraction_equals_thresholding_the_edge_median(backend, size, window):
    """The deployed policy never computes a median; it must decide exactly as the median it stands for."""
    torch.manual_seed(size + window)
    low = torch.randn(3, 6, 12, 16) * 3
    logits = torch.nn.functional.interpolate(low, size=(48, 64), mode="bilinear", align_corners=False)
    conf, labels = pixel_confidence(logits), predicted_labels(logits)
    assert torch.equal(labels, logits.argmax(1))
    masked = edge_masked_confidence(conf, labels, size=size, window=window)
    # thresholds at the confidences themselves: the ties between ">=" and ">" are where a wrong count would show
    for th in [0.3, 0.5, 0.8, *conf.flatten()[::997].tolist(), *masked.flatten()[::1009].tolist()]:
        want = image_confidence(masked, th)
        got = edge_masked_fraction(conf, labels, th, size=size, window=window, backend=backend)
        assert torch.equal(got, want), th
    assert torch.equal(
        ConfidencePolicy(th_pix=0.5, edges=EdgeMasking(size, window)).image_confidence(logits),
        image_confidence(masked, 0.5),
    )
