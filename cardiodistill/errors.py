"""Typed errors for user mistakes.

Every error a user can cause (a bad file, a wrong sampling rate, an unknown lead, a config
key that does not exist) is raised as a subclass of :class:`CardiodistillError`. Its message is
one line that names the thing at fault and the problem, so the CLI can print it as is and exit
with status 2, without a traceback. Bugs in the toolkit itself stay ordinary exceptions.
"""

from __future__ import annotations

from os import PathLike


def one_line(err: BaseException) -> str:
    """A foreign exception's message on one line (its type name if it has none), for wrapping
    library errors into a typed error: ``DataError(f"cannot read ...: {one_line(err)}", path)``."""
    return " ".join(str(err).split()) or type(err).__name__


class CardiodistillError(Exception):
    """Base class of every user-facing error. ``str(err)`` is a single line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(CardiodistillError):
    """An invalid preset, override or config value."""


def check_known(names, known, what: str, known_as: str = "known") -> tuple[str, ...]:
    """``names`` as a tuple when each is one of ``known``, else a :class:`ConfigError` that lists the unknown ones
    and ``known_as`` (``"unknown beat features ['x']; known: a, b"``)."""
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; {known_as}: {', '.join(known)}")
    return tuple(names)


class DataError(CardiodistillError):
    """A file or array that cannot be used: names the file (when there is one) and the problem."""

    def __init__(self, problem: str, path: str | PathLike[str] | None = None):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class LeadError(DataError):
    """An unknown lead name, or a lead a model needs that a record cannot provide."""


class SamplingRateError(DataError):
    """A sampling rate that is missing, invalid or cannot be honoured."""


class RunFolderError(CardiodistillError):
    """A run folder that cannot be created, resumed or overwritten as asked."""
