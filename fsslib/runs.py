"""Run grids of the parameterised notebook with papermill and collect a results table.

    python -m fsslib.runs papermill_runs/quickstart.yaml [--smoke] [--jobs N]

A grid file (YAML) names the notebook, fixed parameters and the lists to cross::

    name: quickstart
    notebook: notebooks/90_train_eval.ipynb
    fixed: {preset: toy, seed: 0}
    grid: {method: [all-foreground, prototype], fold: [0, 1, 2, 3], shots: [1, 5]}

Each run executes the notebook into ``papermill_runs/outputs/<name>/<run>/`` (ignored by
git), where its last cell writes ``metrics.json`` (one row per evaluation, plus the learning
curve); the collected table goes to ``papermill_runs/results/<name>.csv`` and ``.md``, with
the torch version, fsslib commit and device of the runs under the Markdown table, and the
validation learning curves of the trained runs to ``<name>_curves.png`` (with each run's gain
over the last quarter of training in the Markdown file, its standard error and verdict:
:func:`plateau_verdicts`). Committed
tables are exactly what this command writes (``--smoke`` writes to ``<name>_smoke`` instead).

A grid with ``compare: true`` (``compare_toy.yaml``) only evaluates, in worker processes rather than notebooks,
and writes the methods' comparison on the same episodes instead of the usual table (:mod:`fsslib.compare`).
A grid with ``zoo: true`` (``zoo_toy.yaml``) also writes each run's ``best.pt`` into the shipped model zoo
(:func:`export_to_zoo`) once all its runs have finished.

A grid may name other grids under ``beside`` (e.g. ``beside: [piclip_toy]``): their committed
rows on the same test episodes (fold, ways, shots, seed, episodes) are set beside this grid's
default rows, with the all-foreground reference and each method's support annotation
(:func:`fsslib.methods.support_annotation`), in one table per fold and mean (a paper's Table 1).

``--resume`` continues an interrupted grid (finished runs are kept, the others resume training from
their last checkpoint), so a long grid can run in several sittings. ``--table-only`` runs nothing and writes a grid's table again from its runs' outputs;
``--from-csv`` runs nothing and needs no outputs: it writes the means over folds and the ``beside``
comparison of the committed table again from the committed CSV files (after another grid was re-run). ``--jobs N`` runs N notebooks at once, one kernel each with ``--threads`` torch threads (a grid
file may set ``jobs`` and ``threads``; on 2 CPU cores: 2 jobs of 1 thread); the table keeps
the grid's order. The progress bar counts training epochs and evaluations of all runs and
names what each running notebook is doing.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import multiprocessing
import os
import tempfile
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from fsslib.errors import DatasetNotFoundError, FsslibError
from fsslib.methods import shots_fixed_by_training
from fsslib.zoo import names_zoo

REPO = Path(__file__).resolve().parent.parent
TABLE_COLUMNS = ("method", "variant", "tier", "benchmark", "fold", "ways", "shots", "train_shots", "seed", "episodes",
                 "miou", "fbiou", "reference_miou")  # reference_miou: the all-foreground predictor on the same episodes
PROVENANCE_KEYS = ("torch", "commit", "device")
PLATEAU_GAIN = 1.0  # points of validation mIoU over the last quarter of training below which a run is flat
NOISE_MULTIPLE = 2.0  # a gain under this many of its standard errors is within the curve's noise


PERCENT_COLUMNS = ("miou", "fbiou", "reference_miou")
MEAN_KEYS = ("method", "variant", "tier", "benchmark", "ways", "shots", "train_shots", "seed")
MEAN_COLUMNS = (*MEAN_KEYS, "folds", *PERCENT_COLUMNS)


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read a grid file; its runs are the product of ``grid`` lists over ``fixed`` values, plus ``extra``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"Grid file {path} does not exist.", "pass one of papermill_runs/*.yaml.")
    grid = yaml.safe_load(path.read_text())
    for key in ("name", "grid") if grid.get("compare") else ("name", "notebook", "grid"):  # a comparison runs no notebook
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
    ways = f"-{params['ways']}way" if params.get("ways", 1) != 1 else ""
    return f"{params['method']}{variant}-fold{params['fold']}{ways}-{params.get('shots', 1)}shot-seed{params.get('seed', 0)}"


def notebook_parameters(notebook: Path) -> set[str]:
    """The names the notebook's cell tagged ``parameters`` assigns (what papermill can set)."""
    import ast

    import nbformat

    cells = [c for c in nbformat.read(notebook, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise FsslibError(f"{notebook} has no cell tagged 'parameters'.", "tag the cell of plain assignments 'parameters'.")
    return {target.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


def check_parameters(grid: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Raise unless every parameter the grid sets is one the notebook takes (papermill would ignore it
    silently), no two runs share an output folder (the name leaves out ``test_shots`` and ``test_ways``) and
    no run evaluates a model whose weights fit its training shots only at other shots (it would fail after training)."""
    names = [run_name(params) for params in runs]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise FsslibError(f"Grid {grid['name']} has several runs named {shared[0]}: they would write the same outputs.",
                          "give each run its own method, variant, fold, ways, shots or seed; evaluate one run at "
                          "several shots or ways with test_shots and test_ways.")
    if grid.get("compare"):  # evaluations only (fsslib.compare): no notebook, and the zoo holds each training shots
        from fsslib.compare import evaluations

        for params in runs:
            evaluations(params, Path())  # raises on a key an evaluation does not take
        return
    for params in runs:
        trained = params.get("shots", 1)
        evaluated = params.get("test_shots") or [trained]
        from_zoo = names_zoo(params.get("ckpt"))  # the zoo holds a model per training shots
        if set(evaluated) != {trained} and not from_zoo and shots_fixed_by_training(params["method"], params.get("variant", "")):
            raise FsslibError(f"Grid {grid['name']}: run {run_name(params)} trains on {trained}-shot episodes and is "
                              f"evaluated at shots {list(evaluated)}, but its weights fit {trained}-shot episodes only "
                              f"({params['method']} builds its layers for the number of shots).",
                              f"evaluate it at test_shots: [{trained}], or add a run trained on each number of shots.")
    accepted = notebook_parameters(REPO / grid["notebook"])
    unknown_names = sorted({key for params in runs for key in params} - accepted)
    if unknown_names:
        raise FsslibError(f"Grid {grid['name']} sets {unknown_names}, which {grid['notebook']} does not take: "
                          "papermill would ignore them and the runs would not be what the grid says.",
                          f"use the notebook's parameters ({', '.join(sorted(accepted))}) or add them to its parameters cell.")


def run_notebook(notebook: Path, outputs: Path, smoke: bool, threads: int, resume: bool,
                 params: dict[str, Any]) -> dict[str, Any]:
    """Execute ``notebook`` with ``params`` into ``outputs/<run name>/`` (working directory: the
    notebook's folder; the kernel gets ``threads`` torch threads; ``resume``: training continues
    from the run's ``last.pt``); returns the ``metrics.json`` its last cell wrote."""
    import papermill
    from traitlets.config import Config

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)  # inherited by the kernel
    run_dir = outputs / run_name(params)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fsslib-kernel-") as sockets:  # local sockets of this kernel alone: no TCP
        papermill.execute_notebook(str(notebook), str(run_dir / notebook.name),
                                   parameters={**params, "smoke": smoke, "out_dir": str(run_dir), "resume": resume},
                                   cwd=str(notebook.parent), progress_bar=False,
                                   config=Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "ipc")}}))
    return json.loads((run_dir / "metrics.json").read_text())


