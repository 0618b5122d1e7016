"""Per-pixel training losses for exits: cross-entropy, knowledge distillation and Positive Filtering Distillation.

Every loss here returns a per-pixel map ``(B, H, W)`` that is zero on ignored pixels; the caller sums it and divides
by the number of valid pixels of the whole global batch (:func:`reduce_pixels`). Dividing by a global count rather
than averaging per-process means makes data-parallel and gradient-accumulated training compute exactly the gradient
of one big batch, whatever the share of ignored pixels on each process.

Positive Filtering Distillation (PFD, the MESS paper) trains early exit i with, per pixel,

    alpha * [argmax(final) == label] * CE(exit_i, label) + (1 - alpha) * KL(final || exit_i)

so the label only supervises pixels the final exit gets right, while distillation transfers the final exit's whole
distribution everywhere.

Example:
    >>> import torch
    >>> student, teacher = torch.zeros(1, 3, 1, 2), torch.tensor([[[[4.0, 0.0]], [[0.0, 4.0]], [[0.0, 0.0]]]])
    >>> label = torch.tensor([[[0, 2]]])  # the teacher is right on pixel 0, wrong on pixel 1
    >>> pfd = pfd_map(student, teacher, label, alpha=1.0, ignore_index=255)
    >>> pfd[0, 0, 1].item()  # with alpha = 1 only the filtered CE is left: zero where the teacher is wrong
    0.0
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "ExitLoss",
    "DistillTargets",
    "ce_map",
    "kd_map",
    "pfd_map",
    "positive_mask",
    "reduce_pixels",
    "fused_exit_loss",
    "EXIT_LOSSES",
]

EXIT_LOSSES = ("pfd", "kd", "ce")


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Losses of half-precision (autocast) logits are computed in float32; float32/64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def ce_map(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pixel cross-entropy, zero on ``ignore_index`` pixels; with ``class_weights`` (K,) each pixel's loss is
    scaled by its label's weight."""
    weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    return F.cross_entropy(_wide(logits), target, weight=weight, ignore_index=ignore_index, reduction="none")


