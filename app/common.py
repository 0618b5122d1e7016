"""What every page shares: the study chooser in the sidebar and the cached heavy objects.

Heavy objects (studies, networks, caches, fronts) are loaded once per process with ``st.cache_resource`` and only
read afterwards: pages never change a cached network's settings; per-user choices live in ``st.session_state``.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, ParamSpec

import pandas as pd
import streamlit as st

from app.views.pareto import sample_instances, thin_cloud
from mess_core.errors import MessError
from mess_core.evaluate.cache import EvaluationCache
from mess_core.io import expand_home
from mess_core.models.trust import key_path
from mess_core.search.heldout import check_report_set
from mess_core.search.report import exit_class_iou, with_drop_intervals
from mess_core.search.transfer import transfer_beside
from mess_core.study import DEFAULT_STUDY, Study, StudyError, list_studies, open_study
from mess_core.study.evaluate import score_rows

REPO = Path(__file__).resolve().parents[1]
OTHER = "another folder..."


def studies_root() -> Path:
    """Where the chooser looks for studies: ``precomputed/``, or ``$MESS_STUDIES`` (read on every run)."""
    return Path(os.environ.get("MESS_STUDIES", REPO / "precomputed"))


def default_study() -> str:
    return os.environ.get("MESS_DEFAULT_STUDY", DEFAULT_STUDY)


_HEAP = {"settled": False}


def settle_heap() -> None:
    """Called at the end of every run of the app: once something heavy was loaded (the first run's imports, a study,
    a network), collect the garbage and move every object still alive out of the cyclic garbage collector's sight
    (``gc.freeze``). Streamlit runs a full collection after every run (``runner.postScriptGC``), and with torch,
    pandas and plotly loaded that walks ~430,000 objects, ~190 ms on a 2-core machine, before the browser hears the
    run finished: on every slider move. Frozen objects are the long-lived ones (modules, cached studies); what a run
    creates afterwards is still collected as before. The price: a frozen object evicted from a cache later is freed
    by reference counting, but a reference cycle among frozen objects would stay until the server stops."""
    if not _HEAP["settled"]:
        gc.collect()
        gc.freeze()
        _HEAP["settled"] = True


@st.cache_resource(show_spinner="Opening the study...", max_entries=8)
def load_study(path: str) -> Study:
    study = open_study(path)
    study.cache  # noqa: B018 -- read (and validate) the evaluation cache now, not on the first slider move
    _HEAP["settled"] = False  # a new heavy object: freeze again at the end of this run
    return study


@st.cache_resource(show_spinner=False, max_entries=8)
def study_problems(path: str) -> list[str]:
    return load_study(path).verify()


CONSENT_KEY = "code_consent"


def untrusted_code(path: str) -> str | None:
    """What building the study's model runs that this machine did not record (see
    :meth:`mess_core.study.Study.untrusted_code`), or None."""
    return _untrusted_code(path, str(key_path()))


@st.cache_resource(show_spinner=False, max_entries=16)
def _untrusted_code(path: str, key: str) -> str | None:  # by key too: signatures are checked against this one
    return load_study(path).untrusted_code()


def code_allowed(study: Study, *, where: str) -> bool:
    """Whether this session may build the study's model. A model whose code this machine did not record (an import
    path or a model file in a study from elsewhere) needs the user's consent, asked here once per session and study:
    the confirmation names what will run. ``where`` keeps each page's button apart."""
    path = str(study.path)
    try:
        code = untrusted_code(path)
    except MessError as exc:  # a model this machine cannot build at all (a package not installed)
        st.error(str(exc))
        return False
    if code is None or path in st.session_state.get(CONSENT_KEY, set()):
        return True
    st.warning(
        f"Building this study's model runs {code}. It was not recorded on this machine (the study comes from "
        "elsewhere), and it would run with this server's permissions. Read that code before you allow it; "
        "the figures stored in the study need no code and are shown without it."
    )
    if st.button("I have read it: run this study's model code", key=f"consent_{where}"):
        st.session_state.setdefault(CONSENT_KEY, set()).add(path)
        st.rerun()
    return False


@st.cache_resource(show_spinner="Loading the multi-exit network...", max_entries=4)
def _network(path: str, consent: bool) -> tuple[Any, dict[str, Any]]:
    # the engine checks the files on disk again: a cached answer about a folder replaced since cannot let code run
    net, meta = load_study(path).load_network(consent=consent)
    _HEAP["settled"] = False
    return net.eval(), meta


def load_network(path: str) -> tuple[Any, dict[str, Any]]:
    """The study's network, shared by every session that may build it (see :func:`code_allowed`)."""
    return _network(path, path in st.session_state.get(CONSENT_KEY, set()))


@st.cache_resource(show_spinner="Tuning on one part of the images, scoring on the other...", max_entries=8)
def transfer(path: str, compute: bool) -> pd.DataFrame | None:
    """The transfer check beside the study's input-dependent rows (:func:`mess_core.search.transfer.transfer_beside`):
    the build's, or computed from the cache when ``compute`` (studies built before it)."""
    study = load_study(path)
    check = study.transfer_check(compute=compute)
    return None if check is None else transfer_beside(study.results("input-dependent"), check)


REPORT_SET_KEY = "report_set"


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


def report_set(study: Study) -> tuple[str, EvaluationCache] | None:
    """The report set chosen on the Study page for this study (its path and cache), or None."""
    path = st.session_state.get(REPORT_SET_KEY, {}).get(str(study.path))
    return (path, load_report_set(str(study.path), path)) if path else None


