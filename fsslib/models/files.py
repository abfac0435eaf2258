"""Reading weight files with errors that say what is missing and how to make or fetch it: every file fsslib
reads with ``torch.load`` (checkpoints, pretrained weights, a pretraining run's saved state) goes through
:func:`read_weights`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fsslib.errors import CheckpointError


def read_weights(path: str | Path, what: str, fix: str, unreadable_fix: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file raises
    :class:`~fsslib.errors.CheckpointError` naming ``what`` it should hold and the ``fix`` (for an unreadable
    file ``unreadable_fix``, when given)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder, not a file.", fix)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist.", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        # torch's first sentence only: its message goes on to advise an unsafe load of arbitrary objects
        reason = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:200]
        raise CheckpointError(f"{what} {path} cannot be read ({type(error).__name__}: {reason}).",
                              unreadable_fix or fix) from None
