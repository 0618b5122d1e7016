"""The heavy objects every page reads: studies, their networks, results, fronts, report sets and datasets, loaded
once per process with ``st.cache_resource`` and only read afterwards. Pages never change a cached object (a network's
settings included); per-user choices live in ``st.session_state`` (:mod:`app.state`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app.heap import heavy_object_loaded
from app.settings import REPO
from app.views.pareto import sample_instances, thin_cloud
from app.views.upload import DatasetSource, dataset_source
from mess_core.data import build_dataset
from mess_core.evaluate.cache import EvaluationCache
from mess_core.models.trust import key_path
from mess_core.search.heldout import check_report_set
from mess_core.search.report import exit_class_iou, with_drop_intervals
from mess_core.search.transfer import transfer_beside
from mess_core.study import Study, open_study
from mess_core.study.evaluate import score_rows


@st.cache_resource(show_spinner="Opening the study...", max_entries=8)
def load_study(path: str) -> Study:
    study = open_study(path)
    study.cache  # noqa: B018 -- read (and validate) the evaluation cache now, not on the first slider move
    heavy_object_loaded()
    return study


@st.cache_resource(show_spinner=False, max_entries=8)
def study_problems(path: str) -> list[str]:
    return load_study(path).verify()


def untrusted_code(path: str) -> str | None:
    """What building the study's model runs that this machine did not record (see
    :meth:`mess_core.study.Study.untrusted_code`), or None."""
    return _untrusted_code(path, str(key_path()))


@st.cache_resource(show_spinner=False, max_entries=16)
def _untrusted_code(path: str, key: str) -> str | None:  # by key too: signatures are checked against this one
    return load_study(path).untrusted_code()


@st.cache_resource(show_spinner="Loading the multi-exit network...", max_entries=4)
def network(path: str, consent: bool) -> tuple[Any, dict[str, Any]]:
    """The study's network in eval mode and its metadata, shared by every session; ``consent``: whether its model
    code may run (:func:`app.consent.load_network` asks)."""
    # the engine checks the files on disk again: a cached answer about a folder replaced since cannot let code run
    net, meta = load_study(path).load_network(consent=consent)
    heavy_object_loaded()
    return net.eval(), meta


@st.cache_resource(show_spinner="Tuning on one part of the images, scoring on the other...", max_entries=8)
def transfer(path: str, mode: str) -> pd.DataFrame | None:
    """The transfer check beside the study's rows of ``mode`` (:func:`mess_core.search.transfer.transfer_beside`):
    the build's, or computed from the cache for a study built before the build stored it."""
    study = load_study(path)
    check = study.transfer_check(mode, compute=True)
    return None if check is None else transfer_beside(study.results(mode), check)


@st.cache_resource(show_spinner="Reading the report set...", max_entries=8)
def load_report_set(study_path: str, cache_path: str) -> EvaluationCache:
    """A cache of other images evaluated from this study's network (its report split, or `study evaluate
    --cache`), checked against the study's tuning cache."""
    other = EvaluationCache.load(cache_path)
    check_report_set(load_study(study_path).cache, other, where=cache_path)
    return other


@st.cache_resource(show_spinner="Scoring every row on the report set...", max_entries=8)
def report_rows(study_path: str, cache_path: str) -> pd.DataFrame:
    return score_rows(load_study(study_path), load_report_set(study_path, cache_path))


@st.cache_resource(show_spinner="Reading the results...", max_entries=16)
def results(path: str, mode: str) -> pd.DataFrame:
    """The study's results table with every row's drop and its bootstrap interval (computed from the cache, over the
    study's scene blocks)."""
    study = load_study(path)
    return with_drop_intervals(study.results(mode), study.cache, block=study.promise_rule["block"])


@st.cache_resource(show_spinner="Reading the fronts...", max_entries=8)
def fronts(path: str) -> pd.DataFrame:
    return load_study(path).fronts()


@st.cache_resource(show_spinner=False, max_entries=8)
def class_iou(path: str) -> pd.DataFrame:
    return exit_class_iou(load_study(path).cache)


@st.cache_resource(show_spinner="Evaluating a sample of instances...", max_entries=8)
def cloud(path: str) -> pd.DataFrame:
    # only the points the plot can tell apart: the cloud is redrawn on every slider move of the Pareto page
    return thin_cloud(sample_instances(load_study(path).cache, count=600, seed=0))


def dataset_origin(study: Study) -> DatasetSource:
    """Where the study's images are on this machine (a relative folder is taken from the repository)."""
    return dataset_source(study.manifest.get("config") or {}, study.cache.meta, REPO)


@st.cache_resource(show_spinner=False, max_entries=4)
def dataset_of(origin: DatasetSource) -> Any:
    """The dataset ``origin`` names, built once per process (Streamlit keys the cache by its fields)."""
    return build_dataset(
        origin.name, root=origin.root, split=origin.split, groups=origin.groups, **dict(origin.options)
    )
