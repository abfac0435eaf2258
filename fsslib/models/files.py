"""Reading weight files with errors that say what is missing and how to make or fetch it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fsslib.errors import CheckpointError


def read_weights(path: str | Path, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file raises
    :class:`~fsslib.errors.CheckpointError` naming ``what`` it should hold and the ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found.", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{what} {path} cannot be read ({type(error).__name__}: {error}).", fix)
