"""What a sound evaluation cache satisfies beyond its array shapes: metadata that agrees with itself and with the
arrays, and counts an evaluation can produce. A damaged or hand-edited file would otherwise give nonsense such as a
negative mIoU. Each check returns the first contradiction it finds, worded for the user, or None;
:meth:`~mess_core.evaluate.cache.EvaluationCache.validate` raises it as a
:class:`~mess_core.evaluate.cache.CacheError`.

Example:
    >>> import numpy as np
    >>> meta_problem({"th_pix_grid": [0.9, 0.5]}, np.zeros((1, 3, 2)), "x.npz").split(";")[0]
    "x.npz: meta field 'th_pix_grid' is [0.9, 0.5], expected increasing numbers in (0, 1]"
    >>> count_problem({"tp": np.array([[[-1]]])}, "x.npz").split(";")[0]
    "x.npz: array 'tp' holds a negative value (-1) at index [0, 0, 0] (1 entry in all)"
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["meta_problem", "count_problem"]

_FIX = "the file is damaged or was edited; rebuild it with `python -m mess_core cache`"


def meta_problem(meta: dict[str, Any], tp: np.ndarray, where: str) -> str | None:
    """Metadata that contradicts itself or the arrays (``tp`` gives the image and class counts): the grid (numbers
    in (0, 1], strictly increasing: the search reads it by position), the space (unique configuration ids), the class
    count and names, the input size, and the image names."""
    grid = meta.get("th_pix_grid")
    if (
        not isinstance(grid, list)
        or not grid
        or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 1 for t in grid)
        or any(a >= b for a, b in zip(grid, grid[1:]))
    ):
        return f"{where}: meta field 'th_pix_grid' is {str(grid)[:120]}, expected increasing numbers in (0, 1]; {_FIX}"
    space = meta.get("space")
    if not isinstance(space, list) or not space or not all(isinstance(c, str) and c for c in space):
        return f"{where}: meta field 'space' is {str(space)[:120]}, expected configuration ids; {_FIX}"
    if len(set(space)) != len(space):
        twice = sorted({c for c in space if space.count(c) > 1})
        return f"{where}: meta field 'space' lists {', '.join(twice)} more than once; {_FIX}"
    k = tp.shape[2] if tp.ndim == 3 else None
    if "num_classes" in meta and meta["num_classes"] != k:
        return f"{where}: meta field 'num_classes' is {meta['num_classes']!r} but the arrays hold {k} classes; {_FIX}"
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != k):
        return f"{where}: meta field 'classes' names {str(classes)[:120]}, not the {k} classes of the arrays; {_FIX}"
    size = meta.get("input_size")
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        return f"{where}: meta field 'input_size' is {str(size)[:120]}, expected [height, width]; {_FIX}"
    if tp.ndim != 3 or tp.shape[0] == 0:
        return f"{where}: holds no images; build the cache on a split with images"
    decision = meta.get("decision_ms")
    if decision is not None and not (
        isinstance(decision, dict)
        and all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0
            for k, v in decision.items()
        )
    ):
        return f"{where}: meta field 'decision_ms' is {str(decision)[:120]}, expected milliseconds per policy; {_FIX}"
    names = meta.get("images")
    if names is not None and (not isinstance(names, list) or len(names) != tp.shape[0]):
        return (
            f"{where}: meta field 'images' names {len(names) if isinstance(names, list) else names!r} "
            f"images but the arrays hold {tp.shape[0]}; {_FIX}"
        )
    return None


def count_problem(arrays: dict[str, np.ndarray], where: str) -> str | None:
    """Counts no evaluation can produce, in the cache's ``arrays`` (by name, each array of the file): every count is
    finite and >= 0, a class's true positives never exceed its predictions nor its labels, and no image has more
    predicted, labelled or confident pixels than it has pixels."""
    return _value_problem(arrays, where) or _consistency_problem(arrays, where)


def _first_bad(where: str, name: str, bad: np.ndarray, detail: str) -> str:
    """The contradiction ``detail`` of array ``name``, located at its first ``bad`` entry."""
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    count = int(bad.sum())
    return (
        f"{where}: array '{name}' {detail} at index {list(idx)} ({count} entr"
        f"{'y' if count == 1 else 'ies'} in all); {_FIX}"
    )


def _value_problem(arrays: dict[str, np.ndarray], where: str) -> str | None:
    """An array of non-numbers, or a number no count or cost can be (non-finite, negative)."""
    for name, arr in arrays.items():
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            return f"{where}: array '{name}' holds {arr.dtype} values, expected numbers; {_FIX}"
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            return _first_bad(where, name, ~np.isfinite(arr), "holds a non-finite value")
        if (arr < 0).any():
            first = arr[tuple(np.argwhere(arr < 0)[0])]
            return _first_bad(where, name, arr < 0, f"holds a negative value ({first})")
    return None


def _consistency_problem(arrays: dict[str, np.ndarray], where: str) -> str | None:
    """Counts that contradict each other or the images' pixel counts."""
    tp, pred, label, pixels = arrays["tp"], arrays["pred"], arrays["label"], arrays["pixels"]
    if (tp > pred).any():
        return _first_bad(where, "tp", tp > pred, "exceeds 'pred' (more true positives than predictions)")
    if (tp > label[:, None, :]).any():
        return _first_bad(
            where, "tp", tp > label[:, None, :], "exceeds 'label' (more true positives than labelled pixels)"
        )
    if (pixels == 0).any():
        return _first_bad(where, "pixels", pixels == 0, "is 0 (an image without pixels)")
    px = pixels.astype(np.float64)
    for name, total in (("label", label.sum(-1)), ("pred", pred.sum(-1))):
        over = total > (px if total.ndim == 1 else px[:, None])
        if over.any():
            return _first_bad(where, name, over, "sums to more pixels than the image has (see 'pixels')")
    for name in ("above", "above_plain"):
        over = arrays[name] > px[:, None, None]
        if over.any():
            return _first_bad(where, name, over, "counts more confident pixels than the image has (see 'pixels')")
    over = arrays["conf_sum"] > px[:, None] * (1 + 1e-6) + 1e-6
    if over.any():
        return _first_bad(where, "conf_sum", over, "exceeds the image's pixel count (confidences are at most 1)")
    if label.sum() == 0:
        return f"{where}: array 'label' holds no labelled pixel at all: no accuracy can be measured; {_FIX}"
    for name in ("above", "above_plain"):  # a higher threshold never finds more confident pixels
        rising = np.diff(arrays[name].astype(np.int64), axis=-1) > 0
        if rising.any():
            return _first_bad(
                where, name, rising, "counts more confident pixels at a higher th_pix (see 'th_pix_grid')"
            )
    return None