def choose_report_set(study: Study) -> tuple[str, EvaluationCache] | None:
    """The Study page's chooser: none, the study's own report split, or a cache `study evaluate --cache` wrote."""
    options = {"none": None}
    if study.manifest.get("report_cache"):
        shipped = study.manifest["report_cache"]
        options[f"its report split ({shipped})"] = str(study.path / shipped)
    options["a cache written by `study evaluate --cache`..."] = ""
    chosen = st.selectbox(
        "report set: other labelled images to score every row on, as shipped", list(options), key="report_set_choice"
    )
    path = options[chosen]
    if path == "":
        path = st.text_input(
            "cache file (.npz)",
            key="report_set_path",
            placeholder="python -m mess_core study evaluate STUDY --data ... --cache FILE",
        ).strip()
    held = st.session_state.setdefault(REPORT_SET_KEY, {})
    held[str(study.path)] = path or None
    return report_set(study)


@st.cache_resource(show_spinner="Reading the results...", max_entries=16)
def results(path: str, mode: str) -> pd.DataFrame:
    """The study's results table with every row's drop and its bootstrap interval (computed from the cache)."""
    study = load_study(path)
    return with_drop_intervals(study.results(mode), study.cache)


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


def choose_study() -> Study | None:
    """The sidebar chooser: a study of ``precomputed/`` or any folder the user types; None (with a message in the
    page) when nothing usable is chosen."""
    root = studies_root()
    found = {p.name: p for p in list_studies(root)}
    names = list(found) + [OTHER]
    default = names.index(default_study()) if default_study() in found else 0
    choice = st.sidebar.selectbox(
        "Study", names, index=default, key="study_choice", help=f"studies in {root}, or a study/run folder of your own"
    )
    if choice == OTHER:
        typed = st.sidebar.text_input(
            "Folder",
            key="study_folder",
            placeholder="/path/to/study or run folder",
            help="a study (manifest.json) or a run folder with multi_exit.pt and a *.npz cache",
        )
        if not typed:
            st.info(
                "Type the path of a study folder (or a run folder with multi_exit.pt and an evaluation cache) "
                "in the sidebar."
            )
            return None
        try:
            path = str(expand_home(typed, StudyError).resolve())
        except (ValueError, OSError) as exc:  # a NUL byte, an unknown ~user, a loop of links: not a path at all
            shown = typed if len(typed) <= 120 else f"{typed[:120]}... ({len(typed)} characters)"
            st.error(f"The folder {shown!r} is not a usable path ({exc}); type the path of a study folder.")
            return None
    else:
        path = str(found[choice].resolve())
    try:
        study = load_study(path)
    except MessError as exc:
        st.error(f"This study cannot be opened: {exc}")
        return None
    problems = study_problems(path) if study.is_packed else []
    if problems:
        st.warning(
            "This study's files differ from its manifest (the figures may not match the weights): "
            + "; ".join(problems)
        )
    meta = study.cache.meta
    st.sidebar.caption(
        f"**{study.name}**  \n{meta.get('model')} on {meta.get('dataset')} {meta.get('split')}, "
        f"{'x'.join(map(str, meta.get('input_size', [])))}, {study.cache.num_images} images, "
        f"{study.cache.num_exits} exits x {len(study.cache.configs)} configurations"
    )
    st.session_state["study_path"] = path
    return study


@contextlib.contextmanager
def error_boundary() -> Iterator[None]:
    """Run a block of a page; an engine error becomes its message in the page, and any other failure is reported
    without taking the app down. Streamlit's own rerun and stop signals are BaseExceptions and pass through."""
    try:
        yield
    except MessError as exc:
        st.error(str(exc))
    except SystemExit as exc:  # a model's code called sys.exit(): it ends this page's run, not the server
        st.error(
            f"The model's code (or a library it calls) tried to end the program with sys.exit({exc.code!r}); a "
            "model must not call sys.exit() or exit(): remove that call. The other pages still work."
        )
    except Exception as exc:  # a bug of ours: say so plainly, keep the trace out of sight but available
        st.error(
            f"Something went wrong on this page ({type(exc).__name__}: {exc}). The other pages still work; "
            "please report this with the details below."
        )
        with st.expander("details"):
            st.code(traceback.format_exc())


def guarded(page: Callable[[Study], None]) -> Callable[[], None]:
    """A page body run with the chosen study, inside :func:`error_boundary` (choosing the study included)."""

    @functools.wraps(page)
    def run() -> None:
        with error_boundary():
            study = choose_study()
            if study is not None:
                page(study)

    return run


P = ParamSpec("P")


def guarded_fragment(body: Callable[P, None]) -> Callable[P, None]:
    """``st.fragment`` with :func:`error_boundary` inside: a fragment reruns alone, outside its page's boundary, so
    every fragment of the app is made with this (never with a bare ``st.fragment``). ``functools.wraps`` keeps the
    body's module and name, which Streamlit uses to tell fragments apart."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with error_boundary():
            body(*args, **kwargs)

    return st.fragment(run)


def pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}%"


__all__ = [
    "settle_heap",
    "load_study",
    "load_network",
    "code_allowed",
    "untrusted_code",
    "results",
    "fronts",
    "cloud",
    "choose_study",
    "error_boundary",
    "guarded",
    "guarded_fragment",
    "pct",
    "StudyError",
]
