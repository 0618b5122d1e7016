"""The app's error boundaries: every page body and every fragment runs inside one, so that a failure becomes a
message in its page and never takes the app down."""

from __future__ import annotations

import contextlib
import functools
import traceback
from typing import Callable, Iterator, ParamSpec

import streamlit as st

from app.sidebar import choose_study
from mess_core.errors import MessError
from mess_core.study import Study


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


def guarded_fragment(body: Callable[P, None], *, run_every: float | None = None) -> Callable[P, None]:
    """``st.fragment`` with :func:`error_boundary` inside: a fragment reruns alone, outside its page's boundary, so
    every fragment of the app is made with this (never with a bare ``st.fragment``). ``functools.wraps`` keeps the
    body's module and name, which Streamlit uses to tell fragments apart. ``run_every`` (seconds): the fragment
    also reruns on its own that often (playback)."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with error_boundary():
            body(*args, **kwargs)

    return st.fragment(run, run_every=run_every)
