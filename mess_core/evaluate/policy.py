"""The MESS exit policy: when is an early exit's segmentation of an image good enough to stop?

Everything here works on whole batches of tensors, on CPU or GPU, with no Python loop over images or pixels.

* Per-pixel confidence: the maximum softmax probability of an exit's logits.
* Edge masking (the MESS paper): pixels on semantic boundaries are naturally under-confident and must not veto an
  exit. M = the pixels where the exit's predicted label map changes (a pixel whose 4-neighbourhood holds another
  label: OpenCV's morphological gradient with a 3x3 cross, the label-map equivalent of a Canny edge), widened by a
  ``size`` x ``size`` square. On M the confidence is replaced by the median confidence of the ``window`` x
  ``window`` neighbourhood (borders replicated, as ``cv2.medianBlur`` does); elsewhere it is unchanged.
* Image confidence: the fraction of pixels whose (edge-masked) confidence is at least ``th_pix``.
* Exit rule at exit i: image confidence >= ``th_img[i]``.
* Peer: the naive policy (image confidence = mean pixel confidence). The oracle, a bound on every policy, is
  :mod:`mess_core.search.oracle`.

Example:
    >>> import torch
    >>> logits = torch.zeros(1, 2, 4, 4); logits[0, 0, :, :2] = 4.0; logits[0, 1, :, 2:] = 4.0
    >>> policy = ConfidencePolicy(th_pix=0.9, edges=EdgeMasking(size=1, window=3))
    >>> policy.image_confidence(logits)  # every pixel is 98% sure, boundary pixels included
    tensor([1.])
    >>> policy.exits(logits, th_img=0.95).tolist()
    [True]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "EdgeMasking",
    "ConfidencePolicy",
    "pixel_confidence",
    "label_edges",
    "widen",
    "edge_masked_confidence",
    "edge_masked_fraction",
    "predicted_labels",
    "image_confidence",
    "naive_confidence",
    "confidence_curve",
    "pixels_at_least",
]


def pixel_confidence(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) logits -> (B, H, W) maximum softmax probability (computed in float32 at least)."""
    wide = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return F.softmax(wide, dim=1).amax(dim=1)


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W) argmax over classes (the first on ties). ``max(dim=1)`` rather than ``argmax``: on
    the CPU argmax over a non-innermost dimension is some twenty times slower."""
    return logits.max(dim=1).indices


def label_edges(labels: torch.Tensor) -> torch.Tensor:
    """(B, H, W) label maps -> bool (B, H, W): pixels with a 4-neighbour of another label (both sides of a
    boundary), as OpenCV's morphological gradient with a 3x3 cross is non-zero."""
    edges = torch.zeros_like(labels, dtype=torch.bool)
    vertical = labels[:, 1:, :] != labels[:, :-1, :]
    horizontal = labels[:, :, 1:] != labels[:, :, :-1]
    edges[:, 1:, :] |= vertical
    edges[:, :-1, :] |= vertical
    edges[:, :, 1:] |= horizontal
    edges[:, :, :-1] |= horizontal
    return edges


