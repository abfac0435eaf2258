"""User-facing errors and warnings.

Every error that bad input can trigger is raised here, with a message that names
the problem *and* the fix, so that learners never have to read a stack trace from
deep inside torch. fsslib's warnings print as their message (:func:`short_warning`) in a lesson
(``fsslib.notebook.setup``) and on the command line (``fsslib.config.run_command_line``).
"""
from __future__ import annotations

import os
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


def check_output_folder(out: str | Path, example: str = "runs/mine") -> None:
    """Check, before any work, that the folder ``--out`` names can be made and written in; nothing is created. A
    path under a file, a file in its place or a folder without write permission raises a
    :class:`~fsslib.errors.FsslibError` naming it (``example``: an ``--out`` value for the fix)."""
    out = Path(out)
    fix = f"pass --out a folder you can write in, e.g. --out {example}."
    if out.exists() and not out.is_dir():
        raise FsslibError(f"--out {out} is a file.", "pass a folder (it is created if missing).")
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise FsslibError(f"Cannot create the folder --out {out}: {existing} is a file.", fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FsslibError(f"Cannot write in the folder --out {out} ({existing} is not writable).", fix)
