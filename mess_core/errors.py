"""Exceptions raised by mess_core.

Every error names the thing the user has to change (a module path, a source line, an argument) and says how.
They subclass ValueError so that callers who only care about "bad input" can catch one type.
"""

from __future__ import annotations


class MessError(ValueError):
    """Base class of every error mess_core raises for bad input."""


class TraceFailure(MessError):
    """torch.fx could not trace the model; the message names the module and source line that broke tracing."""


class ConversionError(MessError):
    """The model traced, but it cannot be turned into a multi-exit network as asked."""


class SpecError(MessError):
    """An exit configuration (or its id) is not valid."""


class GuardFailure(RuntimeError):
    """An input took a different branch of shape-dependent control flow than the example used for conversion."""


class DataError(MessError):
    """A dataset file or folder is unusable; the message names the file and what is wrong with it."""


class TrainingError(MessError):
    """Training cannot go on (a non-finite loss, a checkpoint that does not fit); the message says what to do."""
