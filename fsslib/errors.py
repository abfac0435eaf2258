"""User-facing errors and warnings.

Every error that bad input can trigger is raised here, with a message that names
the problem *and* the fix, so that learners never have to read a stack trace from
deep inside torch. fsslib's warnings print as their message (:func:`short_warning`) in a lesson
(``fsslib.notebook.setup``) and on the command line (``fsslib.config.run_command_line``).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fsslib.paths import PACKAGE_DIR

# Python's own formatter, kept across a reload of this module (while a hook of fsslib's is installed)
_python_warning = globals().get("_python_warning", warnings.formatwarning)


def short_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """A warning as fsslib prints it to a user: fsslib's own as its category and message (the file and line of
    fsslib that raised it say nothing to a user, and print the path of the machine that ran it); any other
    warning as Python prints it."""
    if Path(filename).resolve().is_relative_to(PACKAGE_DIR):
        return f"{category.__name__}: {message}\n"
    return _python_warning(message, category, filename, lineno, line)


@contextmanager
def short_warnings() -> Iterator[None]:
    """Print warnings with :func:`short_warning` inside the block (a command's run), as before after it."""
    previous = warnings.formatwarning
    warnings.formatwarning = short_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


class FsslibError(Exception):
    """Base class: a problem the user can fix; the message says how."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  How to fix: {fix}")

    def __reduce__(self) -> tuple:
        """Pickle as (problem, fix), so the error survives a worker process (e.g. a grid run)."""
        return type(self), (self.problem, self.fix)


class DatasetNotFoundError(FsslibError, FileNotFoundError):
    """A dataset root or one of its files is missing."""


class InvalidMaskError(FsslibError, ValueError):
    """A label mask holds values that are neither class ids nor 255."""


class EmptySupportMaskError(FsslibError, ValueError):
    """A support mask has no foreground pixel, so no prototype can be pooled."""


class UnknownNameError(FsslibError, KeyError):
    """An unknown method, preset, class, benchmark or option value."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return Exception.__str__(self)


class CorruptImageError(FsslibError, OSError):
    """An image or mask file cannot be decoded."""


class EpisodeShapeError(FsslibError, ValueError):
    """Episodes, predictions or labels whose ways, shots or values do not fit together."""


class CheckpointError(FsslibError, FileNotFoundError):
    """A checkpoint or pretrained weight file is missing or does not fit."""


def unknown(kind: str, name: object, choices: list[str] | tuple[str, ...]) -> UnknownNameError:
    """Build the standard 'unknown <kind>' error listing the valid choices."""
    return UnknownNameError(
        f"Unknown {kind} {name!r}.",
        f"use one of: {', '.join(map(str, choices))}.",
    )