def _seed_rows(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """The committed rows of the grid a compare grid names under ``seeds`` (none when it names none, or when that
    grid has not been run yet: the comparison then has no seed spread)."""
    table = REPO / "papermill_runs" / "results" / f"{grid['seeds']}.csv" if grid.get("seeds") else None
    return read_table(table) if table is not None and table.is_file() else []


def _done(result: dict[str, Any]) -> Future:
    """A future that already holds ``result`` (a run a resumed grid does not execute again)."""
    future: Future = Future()
    future.set_result(result)
    return future


def _progress(run_dir: Path, epochs: int) -> tuple[int, str]:
    """(units done, what the run is doing): one unit per training epoch logged, one when it has finished."""
    log = run_dir / "log.jsonl"
    done = len(log.read_text().splitlines()) if log.is_file() else 0
    if (run_dir / "metrics.json").is_file():
        return done + 1, "done"
    return done, f"epoch {done + 1}/{epochs}" if done < epochs and (log.is_file() or (run_dir / "last.pt").is_file()) \
        else "evaluating" if done else "starting"


def execute(grid_path: str | Path, smoke: bool = False, outputs: str | Path | None = None,
            results: str | Path | None = None, jobs: int | None = None, threads: int | None = None,
            resume: bool = False) -> list[dict[str, Any]]:
    """Execute every run of the grid with papermill, ``jobs`` at a time; returns the table rows.

    ``outputs`` (executed notebooks) and ``results`` (tables) default to the repository's
    ``papermill_runs/outputs/<name>`` and ``papermill_runs/results``; ``jobs`` and ``threads``
    default to the grid file's (else 1 job with 1 thread). ``resume`` continues an interrupted
    grid: runs that wrote their ``metrics.json`` are read, not run again, and the others continue
    training from their ``last.pt`` (the trainer checks that the settings are the same).
    """
    from fsslib.config import make_config

    grid = load_grid(grid_path)
    jobs = grid.get("jobs", 1) if jobs is None else jobs
    threads = grid.get("threads", 1) if threads is None else threads
    if jobs < 1 or threads < 1:
        raise FsslibError(f"--jobs and --threads must be at least 1, got {jobs} and {threads}.",
                          "pass --jobs and --threads of 1 or more (or drop them to use the grid file's).")
    name = grid["name"] + ("_smoke" if smoke else "")
    outputs = Path(outputs).resolve() if outputs else REPO / "papermill_runs" / "outputs" / name
    runs = expand(grid)
    check_parameters(grid, runs)
    if grid.get("compare"):  # evaluations only: fsslib.compare runs them in worker processes, without notebooks
        from fsslib.compare import execute_comparison

        publish = not smoke and results is None
        rows = execute_comparison(name, [(p, outputs / run_name(p)) for p in runs],
                                  Path(results or REPO / "papermill_runs" / "results"), jobs, threads, resume, smoke,
                                  _seed_rows(grid))
        if publish:
            write_results_page(REPO / "papermill_runs")
        return rows
    run_one = partial(run_notebook, REPO / grid["notebook"], outputs, smoke, threads, resume)
    kept = {}  # runs a resumed grid has already finished
    for params in runs:
        metrics = outputs / run_name(params) / "metrics.json"
        if resume and metrics.is_file():
            kept[run_name(params)] = json.loads(metrics.read_text())
        elif not resume:  # a fresh run: no metrics or learning curve of an earlier execution is read
            for stale in ("metrics.json", "log.jsonl"):
                (outputs / run_name(params) / stale).unlink(missing_ok=True)
    units = [make_config(method=p["method"], preset=p.get("preset", "toy"), variant=p.get("variant", ""),
                         epochs=p.get("epochs"), smoke=smoke).epochs + 1 for p in runs]  # an upper bound for training-free runs
    # Processes, not threads: papermill changes the working directory, which threads would share.
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures: list[Future] = [pool.submit(run_one, params) if run_name(params) not in kept
                                 else _done(kept[run_name(params)]) for params in runs]
        with tqdm(total=sum(units), desc=f"grid {name} ({len(runs)} runs, epochs + evaluations)", unit="step") as bar:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=2, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # an error in a run stops the grid here
                states = [_progress(outputs / run_name(p), u - 1) for p, u in zip(runs, units)]
                finished = [units[i] if f.done() else min(states[i][0], units[i] - 1) for i, f in enumerate(futures)]
                bar.update(sum(finished) - bar.n)
                # the pool also marks the next queued runs as running: show the `jobs` furthest along
                active = sorted(((state == "starting", f"{run_name(p)}: {state}") for p, (_, state), f
                                 in zip(runs, states, futures) if f.running()))[:jobs]
                bar.set_postfix_str("; ".join(text for _, text in active))
        results_per_run = [f.result() for f in futures]
    finally:  # after an error or an interrupt, no further run starts
        pool.shutdown(cancel_futures=True)
    rows = _write_grid_table(grid, name, runs, results_per_run, results, publish=not smoke and results is None)
    if grid.get("zoo") and not smoke and results is None:  # the zoo grid ships its trained models (fsslib.zoo)
        for params, result in zip(tqdm(runs, desc="export to the zoo"), results_per_run):
            export_to_zoo(outputs / run_name(params), f"python -m fsslib.runs {grid_path}  (run {run_name(params)})",
                          result["rows"])
    return rows


def export_to_zoo(run_dir: Path, command: str, rows: list[dict], root: Path | None = None) -> Path:
    """Write a trained run (``run_dir/best.pt`` and its logs) into the zoo as float16 weights and provenance;
    returns the checkpoint's path. The .json's ``check`` is measured on the written float16 weights."""
    import torch

    from fsslib import evaluate
    from fsslib.config import Config
    from fsslib.pretrain.saving import file_sha256, half_precision
    from fsslib.zoo import CHECK_EPISODES, zoo_name, zoo_root

    root = root or zoo_root()
    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    config = state["config"]
    name = zoo_name(config["method"], config["fold"], config["shots"], config["variant"])
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.pt"
    torch.save({"method": state["method"], "model": half_precision(state["model"]), "config": config,
                "frozen": state.get("frozen", {}), "epoch": state["epoch"]}, path)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    check_config = Config(**{**config, "ckpt": str(path), "episodes": CHECK_EPISODES, "out": str(run_dir / "zoo_check"),
                             "progress": False, "device": "cpu"})
    check = evaluate.run(check_config)
    provenance = {
        "name": name, "method": config["method"], "variant": config["variant"], "fold": config["fold"],
        "train_shots": config["shots"], "tier": config["preset"], "command": command,
        "git_commit": rows[0]["commit"], "torch": rows[0]["torch"], "device": rows[0]["device"],
        "train_time_s": round(summary["train_time_s"], 1), "epochs": summary["epochs"], "best_epoch": state["epoch"],
        "best_val_miou": summary["best_val_miou"],
        "validation_curve": [[h["epoch"], h["val_miou"]] for h in summary["history"] if h.get("val_miou") is not None],
        "test_rows": [{k: row[k] for k in ("ways", "shots", "episodes", "miou", "fbiou")} for row in rows],
        "check": {"episodes": CHECK_EPISODES, "ways": 1, "shots": config["shots"], "seed": config["seed"],
                  "miou": check["miou"], "fbiou": check["fbiou"]},
        "checkpoint": {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path), "dtype": "float16"},
    }
    path.with_suffix(".json").write_text(json.dumps(provenance, indent=1) + "\n")
    return path


