"""The exit losses on hand-made examples, computed independently with plain Python math."""

import math

import pytest
import torch

from mess_core.train.losses import ExitLoss, ce_map, kd_map, pfd_map, positive_mask, reduce_pixels

IGNORE = 255


def softmax(values, t=1.0):
    exps = [math.exp(v / t) for v in values]
    return [e / sum(exps) for e in exps]


# one image, 3 classes, 2x2 pixels; pixel (r, c) -> logits over classes
TEACHER = {(0, 0): [3.0, 0.0, 0.0], (0, 1): [0.0, 2.0, 0.5], (1, 0): [0.0, 0.0, 1.0], (1, 1): [1.0, 0.0, 0.0]}
STUDENT = {(0, 0): [0.5, 0.2, -0.1], (0, 1): [0.1, 0.3, 0.9], (1, 0): [-0.4, 0.8, 0.0], (1, 1): [0.0, 0.0, 2.0]}
# labels: teacher right on (0,0) and (1,0), wrong on (0,1), and (1,1) is ignored
LABEL = {(0, 0): 0, (0, 1): 2, (1, 0): 2, (1, 1): IGNORE}


def as_tensor(per_pixel):
    t = torch.zeros(1, 3, 2, 2)
    for (r, c), v in per_pixel.items():
        t[0, :, r, c] = torch.tensor(v)
    return t


def label_tensor():
    t = torch.zeros(1, 2, 2, dtype=torch.long)
    for (r, c), v in LABEL.items():
        t[0, r, c] = v
    return t


def expected_pfd(alpha, t):
    out = {}
    for px, label in LABEL.items():
        if label == IGNORE:
            out[px] = 0.0
            continue
        ps = softmax(STUDENT[px])
        ce = -math.log(ps[label])
        positive = max(range(3), key=lambda k: TEACHER[px][k]) == label
        ps_t, pt_t = softmax(STUDENT[px], t), softmax(TEACHER[px], t)
        kl = sum(q * (math.log(q) - math.log(p)) for q, p in zip(pt_t, ps_t)) * t * t
        out[px] = alpha * (ce if positive else 0.0) + (1 - alpha) * kl
    return out


@pytest.mark.parametrize("alpha,temperature", [(0.5, 1.0), (0.8, 2.0), (0.0, 1.0), (1.0, 3.0)])
def test_pfd_matches_the_formula_pixel_by_pixel(alpha, temperature):
    got = pfd_map(
        as_tensor(STUDENT),
        as_tensor(TEACHER),
        label_tensor(),
        alpha=alpha,
        temperature=temperature,
        ignore_index=IGNORE,
    )
    for (r, c), value in expected_pfd(alpha, temperature).items():
        assert got[0, r, c].item() == pytest.approx(value, rel=1e-5, abs=1e-6), (r, c)


def test_positive_mask_keeps_only_pixels_the_teacher_gets_right():
    mask = positive_mask(as_tensor(TEACHER), label_tensor(), ignore_index=IGNORE)
    assert mask[0].tolist() == [[1.0, 0.0], [1.0, 0.0]]


def test_pfd_gradient_reaches_the_student_only_and_skips_filtered_and_ignored_pixels():
    student = as_tensor(STUDENT).requires_grad_()
    teacher = as_tensor(TEACHER).requires_grad_()
    pfd_map(student, teacher, label_tensor(), alpha=1.0, ignore_index=IGNORE).sum().backward()
    assert teacher.grad is None or not teacher.grad.any()
    grad = student.grad[0]
    assert grad[:, 0, 0].abs().sum() > 0 and grad[:, 1, 0].abs().sum() > 0  # positive pixels train
    assert not grad[:, 0, 1].any()  # teacher wrong: no label supervision at alpha = 1
    assert not grad[:, 1, 1].any()  # ignored


def test_kd_is_zero_when_student_equals_teacher_and_positive_otherwise():
    t = as_tensor(TEACHER)
    assert kd_map(t.clone(), t, temperature=2.0).abs().max() < 1e-6
    assert (kd_map(as_tensor(STUDENT), t) > 0).all()


def test_exit_loss_kinds_and_reduction_over_global_valid_pixels():
    s, t, y = as_tensor(STUDENT), as_tensor(TEACHER), label_tensor()
    ce = ExitLoss("ce")(s, t, y, ignore_index=IGNORE)
    assert torch.allclose(ce, ce_map(s, y, ignore_index=IGNORE))
    assert ce[0, 1, 1] == 0
    kd = ExitLoss("kd", temperature=2.0)(s, t, y, ignore_index=IGNORE)
    assert kd[0, 1, 1] == 0 and kd[0, 0, 1] > 0
    pfd = ExitLoss("pfd", alpha=0.3)(s, t, y, ignore_index=IGNORE)
    assert torch.allclose(pfd, pfd_map(s, t, y, alpha=0.3, ignore_index=IGNORE))
    # the mean over 3 valid pixels, and a larger global count scales it down exactly
    assert reduce_pixels(pfd, 3).item() == pytest.approx(pfd.sum().item() / 3)
    assert reduce_pixels(pfd, 6).item() == pytest.approx(pfd.sum().item() / 6)


@pytest.mark.parametrize("kwargs", [{"kind": "mse"}, {"alpha": 1.5}, {"temperature": 0.0}])
def test_exit_loss_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        ExitLoss(**kwargs)


@pytest.mark.parametrize(
    "kind,alpha,temperature", [("pfd", 0.5, 1.0), ("pfd", 0.3, 2.0), ("kd", 0.5, 3.0), ("ce", 0.5, 1.0)]
)
def test_the_fused_training_loss_equals_the_per_pixel_definition_in_value_and_gradient(kind, alpha, temperature):
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, 6, 7, generator=g) * 3
    target = torch.randint(0, 5, (2, 6, 7), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.25] = IGNORE
    target[0, 0, :3] = teacher[0, :, 0, :3].argmax(0)  # some positives for PFD's filter
    loss = ExitLoss(kind, alpha=alpha, temperature=temperature)
    a = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64).requires_grad_()
    b = a.detach().clone().requires_grad_()
    reference = loss(a, teacher.double(), target, ignore_index=IGNORE).sum()
    reference.backward()
    fused = loss.sum(b, loss.targets(teacher.double(), target, ignore_index=IGNORE))
    fused.backward()
    assert fused.item() == pytest.approx(reference.item(), rel=1e-9)
    assert torch.allclose(a.grad, b.grad, atol=1e-10)