def kd_map(
    student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pixel KL(teacher || student) of the temperature-softened distributions, times ``temperature**2`` (so the
    gradient scale does not shrink with the temperature, as in Hinton et al.). The teacher gets no gradient."""
    log_p_student = F.log_softmax(_wide(student) / temperature, dim=1)
    log_p_teacher = F.log_softmax(_wide(teacher.detach()) / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1) * temperature**2
    return kl if valid is None else kl * valid


def positive_mask(teacher: torch.Tensor, target: torch.Tensor, *, ignore_index: int) -> torch.Tensor:
    """1 where the teacher's prediction equals the label (and the label is not ignored), else 0."""
    return ((teacher.detach().argmax(dim=1) == target) & (target != ignore_index)).float()


def pfd_map(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int,
) -> torch.Tensor:
    """Positive Filtering Distillation per pixel (see the module docstring); zero on ignored pixels."""
    valid = (target != ignore_index).float()
    ce = ce_map(student, target, ignore_index=ignore_index) * positive_mask(teacher, target, ignore_index=ignore_index)
    return alpha * ce + (1.0 - alpha) * kd_map(student, teacher, temperature=temperature, valid=valid)


def reduce_pixels(loss_map: torch.Tensor, num_valid: float | torch.Tensor) -> torch.Tensor:
    """Sum of a per-pixel loss over ``num_valid`` pixels (the global batch's count; see the module docstring)."""
    return loss_map.sum() / max(float(num_valid), 1.0)


@dataclass(frozen=True)
class DistillTargets:
    """What every exit's loss needs from the teacher and the labels, computed once per batch and shared by all the
    heads trained on it (stage 2 trains a whole exit space against one teacher)."""

    target: torch.Tensor  # (B, H, W) labels, ignore pixels clamped to class 0 (their weights are zero)
    label_weight: torch.Tensor  # (B, H, W) weight of the label term: the positive mask (PFD) or the valid mask (CE)
    valid: torch.Tensor  # (B, H, W) 1 on non-ignored pixels
    p_teacher: torch.Tensor  # (B, C, H, W) the teacher's softened distribution
    teacher_term: torch.Tensor  # (B, H, W) sum_c p_t log p_t, the part of KL(teacher || student) fixed by the teacher


class _FusedExitLoss(torch.autograd.Function):
    """sum over pixels of alpha * w * CE + (1 - alpha) * T^2 * valid * KL(teacher || student), with the gradient
    written out: alpha * w * (softmax(s) - onehot) + (1 - alpha) * T * valid * (softmax(s / T) - p_t).

    Autograd through the per-pixel maps would keep four full-resolution maps alive per head until the backward
    pass; with a whole exit space that is gigabytes. This keeps only the student's logits."""

    @staticmethod
    def forward(ctx, student, target, label_weight, valid, p_teacher, teacher_term, alpha: float, temperature: float):
        s = _wide(student)
        total = s.new_zeros(())
        if alpha > 0:
            log_p = F.log_softmax(s, dim=1)
            ce = -log_p.gather(1, target[:, None]).squeeze(1)
            total = total + alpha * (label_weight * ce).sum()
        if alpha < 1:
            log_p_t = F.log_softmax(s / temperature, dim=1)
            kl = teacher_term - (p_teacher * log_p_t).sum(dim=1)
            total = total + (1 - alpha) * temperature**2 * (valid * kl).sum()
        ctx.save_for_backward(student, target, label_weight, valid, p_teacher)
        ctx.alpha, ctx.temperature = alpha, temperature
        return total

    @staticmethod
    def backward(ctx, grad_output):
        student, target, label_weight, valid, p_teacher = ctx.saved_tensors
        alpha, temperature = ctx.alpha, ctx.temperature
        s = _wide(student)
        grad = torch.zeros_like(s)
        if alpha > 0:
            p = F.softmax(s, dim=1)
            p.scatter_add_(1, target[:, None], -torch.ones_like(target[:, None], dtype=p.dtype))
            grad += (alpha * label_weight)[:, None] * p
        if alpha < 1:
            p_t = F.softmax(s / temperature, dim=1)
            grad += ((1 - alpha) * temperature * valid)[:, None] * (p_t - p_teacher)
        return (grad * grad_output).to(student.dtype), None, None, None, None, None, None, None


def fused_exit_loss(
    student: torch.Tensor, targets: DistillTargets, *, alpha: float, temperature: float
) -> torch.Tensor:
    """The summed per-pixel exit loss of one head (see :class:`ExitLoss`), memory-lean for training many heads."""
    return _FusedExitLoss.apply(
        student,
        targets.target,
        targets.label_weight,
        targets.valid,
        targets.p_teacher,
        targets.teacher_term,
        alpha,
        temperature,
    )


@dataclass(frozen=True)
class ExitLoss:
    """The loss an early exit is trained with: ``kind`` is "pfd", "kd" (pure distillation) or "ce" (labels only)."""

    kind: str = "pfd"
    alpha: float = 0.5
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in EXIT_LOSSES:
            raise ValueError(f"exit loss must be one of {EXIT_LOSSES}, not {self.kind!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], not {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, not {self.temperature}")

    def targets(
        self,
        teacher: torch.Tensor,
        target: torch.Tensor,
        *,
        ignore_index: int,
        class_weights: torch.Tensor | None = None,
    ) -> DistillTargets:
        """Precompute the teacher's share of the loss once per batch (see :meth:`sum`). With ``class_weights``
        (K,) both terms of every pixel are scaled by its label's weight (class balancing)."""
        with torch.no_grad():
            valid = (target != ignore_index).float()
            if self.kind == "pfd":
                label_weight = positive_mask(teacher, target, ignore_index=ignore_index)
            else:
                label_weight = valid
            if class_weights is not None:
                per_pixel = class_weights.to(target.device, torch.float32)[(target * (target != ignore_index))]
                valid = valid * per_pixel
                label_weight = label_weight * per_pixel
            if self.kind == "ce":
                p_teacher = teacher_term = torch.zeros((), device=target.device)
            else:
                log_p_teacher = F.log_softmax(_wide(teacher) / self.temperature, dim=1)
                p_teacher = log_p_teacher.exp()
                teacher_term = (p_teacher * log_p_teacher).sum(dim=1)
            return DistillTargets(
                target.clamp(min=0) * (target != ignore_index), label_weight, valid, p_teacher, teacher_term
            )

    @property
    def label_alpha(self) -> float:
        return {"ce": 1.0, "kd": 0.0}.get(self.kind, self.alpha)

    def sum(self, student: torch.Tensor, targets: DistillTargets) -> torch.Tensor:
        """The loss of one exit summed over pixels, equal to ``self(...).sum()`` but without its per-pixel maps."""
        return fused_exit_loss(student, targets, alpha=self.label_alpha, temperature=self.temperature)

    def __call__(
        self, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, *, ignore_index: int
    ) -> torch.Tensor:
        """The per-pixel loss map of one exit."""
        if self.kind == "ce":
            return ce_map(student, target, ignore_index=ignore_index)
        if self.kind == "kd":
            valid = (target != ignore_index).float()
            return kd_map(student, teacher, temperature=self.temperature, valid=valid)
        return pfd_map(
            student, teacher, target, alpha=self.alpha, temperature=self.temperature, ignore_index=ignore_index
        )
