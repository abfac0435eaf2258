"""Provenance-stamped saving: a checkpoint, and beside it (same name, ``.json``) how it was made.

Every checkpoint made here has a JSON with ``command`` (what was run), ``seed``,
``git_commit`` (of the code, read when the run starts), ``wall_time_minutes`` (start of
the run to the end of training), ``hardware``, the run's settings and its acceptance
metrics on held-out scenes. Checkpoints are plain dicts of str, int, float, lists and
tensors (floating-point weights in fp16), so they load with ``torch.load(weights_only=True)``.
Checkpoints made by an older command line carry ``remake``: the current command that makes
them again.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fsslib.errors import CheckpointError
from fsslib.paths import atomic_path, write_text
from fsslib.provenance import git_commit, hardware


def half_precision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors to fp16 (the file stays small), other tensors copied unchanged."""
    return {k: v.detach().half() if v.is_floating_point() else v.detach().clone() for k, v in state.items()}


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file: how a checkpoint names the exact teacher it was trained with."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_teacher(path: str | Path, recorded: str | None, what: str, fix: str) -> None:
    """Raise unless the teacher file at ``path`` is the one whose sha256 a student recorded (None: not recorded)."""
    if recorded is not None and file_sha256(path) != recorded:
        raise CheckpointError(f"{what} {path} is not the file it was trained with (its sha256 differs).", fix)


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """``torch.save`` a checkpoint dict atomically (a temporary file, then a rename); returns its path."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)


def write_metadata(checkpoint: str | Path, metadata: dict) -> Path:
    """Write ``metadata`` as the JSON beside ``checkpoint`` (``x.pt`` -> ``x.json``); returns its path."""
    return write_text(Path(checkpoint).with_suffix(".json"), json.dumps(metadata, indent=1) + "\n")


@dataclass
class RunRecord:
    """The provenance of one pretraining run; create it when the run starts."""

    command: str
    seed: int
    commit: str = field(default_factory=git_commit)  # the code that trains, before anything is written
    started: float = field(default_factory=time.time)

    def stamp(self, **hardware_extra: str) -> dict:
        """``command``, ``seed``, ``git_commit``, ``wall_time_minutes`` (so far) and ``hardware`` (+ extra fields)."""
        return {"command": self.command, "seed": self.seed, "git_commit": self.commit,
                "wall_time_minutes": round((time.time() - self.started) / 60, 2),
                "hardware": hardware(**hardware_extra)}
