"""Run grids of the parameterised notebook with papermill and collect a results table.

    python -m fsslib.runs papermill_runs/quickstart.yaml [--smoke] [--jobs N]

A grid file (YAML) names the notebook, fixed parameters and the lists to cross::

    name: quickstart
    notebook: notebooks/90_train_eval.ipynb
    fixed: {preset: toy, seed: 0}
    grid: {method: [all-foreground, prototype], fold: [0, 1, 2, 3], shots: [1, 5]}

Each run executes the notebook into ``papermill_runs/outputs/<name>/<run>/`` (ignored by
git), where its last cell writes ``metrics.json``; the collected table goes to
``papermill_runs/results/<name>.csv`` and ``.md``. Committed tables are exactly what
this command writes (``--smoke`` writes to ``<name>_smoke`` instead). ``--jobs N`` runs N
notebooks at once (one kernel each; on a CPU machine give each one core, e.g.
``OMP_NUM_THREADS=1 python -m fsslib.runs GRID --jobs 2``); the table keeps the grid's order.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from fsslib.errors import DatasetNotFoundError, FsslibError

REPO = Path(__file__).resolve().parent.parent
TABLE_COLUMNS = ("method", "variant", "tier", "benchmark", "fold", "shots", "seed", "episodes", "miou", "fbiou",
                 "reference_miou")  # reference_miou: the all-foreground predictor on the same episodes


PERCENT_COLUMNS = ("miou", "fbiou", "reference_miou")
MEAN_KEYS = ("method", "variant", "tier", "benchmark", "shots", "seed")
MEAN_COLUMNS = (*MEAN_KEYS, "folds", *PERCENT_COLUMNS)


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read a grid file; its runs are the product of ``grid`` lists over ``fixed`` values, plus ``extra``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"Grid file {path} does not exist.", "pass one of papermill_runs/*.yaml.")
    grid = yaml.safe_load(path.read_text())
    for key in ("name", "notebook", "grid"):
        if key not in grid:
            raise FsslibError(f"Grid file {path} has no {key!r} entry.", "see papermill_runs/quickstart.yaml for the format.")
    return grid


def expand(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """All parameter dictionaries of a grid, in a stable order."""
    keys = list(grid["grid"])
    runs = [{**grid.get("fixed", {}), **dict(zip(keys, values))}
            for values in itertools.product(*(grid["grid"][k] for k in keys))]
    return runs + [{**grid.get("fixed", {}), **extra} for extra in grid.get("extra", [])]


def run_name(params: dict[str, Any]) -> str:
    variant = f"-{params['variant']}" if params.get("variant") else ""
    return f"{params['method']}{variant}-fold{params['fold']}-{params['shots']}shot-seed{params.get('seed', 0)}"


def run_notebook(notebook: Path, outputs: Path, smoke: bool, params: dict[str, Any]) -> dict[str, Any]:
    """Execute ``notebook`` with ``params`` into ``outputs/<run name>/`` (working directory: the
    notebook's folder); returns the ``metrics.json`` its last cell wrote."""
    import papermill

    run_dir = outputs / run_name(params)
    run_dir.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(notebook), str(run_dir / notebook.name),
                               parameters={**params, "smoke": smoke, "out_dir": str(run_dir)},
                               cwd=str(notebook.parent), progress_bar=False)
    return json.loads((run_dir / "metrics.json").read_text())


def execute(grid_path: str | Path, smoke: bool = False, outputs: str | Path | None = None,
            results: str | Path | None = None, jobs: int = 1) -> list[dict[str, Any]]:
    """Execute every run of the grid with papermill, ``jobs`` at a time; returns the table rows.

    ``outputs`` (executed notebooks) and ``results`` (tables) default to the repository's
    ``papermill_runs/outputs/<name>`` and ``papermill_runs/results``.
    """
    if jobs < 1:
        raise FsslibError(f"--jobs must be at least 1, got {jobs}.", "pass --jobs 1 or more.")
    grid = load_grid(grid_path)
    name = grid["name"] + ("_smoke" if smoke else "")
    outputs = Path(outputs).resolve() if outputs else REPO / "papermill_runs" / "outputs" / name
    run_one = partial(run_notebook, REPO / grid["notebook"], outputs, smoke)
    runs = expand(grid)
    # Processes, not threads: papermill changes the working directory, which threads would share.
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        rows = list(tqdm(pool.map(run_one, runs), total=len(runs), desc=f"grid {name}"))
    finally:  # after an error or an interrupt, no further run starts
        pool.shutdown(cancel_futures=True)
    write_table(rows, Path(results or REPO / "papermill_runs" / "results") / name)
    return rows


def fold_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean IoUs over the folds of each (method, variant, tier, benchmark, shots, seed) run on several
    folds. A setting with a fold twice differs in a parameter the table does not show: it gets no mean."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row.get(c, "") for c in MEAN_KEYS)
        groups.setdefault(key, []).append(row)
    return [{**dict(zip(MEAN_KEYS, key)), "folds": len(group),
             **{c: sum(r[c] for r in group) / len(group) for c in PERCENT_COLUMNS}}
            for key, group in groups.items() if len({r["fold"] for r in group}) == len(group) > 1]


def _markdown(columns: tuple[str, ...], table: list[dict[str, Any]]) -> list[str]:
    """The lines of a Markdown table of ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in table]


def _formatted(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    """``row`` restricted to ``columns``, IoUs with one decimal."""
    return {c: (f"{row[c]:.1f}" if c in PERCENT_COLUMNS else row.get(c, "")) for c in columns}


def write_table(rows: list[dict[str, Any]], stem: Path) -> None:
    """Write ``stem.csv`` and ``stem.md`` with :data:`TABLE_COLUMNS` (IoUs in %, 1 decimal); the
    Markdown file adds the means over folds (:func:`fold_means`) when a setting ran on several."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    table = [_formatted(row, TABLE_COLUMNS) for row in rows]
    with stem.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    lines = _markdown(TABLE_COLUMNS, table)
    means = [_formatted(row, MEAN_COLUMNS) for row in fold_means(rows)]
    if means:
        lines += ["", "Mean over folds:", "", *_markdown(MEAN_COLUMNS, means)]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsslib.runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="a grid file, e.g. papermill_runs/quickstart.yaml")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, results to <name>_smoke")
    parser.add_argument("--outputs", default=None, help="where executed notebooks go")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (default 1)")
    args = parser.parse_args(argv)
    try:
        name = load_grid(args.grid)["name"] + ("_smoke" if args.smoke else "")
        rows = execute(args.grid, smoke=args.smoke, outputs=args.outputs, jobs=args.jobs)
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"{len(rows)} runs -> papermill_runs/results/{name}.csv and .md")


if __name__ == "__main__":
    main()
