"""Confusion matrix and mIoU against a brute-force count."""

import numpy as np
import pytest
import torch

from mess_core.evaluate.evaluation import ConfusionMatrix


def brute_force_miou(pred, label, num_classes, ignore):
    ious = []
    for c in range(num_classes):
        valid = label != ignore
        p, t = (pred == c) & valid, (label == c) & valid
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious)), len(ious)


def test_matches_brute_force_over_several_batches():
    g = torch.Generator().manual_seed(3)
    cm = ConfusionMatrix(5, ignore_index=9)
    preds, labels = [], []
    for _ in range(3):
        label = torch.randint(0, 5, (2, 7, 9), generator=g)
        label[torch.rand(label.shape, generator=g) < 0.2] = 9
        pred = torch.randint(0, 5, (2, 7, 9), generator=g)
        cm.update(pred, label)
        preds.append(pred.numpy()), labels.append(label.numpy())
    expected, _ = brute_force_miou(np.concatenate(preds), np.concatenate(labels), 5, 9)
    assert cm.miou() == pytest.approx(expected)
    assert int(cm.matrix.sum()) == int(sum((t != 9).sum() for t in labels))


def test_classes_absent_from_prediction_and_label_are_skipped():
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(torch.tensor([[0, 0, 1, 3]]), torch.tensor([[0, 1, 1, 255]]))
    iou = cm.iou()
    assert torch.isnan(iou[2]) and torch.isnan(iou[3])  # class 3 only predicted on an ignored pixel
    assert cm.miou() == pytest.approx((0.5 + 0.5) / 2)
    summary = cm.summary(["a", "b", "c", "d"])
    assert summary["iou"]["c"] is None and summary["pixel_accuracy"] == pytest.approx(2 / 3)


def test_a_class_predicted_but_never_labelled_counts_as_zero():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(torch.tensor([[0, 2]]), torch.tensor([[0, 0]]))
    assert cm.iou()[2] == 0 and cm.miou() == pytest.approx((0.5 + 0.0) / 2)


def test_labels_outside_the_classes_are_refused():
    cm = ConfusionMatrix(3, ignore_index=255)
    with pytest.raises(ValueError, match=r"\[7\]"):
        cm.update(torch.tensor([[0, 1]]), torch.tensor([[0, 7]]))
