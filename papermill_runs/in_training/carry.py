"""Carry a grid's finished runs between machines that do not keep their files (no part of fsslib: a tool for a grid
that trains over several sittings).

    python papermill_runs/in_training/carry.py save OUTPUTS FOLDER   # finished runs of OUTPUTS -> FOLDER (float16)
    python papermill_runs/in_training/carry.py load FOLDER OUTPUTS   # back, then: python -m fsslib.runs GRID --resume

A finished run is one with ``metrics.json``. Its best checkpoint is kept in float16, as the zoo ships it (the zoo's
export converts it so anyway); its metrics, training summary and log are copied as they are (the executed notebook, megabytes of figures, is
not: the grid's table and the zoo do not read it).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

from fsslib.pretrain.saving import half_precision, save_checkpoint

RECORDS = ("metrics.json", "train_summary.json", "log.jsonl")  # the executed notebook (figures, MBs) stays behind


def save(outputs: Path, folder: Path) -> list[str]:
    """Copy each finished run of ``outputs`` not yet in ``folder``; returns the runs copied."""
    copied = []
    for run in sorted(path for path in outputs.iterdir() if (path / "metrics.json").is_file()):
        target = folder / run.name
        if (target / "metrics.json").is_file():
            continue
        target.mkdir(parents=True, exist_ok=True)
        state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
        save_checkpoint(target / "best.pt", {**state, "model": half_precision(state["model"])})
        for name in RECORDS:
            if (run / name).is_file():
                shutil.copy2(run / name, target / name)
        copied.append(run.name)
    return copied


def load(folder: Path, outputs: Path) -> list[str]:
    """Copy the carried runs into a grid's outputs folder, where ``--resume`` keeps them."""
    loaded = []
    for run in sorted(path for path in folder.iterdir() if (path / "metrics.json").is_file()):
        shutil.copytree(run, outputs / run.name, dirs_exist_ok=True)
        loaded.append(run.name)
    return loaded


if __name__ == "__main__":
    action, source, target = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    done = {"save": save, "load": load}[action](source, target)
    print(f"{action}: {len(done)} runs" + "".join(f"\n  {name}" for name in done))
