"""Image by image: where every image of a split leaves under an instance, what it loses there against the final exit,
and the views the app links to a chosen instance (which images leave at each exit, two instances side by side).

Everything is exact and read from an :class:`~mess_core.evaluate.cache.EvaluationCache`'s per-image counts: an image's
IoU is its own mIoU (:meth:`EvaluationCache.image_miou`: the classes present in its labels or its prediction).

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> from mess_core.evaluate.instance import Instance, KeptExit
    >>> cache = EvaluationCache.random(images=8, exits=3, configs=2, seed=1)
    >>> inst = Instance.input_dependent([KeptExit(1, cache.configs[0], th_img=0.5)], th_pix=0.7)
    >>> table = image_table(cache, inst)
    >>> len(table) == 8 and bool((table["loss"] == table["final IoU"] - table["IoU"]).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from app.views.thresholds import ThresholdFigures, threshold_summary
from mess_core.errors import MessError
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, evaluate, output_rows

__all__ = [
    "PRESETS",
    "image_table",
    "select_images",
    "images_with_class",
    "exit_examples",
    "LinkedView",
    "linked_view",
    "compare_figures",
    "ImageTableError",
]

# the image browser's presets: what each shows, in what order
PRESETS = {
    "all images": "every image, in the split's order",
    "left early and lost most": "images that leave before the final exit, the largest IoU loss first",
    "hardest at the final exit": "every image, the lowest IoU at the final exit first",
    "hardest for every exit": "every image, the lowest best IoU over every head (early and final) first",
}


class ImageTableError(MessError):
    """A preset or class the image browser does not know."""


def image_table(cache: EvaluationCache, instance: Instance) -> pd.DataFrame:
    """One row per image of ``cache``'s split under ``instance``: ``image`` (its index in the split), ``name``,
    ``exit`` (the exit it takes, N = final), ``config``, ``IoU`` (its own mIoU at that exit), ``final IoU`` (at the
    final exit), ``loss`` (final IoU - IoU: what leaving early cost it; 0 at the final exit), ``best IoU`` (the
    highest over every head of the cache, early or final) and ``c_img exit e`` for each kept exit (its image
    confidence there under the instance's policy; input-dependent instances only)."""
    out = evaluate(cache, instance)
    per_image = cache.image_miou()  # (B, H)
    b = np.arange(cache.num_images)
    configs = [e.config for e in instance.exits] + ["final"]
    names = list(cache.meta.get("images") or [str(i) for i in b])
    iou, final = per_image[b, out.head_taken], per_image[:, cache.final_head]
    table = pd.DataFrame(
        {
            "image": b,
            "name": names,
            "exit": out.exit_left_at,
            "config": np.asarray(configs, dtype=object)[out.exit_taken],
            "IoU": iou,
            "final IoU": final,
            "loss": final - iou,
            "best IoU": per_image.max(axis=1),
        }
    )
    if instance.mode == "input-dependent" and instance.exits:
        c_img = cache.image_confidence(policy=instance.policy_name, th_pix=instance.policy.th_pix)
        for e, row in zip(instance.exits, output_rows(cache, instance)):
            table[f"c_img exit {e.exit}"] = c_img[:, row]
    return table


def images_with_class(cache: EvaluationCache, name: str) -> np.ndarray:
    """(B,) bool: the images whose labels hold at least one pixel of class ``name``."""
    classes = list(cache.meta.get("classes") or [f"class {k}" for k in range(cache.num_classes)])
    if name not in classes:
        raise ImageTableError(f"no class {name!r} in this study (classes: {', '.join(classes)})")
    return cache.label[:, classes.index(name)] > 0


def select_images(
    cache: EvaluationCache, table: pd.DataFrame, preset: str = "all images", contains: str | None = None
) -> pd.DataFrame:
    """The rows of :func:`image_table` a preset of :data:`PRESETS` shows, in its order (ties by image index),
    keeping only images whose labels hold class ``contains`` when one is given."""
    if preset not in PRESETS:
        raise ImageTableError(f"no preset {preset!r} (presets: {', '.join(PRESETS)})")
    rows = table
    if contains is not None:
        rows = rows[images_with_class(cache, contains)[rows["image"].to_numpy()]]
    if preset == "left early and lost most":
        rows = rows[rows["exit"] < cache.num_exits].sort_values(
            ["loss", "image"], ascending=[False, True], kind="stable"
        )
    elif preset == "hardest at the final exit":
        rows = rows.sort_values(["final IoU", "image"], kind="stable")
    elif preset == "hardest for every exit":
        rows = rows.sort_values(["best IoU", "image"], kind="stable")
    return rows.reset_index(drop=True)


def exit_examples(table: pd.DataFrame, per_exit: int = 3) -> pd.DataFrame:
    """A few images leaving at each exit of an :func:`image_table`: at most ``per_exit`` per exit, spread over the
    IoU there (the lowest, the median, the highest, ...), exits shallowest first; columns exit, image, name, IoU,
    final IoU."""
    picked = []
    for _, rows in table.sort_values(["exit", "IoU", "image"], kind="stable").groupby("exit", sort=True):
        positions = np.unique(np.linspace(0, len(rows) - 1, min(per_exit, len(rows))).round().astype(int))
        picked.append(rows.iloc[positions])
    if not picked:
        return pd.DataFrame(columns=["exit", "image", "name", "IoU", "final IoU"])
    return pd.concat(picked)[["exit", "image", "name", "IoU", "final IoU"]].reset_index(drop=True)


@dataclass(frozen=True)
class LinkedView:
    """What the Pareto page shows for a selected instance: its figures (exit histogram, per-class IoU beside the
    backbone) and a few images leaving at each exit."""

    instance: Instance
    figures: ThresholdFigures
    examples: pd.DataFrame  # exit_examples of its image table


def linked_view(cache: EvaluationCache, instance: Instance, per_exit: int = 3) -> LinkedView:
    """The linked views of ``instance`` on ``cache``'s split."""
    return LinkedView(
        instance, threshold_summary(cache, instance), exit_examples(image_table(cache, instance), per_exit)
    )


def compare_figures(a: ThresholdFigures, b: ThresholdFigures) -> pd.DataFrame:
    """Two instances' single-number figures side by side: rows mIoU (%), drop (pp) with the ends of its bootstrap
    interval, GFLOPs, speedup, images leaving early (%); columns A, B and B - A."""

    def numbers(f: ThresholdFigures) -> list[float]:
        low, high = (f.drop_interval.low, f.drop_interval.high) if f.drop_interval is not None else (np.nan, np.nan)
        return [100 * f.miou, f.drop_pp, low, high, f.gflops, f.speedup, 100 * f.left_early]

    level = next((f.drop_interval.level for f in (a, b) if f.drop_interval is not None), 0.9)
    left, right = np.asarray(numbers(a)), np.asarray(numbers(b))
    return pd.DataFrame(
        {
            "figure": [
                "mIoU (%)",
                "drop (pp)",
                f"drop, {100 * level:g}% interval low (pp)",
                f"drop, {100 * level:g}% interval high (pp)",
                "average GFLOPs",
                "speedup (GFLOPs)",
                "images leaving early (%)",
            ],
            "A": left,
            "B": right,
            "B - A": right - left,
        }
    )
