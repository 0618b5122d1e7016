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

__all__ = ["ExitLoss", "ce_map", "kd_map", "pfd_map", "positive_mask", "reduce_pixels", "EXIT_LOSSES"]

EXIT_LOSSES = ("pfd", "kd", "ce")


def ce_map(logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int) -> torch.Tensor:
    """Per-pixel cross-entropy, zero on ``ignore_index`` pixels."""
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")


def kd_map(
    student: torch.Tensor, teacher: torch.Tensor, *, temperature: float = 1.0, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-pixel KL(teacher || student) of the temperature-softened distributions, times ``temperature**2`` (so the
    gradient scale does not shrink with the temperature, as in Hinton et al.). The teacher gets no gradient."""
    log_p_student = F.log_softmax(student.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher.detach().float() / temperature, dim=1)
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
