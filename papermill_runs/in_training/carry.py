"""Carry a grid's runs between machines that do not keep their files (no part of fsslib: a tool for a grid that
trains over several sittings).

    python papermill_runs/in_training/carry.py save OUTPUTS FOLDER   # runs of OUTPUTS -> FOLDER
    python papermill_runs/in_training/carry.py load FOLDER OUTPUTS   # back, then: python -m fsslib.runs GRID --resume
    python papermill_runs/in_training/carry.py rung GRID SOURCE      # GRID's table from SOURCE's rows of its runs

A finished run is one with ``metrics.json``. Its best checkpoint is kept in float16, as the zoo ships it (the zoo's
export converts it so anyway); its metrics, training summary and log are copied as they are (the executed notebook,
megabytes of figures, is not: the grid's table and the zoo do not read it).

A run in flight is one with ``last.pt`` and no ``metrics.json``. Its ``last.pt`` (weights, optimiser, scheduler and
random state), ``best.pt`` and log are copied in full precision, replacing an earlier copy, so that ``--resume``
continues it where it stopped instead of from its first epoch. ``load`` brings it back unless the outputs hold the
run further along.

A base learner trained over sittings needs no tool: copy its ``OUT.partial.pt`` here and back beside ``OUT``, and
``python -m fsslib.pretrain base-learner ... --resume --out OUT`` continues it.

``rung`` keeps rows that a grid is about to replace: when a grid moves to a longer budget, the controls that ran at
the old one still compare against its old rows. GRID (a grid file) names those runs at the old settings; its table
is written from the rows SOURCE's committed table (a grid's name) holds of them, with SOURCE's provenance and the
runs' last-quarter gains from SOURCE's page. Run it before SOURCE's table is written again.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch

from fsslib.errors import FsslibError
from fsslib.launch import run_name
from fsslib.pretrain.saving import half_precision, save_checkpoint
from fsslib.runs import expand
from fsslib.tables import REPO, load_grid, read_table, run_gains, write_table

RECORDS = ("metrics.json", "train_summary.json", "log.jsonl")  # the executed notebook (figures, MBs) stays behind
IN_FLIGHT = ("last.pt", "best.pt", "log.jsonl")  # what --resume reads of a run that has not finished


def save(outputs: Path, folder: Path) -> list[str]:
    """Copy each finished run of ``outputs`` not yet in ``folder``, and each run in flight (replacing its earlier
    copy); returns the runs copied."""
    copied = []
    for run in sorted(path for path in outputs.iterdir() if path.is_dir()):
        target = folder / run.name
        if (run / "metrics.json").is_file():
            if (target / "metrics.json").is_file():
                continue
            if target.is_dir():  # it was carried in flight: the finished run replaces that copy
                shutil.rmtree(target)
            target.mkdir(parents=True)
            state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
            save_checkpoint(target / "best.pt", {**state, "model": half_precision(state["model"])})
            for name in RECORDS:
                if (run / name).is_file():
                    shutil.copy2(run / name, target / name)
        elif (run / "last.pt").is_file():
            if _epoch(run) <= _epoch(target):  # carried as far already (or further: outputs not loaded back)
                continue
            target.mkdir(parents=True, exist_ok=True)
            for name in IN_FLIGHT:  # last.pt first: the log is trimmed to its epochs below
                if (run / name).is_file():
                    shutil.copy2(run / name, target / name)
            log = target / "log.jsonl"
            if log.is_file():  # an epoch that ended while copying is in the log but not in last.pt: drop it
                lines = log.read_text().splitlines(keepends=True)
                log.write_text("".join(lines[:_epoch(target)]))
        else:
            continue
        copied.append(run.name)
    return copied


def load(folder: Path, outputs: Path) -> list[str]:
    """Copy the carried runs into a grid's outputs folder, where ``--resume`` keeps the finished ones and continues
    the ones in flight; a run the outputs already hold further along stays as it is. Returns the runs copied."""
    loaded = []
    for run in sorted(path for path in folder.iterdir() if path.is_dir()):
        target = outputs / run.name
        if (target / "metrics.json").is_file():
            continue
        finished = (run / "metrics.json").is_file()
        if not finished and (not (run / "last.pt").is_file() or _epoch(target) >= _epoch(run)):
            continue
        shutil.copytree(run, target, dirs_exist_ok=True)
        loaded.append(run.name)
    return loaded


def _epoch(run: Path) -> int:
    """The epochs a run's ``last.pt`` has finished (0 without one)."""
    if not (run / "last.pt").is_file():
        return 0
    return int(torch.load(run / "last.pt", map_location="cpu", weights_only=True)["epoch"])


def rung(grid_file: Path, source: str, results: Path = REPO / "papermill_runs" / "results") -> list[str]:
    """Write the table of grid ``grid_file`` (``results/<name>.csv`` and ``.md``) from the 1-way rows that the
    committed table of grid ``source`` holds of the same runs; returns the runs written. Each run must have
    exactly one row at each of its test shots, and the rows must have the grid's settings (epochs are not in a
    row: the grid file says them). The page keeps ``source``'s provenance line and its runs' last-quarter gains,
    naming the commit whose ``source`` page they come from."""
    grid = load_grid(grid_file)

    def named(settings: dict) -> str:  # a run's name from its grid parameters or from one of its rows
        shots = settings.get("train_shots") or settings.get("shots", 1)
        return run_name({key: settings.get(key) for key in ("method", "variant", "fold", "seed")} | {"shots": shots})

    wanted = {named(params): [str(shots) for shots in params.get("test_shots", [params.get("shots", 1)])]
              for params in expand(grid)}
    rows = [row for row in read_table(results / f"{source}.csv")
            if row["ways"] == "1" and row["shots"] in wanted.get(named(row), [])]
    found = {named(row) for row in rows}
    if found != set(wanted) or len(rows) != sum(len(shots) for shots in wanted.values()):
        raise FsslibError(f"Table {source} holds {len(rows)} rows of the {len(wanted)} runs of {grid['name']}; "
                          f"missing: {', '.join(sorted(set(wanted) - found)) or 'none'}.",
                          f"name runs that {source}'s committed table holds once at each of their test shots.")
    page = (results / f"{source}.md").read_text()
    produced = next(line for line in page.splitlines() if line.startswith("Produced with"))
    kept = [f"{name} {gain} ± {error} ({verdict})" for name, gain, error, verdict in run_gains(page) if name in wanted]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    stem = results / grid["name"]
    write_table(rows, stem)
    lines = [produced if line.startswith("Produced with") else line
             for line in stem.with_suffix(".md").read_text().splitlines()]
    if kept:
        lines += ["", f"Learning curves: those of `{source}` (`{source}_curves.png` at commit {commit}); each run's "
                      "last-quarter gain, its standard error and verdict as that page gives them: "
                      + ", ".join(kept) + "."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return sorted(found)


if __name__ == "__main__":
    action, source, target = sys.argv[1], sys.argv[2], sys.argv[3]
    if action == "rung":
        done = rung(Path(source), target)
    else:
        done = {"save": save, "load": load}[action](Path(source), Path(target))
    print(f"{action}: {len(done)} runs" + "".join(f"\n  {name}" for name in done))