def _write_grid_table(grid: dict[str, Any], name: str, runs: list[dict[str, Any]], results_per_run: list[dict[str, Any]],
                      results: str | Path | None, publish: bool) -> list[dict[str, Any]]:
    """Write the grid's table and curves from its runs' ``metrics.json`` contents; ``publish``: also RESULTS.md."""
    rows = [row for result in results_per_run for row in result["rows"]]
    curves = {run_name(p): result["history"] for p, result in zip(runs, results_per_run) if result.get("history")}
    results_dir = Path(results or REPO / "papermill_runs" / "results")
    beside = [row for other in grid.get("beside", []) for row in read_table(REPO / "papermill_runs" / "results" / f"{other}.csv")]
    write_table(rows, results_dir / name, curves, beside)
    if publish:
        write_results_page(REPO / "papermill_runs")
    return rows


def rewrite_table(grid_path: str | Path, outputs: str | Path | None = None,
                  results: str | Path | None = None) -> list[dict[str, Any]]:
    """Write a grid's table again from its runs' outputs, running nothing: after a grid it sets its rows
    ``beside`` has been re-run, the comparison is refreshed with the same rows, curves and provenance."""
    grid = load_grid(grid_path)
    outputs = Path(outputs).resolve() if outputs else REPO / "papermill_runs" / "outputs" / grid["name"]
    runs = expand(grid)
    if grid.get("compare"):
        from fsslib.compare import collect_comparison

        rows = collect_comparison(grid["name"], [(p, outputs / run_name(p)) for p in runs],
                                  Path(results or REPO / "papermill_runs" / "results"), _seed_rows(grid))
        if results is None:
            write_results_page(REPO / "papermill_runs")
        return rows
    missing = [run_name(p) for p in runs if not (outputs / run_name(p) / "metrics.json").is_file()]
    if missing:
        raise DatasetNotFoundError(f"No outputs of {len(missing)} runs of {grid['name']} under {outputs} (e.g. {missing[0]}).",
                                   f"run the grid itself: python -m fsslib.runs {grid_path}")
    results_per_run = [json.loads((outputs / run_name(p) / "metrics.json").read_text()) for p in runs]
    return _write_grid_table(grid, grid["name"], runs, results_per_run, results, publish=results is None)


