"""User-facing errors.

Every error that bad input can trigger is raised here, with a message that names
the problem *and* the fix, so that learners never have to read a stack trace from
deep inside torch.
"""
from __future__ import annotations


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
