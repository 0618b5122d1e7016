"""Keeping Streamlit's garbage collection after every run short: the long-lived heap (modules, cached studies and
networks) is moved out of the collector's sight once it is loaded.

Streamlit runs a full collection after every run (``runner.postScriptGC``), slider moves included, before the
browser hears that the run finished; with torch, pandas and plotly loaded that walk is most of a slider move's wait
(BENCHMARKS.md, "Second pass: where the rest went", measures it). :func:`settle_heap` collects the garbage and
freezes every object still alive (``gc.freeze``); what a run creates afterwards is still collected as before. The
price: a frozen object evicted from a cache later is freed by reference counting, but a reference cycle among frozen
objects would stay until the server stops."""

from __future__ import annotations

import functools
import gc


@functools.cache  # the cache is the "already settled" flag: cleared by :func:`heavy_object_loaded`
def settle_heap() -> None:
    """Called at the end of every run of the app: freezes the heap the first time, and after each new heavy
    object."""
    gc.collect()
    gc.freeze()


def heavy_object_loaded() -> None:
    """A loader made something heavy (a study, a network): freeze again at the end of this run."""
    settle_heap.cache_clear()