def plateau_gains(curves: dict[str, list[dict]]) -> dict[str, float]:
    """Each run's validation mIoU gained in the last quarter of its training: the mean over the last
    quarter's epochs minus the mean over the quarter before (means, so that one noisy validation
    does not decide)."""
    gains = {}
    for label, history in curves.items():
        values = [h["val_miou"] for h in history if h.get("val_miou") is not None]
        quarter = len(values) // 4
        if quarter:
            last, before = values[-quarter:], values[-2 * quarter:-quarter]
            gains[label] = sum(last) / quarter - sum(before) / quarter
    return gains


def gain_standard_error(history: list[dict]) -> float | None:
    """The standard error of a run's last-quarter gain from its curve's own epoch-to-epoch noise: the noise
    variance of one validation is half the variance of the curve's first differences over its last half
    (differences, so that a slow rise is not counted as noise), and the gain is a difference of two means of
    ``quarter`` validations. The validation episodes are the same every epoch, so this is the model's
    fluctuation; what the episode sample adds to a gain is measured apart (``benchmarks/validation_noise.py``)."""
    values = [h["val_miou"] for h in history if h.get("val_miou") is not None]
    quarter = len(values) // 4
    if quarter < 2:
        return None
    half = values[-2 * quarter:]
    steps = [b - a for a, b in zip(half, half[1:])]
    mean = sum(steps) / len(steps)
    noise_variance = sum((d - mean) ** 2 for d in steps) / (len(steps) - 1) / 2
    return (noise_variance * 2 / quarter) ** 0.5