def widen(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Dilate a bool (B, H, W) mask by a ``size`` x ``size`` square (odd ``size``; 1 = unchanged), like cv2.dilate."""
    if size <= 1:
        return mask
    if size % 2 == 0:
        raise ValueError(f"the structuring element size must be odd, not {size}")
    return F.max_pool2d(mask[:, None].float(), size, stride=1, padding=size // 2)[:, 0] > 0


def _median_at(conf: torch.Tensor, where: torch.Tensor, window: int) -> torch.Tensor:
    """The ``window`` x ``window`` median of ``conf`` (borders replicated) at the pixels of ``where``: only those
    pixels' neighbourhoods are gathered, so memory scales with the boundary, not the image."""
    b, y, x = where.nonzero(as_tuple=True)
    if b.numel() == 0:
        return conf[where]
    r = window // 2
    padded = F.pad(conf[:, None], (r, r, r, r), mode="replicate")[:, 0]
    offsets = torch.arange(window, device=conf.device)
    rows = (y[:, None] + offsets[None, :])[:, :, None]  # (M, w, 1) in padded coordinates
    cols = (x[:, None] + offsets[None, :])[:, None, :]  # (M, 1, w)
    patches = padded[b[:, None, None], rows, cols].reshape(b.numel(), window * window)
    return patches.median(dim=1).values  # window*window is odd: the exact middle value


def edge_masked_confidence(conf: torch.Tensor, labels: torch.Tensor, *, size: int = 3, window: int = 7) -> torch.Tensor:
    """Replace the confidence on widened label edges by its local median (see the module docstring)."""
    if window % 2 == 0 or window < 1:
        raise ValueError(f"the median window must be odd and positive, not {window}")
    mask = widen(label_edges(labels), size)
    out = conf.clone()
    out[mask] = _median_at(conf, mask, window)
    return out


def edge_masked_fraction(
    conf: torch.Tensor, labels: torch.Tensor, th_pix: float, *, size: int = 3, window: int = 7, backend: str = "auto"
) -> torch.Tensor:
    """(B,) fraction of pixels whose edge-masked confidence is >= ``th_pix``: exactly
    ``image_confidence(edge_masked_confidence(conf, labels, ...), th_pix)``, without any median. The median of a
    ``window`` x ``window`` neighbourhood is >= th_pix exactly when more than half of its pixels are, so a box count of
    the thresholded map (borders replicated, as for the median) decides every masked pixel. On the CPU OpenCV does the
    morphology and the box count per image (it beats the batched tensor path several times over at 360x480); on other
    devices the tensor path runs. ``backend`` ("auto", "opencv", "tensor") forces one."""
    if backend not in ("auto", "opencv", "tensor"):
        raise ValueError(f"backend must be 'auto', 'opencv' or 'tensor', not {backend!r}")
    passed = conf >= th_pix
    half = window * window // 2
    if backend == "opencv" or (backend == "auto" and conf.device.type == "cpu"):
        return _edge_masked_fraction_cv2(passed, labels, size, window, half)
    mask = widen(label_edges(labels), size)
    r = window // 2
    counts = F.pad(passed[:, None].float(), (r, r, r, r), mode="replicate")
    # separable box mean: exact here, the sums are small integers and the comparison sits half a pixel away
    counts = F.avg_pool2d(F.avg_pool2d(counts, (1, window), stride=1), (window, 1), stride=1)[:, 0]
    ok = torch.where(mask, counts > (half + 0.5) / (window * window), passed)
    return ok.flatten(1).float().mean(dim=1)


def _edge_masked_fraction_cv2(
    passed: torch.Tensor, labels: torch.Tensor, size: int, window: int, half: int
) -> torch.Tensor:
    import cv2
    import numpy as np

    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    square = np.ones((size, size), np.uint8)
    passed_np = passed.cpu().numpy().astype(np.uint8)
    labels_np = labels.cpu().numpy()
    labels_np = labels_np.astype(np.uint8 if labels_np.max(initial=0) < 256 else np.float32)
    fractions = []
    for ok, lab in zip(passed_np, labels_np):
        mask = cv2.morphologyEx(lab, cv2.MORPH_GRADIENT, cross)  # non-zero where a 4-neighbour has another label
        if size > 1:
            mask = cv2.dilate(mask, square)
        counts = cv2.boxFilter(ok, cv2.CV_16U, (window, window), normalize=False, borderType=cv2.BORDER_REPLICATE)
        masked = mask > 0
        fractions.append(int(ok[~masked].sum()) + int((counts[masked] > half).sum()))
    return torch.tensor(fractions, dtype=torch.float32) / passed[0].numel()


def image_confidence(conf: torch.Tensor, th_pix: float) -> torch.Tensor:
    """(B, H, W) pixel confidences -> (B,) fraction of pixels with confidence >= ``th_pix``."""
    return (conf >= th_pix).flatten(1).float().mean(dim=1)


def naive_confidence(conf: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B,) mean pixel confidence: the naive peer of :func:`image_confidence`."""
    return conf.flatten(1).float().mean(dim=1)


def pixels_at_least(conf: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(B, H, W) confidences and a sorted grid of G thresholds -> (B, G) int64: how many of each image's pixels have
    confidence >= each threshold, from one histogram per image (what the evaluation cache stores)."""
    thresholds = thresholds.to(conf.device, conf.dtype)
    if thresholds.numel() > 1 and not bool((thresholds[1:] >= thresholds[:-1]).all()):
        raise ValueError("pixels_at_least needs thresholds in ascending order")
    n, g = conf.shape[0], thresholds.numel()
    flat = conf.reshape(n, -1)
    # bucket k holds confidences in [t_{k-1}, t_k): a pixel counts for threshold j when its bucket index > j
    bucket = torch.bucketize(flat, thresholds, right=True)
    counts = torch.bincount(
        (bucket + torch.arange(n, device=conf.device)[:, None] * (g + 1)).flatten(), minlength=n * (g + 1)
    ).view(n, g + 1)
    return counts.flip(1).cumsum(1).flip(1)[:, 1:]  # pixels in buckets j+1.. = confidence >= t_j


def confidence_curve(conf: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """(B, H, W) confidences and a sorted grid of G thresholds -> (B, G): the fraction of each image's pixels with
    confidence >= each threshold (:func:`image_confidence` at every threshold at once)."""
    return pixels_at_least(conf, thresholds).float() / conf[0].numel()


@dataclass(frozen=True)
class EdgeMasking:
    """Edge-masking parameters: ``size`` widens the label edges (odd square), ``window`` is the median window."""

    size: int = 3
    window: int = 7

    def __post_init__(self) -> None:
        if self.size < 1 or self.size % 2 == 0:
            raise ValueError(f"edge size must be an odd positive int, not {self.size}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"median window must be an odd positive int, not {self.window}")


@dataclass(frozen=True)
class ConfidencePolicy:
    """The MESS image-confidence policy: fraction of (edge-masked) pixel confidences >= ``th_pix``;
    ``edges=None`` switches edge masking off, ``naive=True`` uses the mean pixel confidence instead."""

    th_pix: float = 0.8
    edges: EdgeMasking | None = EdgeMasking()
    naive: bool = False

    def pixel_confidence(self, logits: torch.Tensor) -> torch.Tensor:
        conf = pixel_confidence(logits)
        if self.edges is None or self.naive:
            return conf
        return edge_masked_confidence(conf, predicted_labels(logits), size=self.edges.size, window=self.edges.window)

    def image_confidence(self, logits: torch.Tensor) -> torch.Tensor:
        if self.edges is not None and not self.naive:  # the deployed hot path: no median needed for a fraction
            return edge_masked_fraction(
                pixel_confidence(logits),
                predicted_labels(logits),
                self.th_pix,
                size=self.edges.size,
                window=self.edges.window,
            )
        conf = self.pixel_confidence(logits)
        return naive_confidence(conf) if self.naive else image_confidence(conf, self.th_pix)

    def exits(self, logits: torch.Tensor, th_img: float) -> torch.Tensor:
        """(B,) bool: which images the rule lets leave at this exit."""
        return self.image_confidence(logits) >= th_img