def plateau_verdicts(curves: dict[str, list[dict]]) -> dict[str, tuple[float, float | None, str]]:
    """Per run: (last-quarter gain, its standard error, verdict). ``flat``: it gains under
    :data:`PLATEAU_GAIN` point; ``within noise``: under :data:`NOISE_MULTIPLE` standard errors of the curve's
    own noise (:func:`gain_standard_error`); ``rising``: neither, so its budget needs a run at twice the
    budget to show that the test mIoU no longer moves (each such control is named in the grid's notes)."""
    verdicts = {}
    for label, gain in plateau_gains(curves).items():
        error = gain_standard_error(curves[label])
        verdict = ("flat" if gain < PLATEAU_GAIN else
                   "within noise" if error is not None and gain < NOISE_MULTIPLE * error else "rising")
        verdicts[label] = (gain, error, verdict)
    return verdicts


def mean_of_shown(values: list[float]) -> float:
    """The mean of IoUs as the tables show them (1 decimal each), rounded half up to 1 decimal: the
    number a reader gets by hand from the table, the same in every table that shows those values."""
    shown = [Decimal(f"{value:.1f}") for value in values]
    return float((sum(shown) / len(shown)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def fold_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean IoUs over the folds (:func:`mean_of_shown`) of each (method, variant, tier, benchmark, shots, seed)
    run on several folds. A setting with a fold twice differs in a parameter the table does not show: it gets
    no mean."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row.get(c, "") for c in MEAN_KEYS)
        groups.setdefault(key, []).append(row)
    return [{**dict(zip(MEAN_KEYS, key)), "folds": len(group),
             **{c: mean_of_shown([r[c] for r in group]) for c in PERCENT_COLUMNS}}
            for key, group in groups.items() if len({r["fold"] for r in group}) == len(group) > 1]


def _markdown(columns: tuple[str, ...], table: list[dict[str, Any]]) -> list[str]:
    """The lines of a Markdown table of ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in table]


def _formatted(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    """``row`` restricted to ``columns``, IoUs with one decimal, missing values (None) empty."""
    return {c: (f"{row[c]:.1f}" if c in PERCENT_COLUMNS else "" if row.get(c) is None else row[c]) for c in columns}


def read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of a committed ``<name>.csv`` (IoUs as floats, rounded as written)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"No results table {path}.", f"run its grid first: python -m fsslib.runs papermill_runs/{path.stem}.yaml")
    with path.open(newline="") as handle:
        return [{**row, **{c: float(row[c]) for c in PERCENT_COLUMNS}} for row in csv.DictReader(handle)]


SAME_EPISODES = ("benchmark", "fold", "ways", "shots", "seed", "episodes")  # a test-episode set's identity
COMPARISON_COLUMNS = ("method", "support annotation", "ways", "shots", "train_shots")


def comparison_table(rows: list[dict[str, Any]], beside: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This grid's default rows (no variant) with the ``beside`` rows on the same test episodes and the
    all-foreground reference: one row per (method, ways, shots, train_shots), mIoU per fold and
    their mean (:func:`mean_of_shown`)."""
    from fsslib.methods import support_annotation

    def key(row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in SAME_EPISODES)

    episodes = {key(row) for row in rows}
    folds = sorted({str(row["fold"]) for row in rows})
    reference = [{**row, "method": "all-foreground", "variant": "", "train_shots": "", "miou": row["reference_miou"]}
                 for row in rows if not row.get("variant")]
    chosen = [row for row in (*beside, *rows, *reference) if not row.get("variant") and key(row) in episodes]
    table: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in chosen:
        label = (row["method"], support_annotation(row["method"]), str(row["ways"]), str(row["shots"]),
                 "" if row.get("train_shots") is None else str(row["train_shots"]))
        entry = table.setdefault(label, dict(zip(COMPARISON_COLUMNS, label)))
        entry[f"fold {row['fold']}"] = f"{float(row['miou']):.1f}"
    for entry in table.values():
        values = [float(entry[f"fold {f}"]) for f in folds if f"fold {f}" in entry]
        entry.update({f"fold {f}": entry.get(f"fold {f}", "") for f in folds})
        entry["mean"] = f"{mean_of_shown(values):.1f}" if len(values) == len(folds) else ""
    return sorted(table.values(), key=lambda e: (int(e["ways"]), int(e["shots"]), e["method"] != "all-foreground", e["method"]))


BESIDE_HEADING = "Beside the other methods on the same test episodes"


def _comparison_lines(rows: list[dict[str, Any]], beside: list[dict[str, Any]]) -> list[str]:
    """The Markdown section of :func:`comparison_table`: its heading line and its table."""
    compared = comparison_table(rows, beside)
    columns = (*COMPARISON_COLUMNS, *sorted(c for c in compared[0] if c.startswith("fold ")), "mean")
    return [f"{BESIDE_HEADING} (mIoU; rows of other grids from their committed tables; mean of the values shown):", "",
            *_markdown(columns, compared)]


def refresh_from_csv(grid_path: str | Path, results: str | Path | None = None) -> list[dict[str, Any]]:
    """Write the means over folds and the ``beside`` comparison of a grid's committed table again from the
    committed CSV files, running nothing and needing none of its outputs (after a grid it names was re-run,
    or after the way means are taken changed). The rest of its Markdown file (rows, provenance,
    learning-curve gains) stays as it is. (``--table-only`` rewrites the whole table but needs the runs'
    ``metrics.json``, which live only as long as ``papermill_runs/outputs/``.)"""
    grid = load_grid(grid_path)
    results_dir = Path(results or REPO / "papermill_runs" / "results")
    stem = results_dir / grid["name"]
    if not (stem.with_suffix(".csv").is_file() and stem.with_suffix(".md").is_file()):
        raise DatasetNotFoundError(f"Grid {grid['name']} has no committed table under {results_dir}.",
                                   f"run the grid itself: python -m fsslib.runs {grid_path}")
    rows = read_table(stem.with_suffix(".csv"))
    lines = stem.with_suffix(".md").read_text().splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("Produced with")), None)
    if end is None:
        raise FsslibError(f"{stem.with_suffix('.md')} has no provenance line ('Produced with ...').",
                          f"write the whole table again: python -m fsslib.runs {grid_path} --table-only")
    rows_end = next(i for i, line in enumerate(lines) if not line.startswith("|"))  # the table of rows comes first
    middle = []
    means = [_formatted(row, MEAN_COLUMNS) for row in fold_means(rows)]
    if means:
        middle += ["", "Mean over folds:", "", *_markdown(MEAN_COLUMNS, means)]
    if grid.get("beside"):
        beside = [row for other in grid["beside"] for row in read_table(results_dir / f"{other}.csv")]
        middle += ["", *_comparison_lines(rows, beside)]
    lines[rows_end:end] = [*middle, ""]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if results is None:
        write_results_page(REPO / "papermill_runs")
    return rows


def write_table(rows: list[dict[str, Any]], stem: Path, curves: dict[str, list[dict]] | None = None,
                beside: list[dict[str, Any]] | None = None) -> None:
    """Write ``stem.csv`` and ``stem.md`` with :data:`TABLE_COLUMNS` (IoUs in %, 1 decimal); the
    Markdown file adds the means over folds (:func:`fold_means`) when a setting ran on several,
    the comparison with the ``beside`` rows of other grids (:func:`comparison_table`), the
    provenance of the rows (torch, commit, device) and, given the runs' learning ``curves``,
    their gains over the last quarter of training; the curves go to ``stem_curves.png``."""
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
    if beside:
        lines += ["", *_comparison_lines(rows, beside)]
    provenance = {key: sorted({str(row.get(key)) for row in rows}) for key in PROVENANCE_KEYS}
    lines += ["", "Produced with " + "; ".join(f"{key} {', '.join(values)}" for key, values in provenance.items()) + "."]
    if curves:
        from fsslib.viz import plot_learning_curves

        figure = plot_learning_curves(curves, title=stem.name)
        figure.savefig(stem.parent / f"{stem.name}_curves.png", dpi=100)
        verdicts = plateau_verdicts(curves)
        counts = {kind: sum(v[2] == kind for v in verdicts.values()) for kind in ("flat", "within noise", "rising")}
        per_run = ", ".join(f"{label} {gain:+.1f}" + ("" if error is None else f" ± {error:.1f}") + f" ({verdict})"
                            for label, (gain, error, verdict) in verdicts.items())
        lines += ["", f"Learning curves: `{stem.name}_curves.png`. Validation mIoU gained over the last quarter of "
                      f"training (mean of the last quarter minus mean of the quarter before, ± its standard error from the "
                      f"curve's epoch-to-epoch noise): {counts['flat']} of {len(verdicts)} runs flat (under "
                      f"{PLATEAU_GAIN:.0f} point), {counts['within noise']} within noise (under {NOISE_MULTIPLE:.0f} "
                      f"standard errors), {counts['rising']} rising; per run: {per_run}." if verdicts else ""]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def grid_description(path: Path) -> str:
    """The comment block at the top of a grid file, without the '#' marks and its 'Run:' line."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line[1:].strip().startswith("Run:"):
            lines.append(line[1:].strip())
    return " ".join(lines)


def _demoted(markdown: str) -> str:
    """Markdown with every heading one level down (a grid's own page inside RESULTS.md's sections)."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def write_results_page(folder: Path) -> Path:
    """``folder/RESULTS.md``, for a newcomer: first the methods side by side (the grid with ``compare: true``),
    then one section per paper (each grid that names its ``paper``: its hand-written ``<name>.summary.md`` and
    its table shaped like the paper's, :func:`comparison_table`), then every grid in full with its description,
    table, learning curves and the hand-written analysis ``<name>.notes.md`` beside the grid file, if any."""
    results = folder / "results"
    grids = [(path, load_grid(path)) for path in sorted(folder.glob("*.yaml"))]
    made = [(path, grid) for path, grid in grids if (results / f"{grid['name']}.md").is_file()]
    sections = ["# Results", "",
                "Written by `python -m fsslib.runs` after each grid (do not edit: edit the grid's `<name>.summary.md` or "
                "`<name>.notes.md`). Every table comes from the one command in its section; mIoU / FB-IoU in %, 1000 "
                "test episodes per row; toy tier unless a row says otherwise. First the methods side by side, then one "
                "section per paper, then every grid in full.", "", "## The methods side by side", ""]
    compared = [(path, grid) for path, grid in made if grid.get("compare")]
    for path, grid in compared:
        text = (results / f"{grid['name']}.md").read_text().strip().splitlines()[1:]  # its own title left out
        sections += [grid_description(path), "", f"`python -m fsslib.runs papermill_runs/{path.name}`",
                     *_demoted("\n".join(text)).splitlines(), ""]
    if not compared:
        pending = [path.name for path, grid in grids if grid.get("compare")]
        sections += [f"Not made yet: `python -m fsslib.runs papermill_runs/{pending[0]}` evaluates every method on the "
                     "same episodes from the toy model zoo (grid `zoo_toy`)." if pending else "No comparison grid.", ""]
    sections += ["## The papers"]
    for path, grid in made:
        if not grid.get("paper"):
            continue
        summary = folder / f"{grid['name']}.summary.md"
        rows = read_table(results / f"{grid['name']}.csv")
        beside = [row for other in grid.get("beside", []) for row in read_table(results / f"{other}.csv")]
        compared_rows = comparison_table(rows, beside)
        columns = (*COMPARISON_COLUMNS, *sorted(c for c in compared_rows[0] if c.startswith("fold ")), "mean")
        sections += ["", f"### {grid['paper']} (grid `{grid['name']}`)", "",
                     *([summary.read_text().strip(), ""] if summary.is_file() else []),
                     "mIoU on the same test episodes, the paper's table in shape (default variants; all rows in the "
                     f"grid's section below):", "", *_markdown(columns, compared_rows)]
    sections += ["", "## Every grid"]
    for path, grid in made:
        if grid.get("compare"):
            continue
        name = grid["name"]
        sections += ["", f"### {name}", "", grid_description(path), "",
                     f"`python -m fsslib.runs papermill_runs/{path.name}`", "", (results / f"{name}.md").read_text().strip()]
        curves = results / f"{name}_curves.png"
        if curves.is_file():
            sections += ["", f"![validation learning curves of {name}](results/{curves.name})"]
        notes = folder / f"{name}.notes.md"
        if notes.is_file():
            sections += ["", _demoted(notes.read_text().strip())]
    page = folder / "RESULTS.md"
    page.write_text("\n".join(sections) + "\n")
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsslib.runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="a grid file, e.g. papermill_runs/quickstart.yaml")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, results to <name>_smoke")
    parser.add_argument("--outputs", default=None, help="where executed notebooks go")
    parser.add_argument("--jobs", type=int, default=None, help="notebooks executed at once (default: the grid's, else 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per notebook (default: the grid's, else 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted grid: keep finished runs, resume the others from their last.pt")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: write the table again from the runs' outputs (e.g. after a 'beside' grid changed)")
    parser.add_argument("--from-csv", action="store_true",
                        help="run nothing, need no outputs: write the means over folds and the comparison with the 'beside' "
                             "grids again from the committed CSV files")
    args = parser.parse_args(argv)
    try:
        name = load_grid(args.grid)["name"] + ("_smoke" if args.smoke else "")
        if args.from_csv and (args.smoke or args.table_only):
            parser.error("--from-csv runs nothing: it goes with neither --smoke nor --table-only")
        if args.from_csv:
            rows = refresh_from_csv(args.grid)
        elif args.table_only:
            rows = rewrite_table(args.grid, args.outputs)
        else:
            rows = execute(args.grid, smoke=args.smoke, outputs=args.outputs, jobs=args.jobs, threads=args.threads,
                           resume=args.resume)
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")
    written = f"{name}.md (its means and comparison)" if args.from_csv else f"{name}.csv and .md"
    print(f"{len(rows)} runs -> papermill_runs/results/{written}")


if __name__ == "__main__":
    main()
