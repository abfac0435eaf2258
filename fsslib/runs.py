"""Run grids of the parameterised notebook with papermill and collect a results table.

    python -m fsslib.runs papermill_runs/prototype_toy.yaml [--smoke] [--jobs N]

A grid file (YAML) names the notebook, fixed parameters and the lists to cross::

    name: prototype_toy
    notebook: notebooks/90_train_eval.ipynb
    fixed: {preset: toy, seed: 0, shots: 1, test_shots: [1, 5]}
    grid: {method: [prototype], fold: [0, 1, 2, 3]}

Each run executes the notebook into ``papermill_runs/outputs/<name>/<run>/`` (ignored by
git), where its last cell writes ``metrics.json`` (one row per evaluation, plus the learning
curve); the collected table goes to ``papermill_runs/results/<name>.csv`` and ``.md``, with
the torch version, fsslib commit and device of the runs under the Markdown table (:mod:`fsslib.tables`
writes the tables and ``RESULTS.md``), and the
validation learning curves of the trained runs to ``<name>_curves.png`` (with each run's gain
over the last quarter of training in the Markdown file, its standard error and verdict:
:func:`fsslib.metrics.plateau_verdicts`). Committed
tables are exactly what this command writes (``--smoke`` writes to ``<name>_smoke`` instead).

A grid with ``compare: true`` (``compare_toy.yaml``) evaluates, in worker processes rather than notebooks, and
writes the methods' comparison on the same episodes instead of the usual table (:mod:`fsslib.compare`); a run
of it with ``ckpt: null`` goes through the grid's ``notebook``, which trains it first (the quickstart's
prototype).
A grid with ``zoo: true`` (``zoo_toy.yaml``) also writes each run's ``best.pt`` into the shipped model zoo
(:func:`export_to_zoo`) once all its runs have finished, each ``.json`` recording why its budget is the plateau
when the grid names its twice-the-budget control under ``budget_control`` (:func:`budget_record`); ``zoo: default_variant`` (``qgnet_toy.yaml``) writes
only its runs without a variant (a paper's grid whose main rows are the zoo's models).

A grid may name other grids under ``beside`` (e.g. ``beside: [piclip_toy]``): their committed
rows on the same test episodes (fold, ways, shots, seed, episodes) are set beside this grid's
default rows, with the all-foreground reference and each method's support annotation
(:func:`fsslib.methods.support_annotation`), in one table per fold and mean (a paper's Table 1).

Each grid's page ``papermill_runs/results/<name>.md`` is completed around its table (:func:`fsslib.tables.finish_page`)
with the grid's description (the comment block at the top of its file), its answer, its learning curves and its
notes; ``papermill_runs/RESULTS.md`` is their index (:func:`fsslib.tables.write_results_page`): per grid its
question, the first sentence of that comment block, its answer and a link to its page. A grid's hand-written
files sit beside its grid file: ``<name>.answer.md``, its answer in one line (a sentence or two, under 40
words), and ``<name>.summary.md`` (a paper's grid: a paragraph) and ``<name>.notes.md`` (its analysis), which
only its page shows. After editing either, ``--from-csv``
writes the pages and the index again.

``--resume`` continues an interrupted grid (finished runs are kept, the others resume training from
their last checkpoint), so a long grid can run in several sittings. ``--table-only`` runs nothing and writes a grid's table again from its runs' outputs;
``--from-csv`` runs nothing and needs no outputs: it writes the means over folds and the ``beside``
comparison of the committed table again from the committed CSV files (after another grid was re-run), then
every page and the index (for a comparison grid, whose means need its evaluations' outputs, the pages and
the index only). ``--jobs N`` runs N notebooks at once, one kernel each with ``--threads`` torch threads (a grid
file may set ``jobs`` and ``threads``; on 2 CPU cores: 2 jobs of 1 thread); the table keeps
the grid's order. The progress bar counts training epochs and evaluations of all runs and
names what each running notebook is doing.

**The paper tier** (``papermill_runs/paper/<paper>.yaml``, docs/paper_tier.md): a grid with ``runner: python`` runs
each run as :func:`fsslib.launch.train_and_evaluate` (the notebook's steps, every Config field settable, torchrun for
several GPUs) instead of the notebook, and one with ``paper: <paper>`` sets its rows beside the paper's numbers per
fold and mean (:func:`fsslib.tables.paper_comparison`). ``--plan`` runs nothing: it prints the runs, each file they
read that is missing with the ``python -m fsslib.fetch`` command that gets it, and the GPU-hours estimated from the
measured rates (:mod:`fsslib.plan`, :mod:`fsslib.rates`); a plain run of paper-tier runs refuses to start while a
file is missing. ``--set KEY=VALUE`` changes a setting of every run (``fold=0`` keeps fold 0's runs,
``options.NAME=VALUE`` one method option; the rehearsal in ``tests/test_paper_grids.py``) and writes the table to
``<name>_set``.

**GPUs and clusters** (:mod:`fsslib.launch`): ``jobs`` places one run per GPU of the machine (each run sees its own
through ``CUDA_VISIBLE_DEVICES``; nothing changes on a CPU machine), ``gpus_per_run`` (``--gpus-per-run``) trains a
run on several through torchrun; ``--executor slurm`` submits each run as a Slurm job through submitit
(``--partition``, ``--time-min``, or the grid's ``slurm:`` entry), requeued and resumed from its checkpoint when
preempted or out of time; ``--executor local`` runs the same jobs on this machine.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, wait
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fsslib.errors import DatasetNotFoundError, FsslibError
from fsslib.paths import write_text
from fsslib.launch import run_name, run_notebook
from fsslib.methods import shots_fixed_by_training
from fsslib.tables import REPO, beside_rows, load_grid, read_table, refresh_from_csv, write_results_page, write_table
from fsslib.zoo import ZOO_GRIDS, names_zoo, training_shots, zoo_checkpoint, zoo_runs

RUNNERS = ("notebook", "python")  # a grid's runner: the papermill notebook, or fsslib.launch.train_and_evaluate
EXECUTORS = ("pool", "slurm", "local")  # this machine's worker processes; submitit's Slurm or local executor


def expand(grid: dict[str, Any]) -> list[dict[str, Any]]:
    """All parameter dictionaries of a grid, in a stable order."""
    keys = list(grid["grid"])
    runs = [{**grid.get("fixed", {}), **dict(zip(keys, values))}
            for values in itertools.product(*(grid["grid"][k] for k in keys))]
    return runs + [{**grid.get("fixed", {}), **extra} for extra in grid.get("extra", [])]


def runner_of(grid: dict[str, Any]) -> str:
    """How the grid's runs execute: ``notebook`` (the default) or ``python`` (:mod:`fsslib.launch`)."""
    runner = grid.get("runner", "notebook")
    if runner not in RUNNERS:
        raise FsslibError(f"Grid {grid['name']}: runner {runner!r} is not known.", f"use one of: {', '.join(RUNNERS)}.")
    return runner


def run_folder(grid: dict[str, Any]) -> Path:
    """The folder a grid's runs execute in, from which a relative file path in their options is read: the
    notebook's folder for notebook runs, the working directory for ``runner: python`` and a comparison without one."""
    return (REPO / grid["notebook"]).parent if "notebook" in grid and runner_of(grid) == "notebook" else Path.cwd()


LIST_VALUED = ("test_shots", "test_ways", "novel_classes", "extra_classes")  # settings whose value is a list


def with_settings(grid: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """``grid`` with each ``KEY=VALUE`` of ``settings`` (``--set``; VALUE read as YAML) applied to every run: a key the
    grid crosses (e.g. ``fold=0`` or ``fold=[0, 1]``) keeps those values of it, in ``extra`` runs too; a list for
    another key (e.g. ``seed=[0, 1, 2]``) crosses it with every run, ``extra`` runs too; a single value (e.g.
    ``image_size=97``) is set in ``fixed`` and in every ``extra`` run that sets it; ``options.NAME=VALUE`` sets one
    method option the same way."""
    import copy

    import yaml

    grid = copy.deepcopy(grid)
    fixed, extra = grid.setdefault("fixed", {}), grid.get("extra", [])
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key:
            raise FsslibError(f"--set {setting!r} is not KEY=VALUE.", "write e.g. --set fold=0 or --set options.clip_pretrained=null.")
        value = yaml.safe_load(text)
        if key.startswith("options."):
            name = key.removeprefix("options.")
            for run in [fixed, *(e for e in extra if "options" in e)]:
                run["options"] = {**run.get("options", {}), name: value}
        elif key in grid["grid"]:
            kept = value if isinstance(value, list) else [value]
            grid["grid"][key] = kept
            grid["extra"] = extra = [e for e in extra if e.get(key, kept[0]) in kept]
        elif isinstance(value, list) and key not in LIST_VALUED:
            fixed.pop(key, None)
            grid["grid"][key] = value
            grid["extra"] = extra = [{**e, key: item} for e in extra for item in value]
        else:
            for run in [fixed, *(e for e in extra if key in e)]:
                run[key] = value
    return grid


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
    no run evaluates a model whose weights fit its training shots only at other shots (it would fail after training),
    and no run's setting is out of range (e.g. ``--set fold=9``: it would fail inside every run)."""
    from dataclasses import fields

    from fsslib.config import Config
    from fsslib.launch import RUN_KEYS, SET_BY_THE_RUNNER, run_config

    settable = {f.name for f in fields(Config)} | set(RUN_KEYS)
    for params in runs:
        if not set(params) <= settable:
            continue  # an unknown name: the checks below name it
        try:
            run_config(params)
        except FsslibError as error:
            raise FsslibError(f"Grid {grid['name']}, run {run_name(params)}: {error.problem}",
                              f"{error.fix} (A grid sets a flag --some-name as some_name: in its file, or with "
                              "--set some_name=VALUE.)") from None
    names = [run_name(params) for params in runs]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise FsslibError(f"Grid {grid['name']} has several runs named {shared[0]}: they would write the same outputs.",
                          "give each run its own method, variant, fold, ways, shots or seed; evaluate one run at "
                          "several shots or ways with test_shots and test_ways.")
    if grid.get("compare"):  # evaluations (fsslib.compare), and the train/eval notebook for runs with ckpt: null
        from fsslib.compare import evaluations, method_label, trains_live

        labels = {method_label(params) for params in runs}
        named = {label for pair in _strata_pairs(grid) or () for label in pair}
        if named - labels:
            raise FsslibError(f"Grid {grid['name']}: strata_pairs name {sorted(named - labels)}, which no run is.",
                              f"name runs by method or 'method (variant)': {sorted(labels)}.")
        zoo_models = {(p["method"], p.get("variant", "")) for path in ZOO_GRIDS
                      for p in zoo_runs(load_grid(REPO / path), expand(load_grid(REPO / path)))}
        for params in runs:
            for overrides, _ in evaluations(params, Path()):  # raises on a key an evaluation does not take
                if names_zoo(params.get("ckpt")) and (params["method"], params.get("variant", "")) in zoo_models:
                    zoo_checkpoint(params["method"], params["fold"],  # raises now, not after hours, if the zoo lacks it
                                   training_shots(params["ckpt"], params["method"], params.get("variant", ""),
                                                  overrides.get("shots", 1)), params.get("variant", ""))
        runs = [params for params in runs if trains_live(params)]
        if not runs or "notebook" not in grid:  # no run to train, or fsslib.compare says which lacks its notebook
            return
    python = runner_of(grid) == "python"
    if not python and grid.get("gpus_per_run", 1) > 1:
        raise FsslibError(f"Grid {grid['name']} sets gpus_per_run {grid['gpus_per_run']}, but its runs are notebooks, "
                          "which torchrun cannot start.", "set runner: python (fsslib.launch), or gpus_per_run: 1.")
    for params in runs:
        trained = params.get("shots", 1)
        evaluated = params.get("test_shots") or [trained]
        from_zoo = names_zoo(params.get("ckpt"))  # the zoo holds a model per training shots
        if set(evaluated) != {trained} and not from_zoo and shots_fixed_by_training(params["method"], params.get("variant", "")):
            raise FsslibError(f"Grid {grid['name']}: run {run_name(params)} trains on {trained}-shot episodes and is "
                              f"evaluated at shots {list(evaluated)}, but its weights fit {trained}-shot episodes only "
                              f"({params['method']} builds its layers for the number of shots).",
                              f"evaluate it at test_shots: [{trained}], or add a run trained on each number of shots.")
    if python:  # every Config field but those the runner sets, and what a run evaluates
        accepted = {f.name for f in fields(Config)} - set(SET_BY_THE_RUNNER) | set(RUN_KEYS)
        unknown_names = sorted({key for params in runs for key in params} - accepted)
        if unknown_names:
            raise FsslibError(f"Grid {grid['name']} sets {unknown_names}, which a run does not take.",
                              f"use Config's fields and {', '.join(RUN_KEYS)} ({', '.join(sorted(accepted))}).")
        return
    accepted = notebook_parameters(REPO / grid["notebook"])
    unknown_names = sorted({key for params in runs for key in params} - accepted)
    if unknown_names:
        raise FsslibError(f"Grid {grid['name']} sets {unknown_names}, which {grid['notebook']} does not take: "
                          "papermill would ignore them and the runs would not be what the grid says.",
                          f"use the notebook's parameters ({', '.join(sorted(accepted))}) or add them to its parameters cell.")


def seed_rows(grid: dict[str, Any], results: Path | None = None) -> list[dict[str, Any]]:
    """The committed rows of the grids a compare grid names under ``seeds`` (one name or a list, in order), from
    ``results`` (default ``papermill_runs/results``). A later grid that holds a method (and variant) replaces every
    earlier row of it, in all settings: a method retrained on other code is never mixed with its former runs, and a
    setting the later grid leaves out has no spread. A grid not run yet adds none; with none the comparison has no
    seed spread."""
    return [row for rows in seed_sources(grid, results).values() for row in rows]


def seed_sources(grid: dict[str, Any], results: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """:func:`seed_rows` by the seed grid they come from: {grid name: its rows that no later grid replaced}."""
    results = results or REPO / "papermill_runs" / "results"
    names = grid.get("seeds") or []
    kept: dict[str, list[dict[str, Any]]] = {}
    for name in [names] if isinstance(names, str) else names:
        table = results / f"{name}.csv"
        if table.is_file():
            later = read_table(table)
            replaced = {(row["method"], row.get("variant") or "") for row in later}
            kept = {earlier: [row for row in rows if (row["method"], row.get("variant") or "") not in replaced]
                    for earlier, rows in kept.items()}
            kept[name] = later
    return kept


def is_budget_row(row: dict[str, Any]) -> bool:
    """Whether a table row is one that budgets are judged by: fold 0, 1-way 1-shot, trained on 1 shot, seed 0."""
    return (int(row["fold"]), int(row["ways"]), int(row["shots"]), int(row["train_shots"] or 1), int(row["seed"])) \
        == (0, 1, 1, 1, 0)


def single_row_threshold(results: Path | None = None) -> float:
    """The difference that resolves two single fold-0 1-way 1-shot rows (``docs/protocol.md``): twice the standard
    error of the pooled seed spread of ``compare_toy``'s committed tables in ``results``."""
    from fsslib.compare import pooled_spread, read_comparison, resolution_threshold, seed_spread

    results = results or REPO / "papermill_runs" / "results"
    comparison = load_grid(REPO / "papermill_runs" / "compare_toy.yaml")
    spread = pooled_spread(seed_spread(read_comparison("compare_toy", results)[0], seed_rows(comparison, results)))
    return resolution_threshold(spread["1-way 1-shot"][0], 1, 1)


def budget_record(grid: dict[str, Any], params: dict[str, Any], results: Path | None = None) -> dict[str, Any] | None:
    """Why a zoo model's budget is its plateau, for its ``.json``: the fold-0 1-way 1-shot test mIoU of the method (and
    variant) at this grid's budget and in the grid named under ``budget_control`` (the same run at twice the
    budget; a list of grids when the methods' doublings were run apart: the one whose table holds the method's
    row), the move, and the difference that resolves two single rows (``docs/protocol.md``, from the seed
    spread of ``compare_toy``). None for a grid without ``budget_control``; an error when a table lacks the row."""
    controls = grid.get("budget_control")
    if not controls:
        return None
    results = results or REPO / "papermill_runs" / "results"
    variant = params.get("variant") or ""
    named = " ".join(filter(None, (params["method"], variant)))

    def fold_zero_rows(name: str) -> list[dict[str, Any]]:
        path = results / f"{name}.csv"
        return [r for r in (read_table(path) if path.is_file() else []) if r["method"] == params["method"]
                and (r.get("variant") or "") == variant and is_budget_row(r)]

    def fold_zero_row(name: str) -> dict[str, Any]:
        rows = fold_zero_rows(name)
        if len(rows) != 1:
            raise FsslibError(f"Table {results / f'{name}.csv'} holds {len(rows)} fold-0 1-way 1-shot rows of {named}, "
                              "seed 0: the budget control needs one.",
                              f"run the grid first: python -m fsslib.runs papermill_runs/{name}.yaml")
        return rows[0]

    names = [controls] if isinstance(controls, str) else list(controls)
    holding = [name for name in names if fold_zero_rows(name)]
    if len(names) > 1 and len(holding) != 1:
        raise FsslibError(f"{len(holding)} of the budget controls {', '.join(names)} hold a fold-0 1-way 1-shot row of "
                          f"{named}, seed 0: the budget record needs exactly one.",
                          "list under budget_control one grid per method's doubling, and run it first "
                          "(python -m fsslib.runs papermill_runs/<grid>.yaml)")
    control = holding[0] if len(names) > 1 else names[0]
    threshold = single_row_threshold(results)
    budget, doubled = fold_zero_row(grid["name"]), fold_zero_row(control)
    move = doubled["miou"] - budget["miou"]
    return {"control": control, "control_epochs": load_grid(REPO / "papermill_runs" / f"{control}.yaml").get("fixed", {}).get("epochs"),
            "fold0_test_miou": [budget["miou"], doubled["miou"]], "move": move, "resolved_threshold": threshold,
            "at_plateau": abs(move) < threshold}


def _strata_pairs(grid: dict[str, Any]) -> tuple[tuple[str, str], ...] | None:
    """The (method, baseline) pairs a compare grid's strata differences compare (``strata_pairs``: labels
    ``method`` or ``method (variant)``); None: :data:`fsslib.compare.MECHANISMS`."""
    pairs = grid.get("strata_pairs")
    if pairs is None:
        return None
    if not all(isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair) for pair in pairs):
        raise FsslibError(f"Grid {grid['name']}: strata_pairs must be a list of [method, baseline] pairs, got {pairs!r}.",
                          'write e.g. strata_pairs: [["piclip (no_pir)", "pfenet"], ["piclip", "piclip (no_pir)"]].')
    return tuple(tuple(pair) for pair in pairs)


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
            resume: bool = False, settings: list[str] | None = None, executor: str = "pool",
            gpus_per_run: int | None = None, partition: str | None = None,
            time_min: int | None = None) -> list[dict[str, Any]]:
    """Execute every run of the grid, ``jobs`` at a time; returns the table rows.

    ``outputs`` (the runs' folders) and ``results`` (tables) default to the repository's
    ``papermill_runs/outputs/<name>`` and ``papermill_runs/results``; ``jobs``, ``threads`` and ``gpus_per_run``
    default to the grid file's (else 1). ``resume`` continues an interrupted grid: runs that wrote their
    ``metrics.json`` are read, not run again, and the others continue training from their ``last.pt`` (the
    trainer checks that the settings are the same). ``settings``: ``--set KEY=VALUE`` (:func:`with_settings`).
    ``executor``: ``pool`` (this machine, :class:`fsslib.launch.Pool`), ``slurm`` or ``local`` (submitit; its
    ``partition`` and ``time_min`` per job over the grid's ``slurm:`` entry). Paper-tier runs start only when every
    file they read is there (:func:`fsslib.plan.require_ready`).
    """
    from fsslib import launch
    from fsslib.plan import require_ready, run_plans

    grid = load_grid(grid_path)
    if settings:
        grid = with_settings(grid, settings)
    jobs = grid.get("jobs", 1) if jobs is None else jobs
    threads = grid.get("threads", 1) if threads is None else threads
    gpus_per_run = grid.get("gpus_per_run", 1) if gpus_per_run is None else gpus_per_run
    if min(jobs, threads, gpus_per_run) < 1:
        raise FsslibError(f"--jobs and --threads (and --gpus-per-run) must be at least 1, got {jobs}, {threads} and "
                          f"{gpus_per_run}.", "pass 1 or more (or drop them to use the grid file's).")
    if executor not in EXECUTORS:
        raise FsslibError(f"Executor {executor!r} is not known.", f"use one of: {', '.join(EXECUTORS)}.")
    grid = {**grid, "gpus_per_run": gpus_per_run}
    name = grid["name"] + ("_smoke" if smoke else "_set" if settings else "")
    outputs = Path(outputs).resolve() if outputs else REPO / "papermill_runs" / "outputs" / name
    runs = expand(grid)
    check_parameters(grid, runs)
    if grid.get("compare"):  # fsslib.compare: evaluations in worker processes, the notebook for runs it trains
        from fsslib.compare import execute_comparison

        publish = not smoke and results is None
        train_one = partial(run_notebook, REPO / grid["notebook"], outputs, smoke, threads, resume) \
            if "notebook" in grid else None
        rows = execute_comparison(name, [(p, outputs / run_name(p)) for p in runs],
                                  Path(results or REPO / "papermill_runs" / "results"), jobs, threads, resume, smoke,
                                  seed_rows(grid), train_one, _strata_pairs(grid))
        if publish:
            write_results_page(REPO / "papermill_runs")
        return rows
    runner = runner_of(grid)
    plans = run_plans(runs, smoke, run_folder(grid))
    if any(plan.cfg.preset == "paper" for plan in plans):
        require_ready(plans, grid_path)
    kept = {}  # runs a resumed grid has already finished
    for params in runs:
        metrics = outputs / run_name(params) / "metrics.json"
        if resume and metrics.is_file():
            kept[run_name(params)] = json.loads(metrics.read_text())
        elif not resume:  # a fresh run: no metrics or learning curve of an earlier execution is read
            for stale in ("metrics.json", "log.jsonl"):
                (outputs / run_name(params) / stale).unlink(missing_ok=True)
    units = [plan.cfg.epochs + 1 for plan in plans]  # an upper bound for training-free runs
    run_one = launch.GridRun(runner, outputs, REPO / grid["notebook"] if runner == "notebook" else None, smoke,
                             threads, resume, gpus_per_run)
    job_settings = launch.SlurmSettings.of(grid, partition=partition, time_min=time_min)
    if executor == "pool":
        runner_pool = launch.Pool(run_one, jobs)
    elif executor == "slurm":
        runner_pool = launch.Submitit(run_one, launch.slurm_executor(outputs / "submitit", name, gpus_per_run, job_settings))
    else:
        runner_pool = launch.Submitit(run_one, launch.local_executor(outputs / "submitit", gpus_per_run, job_settings))
    shown_jobs = runner_pool.jobs or len(runs)
    try:
        handles = [runner_pool.submit(params) if run_name(params) not in kept else _done(kept[run_name(params)])
                   for params in runs]
        if executor != "pool":
            print(f"{sum(run_name(p) not in kept for p in runs)} runs submitted ({executor}); logs in {outputs / 'submitit'}. "
                  f"Stopping this command leaves them running: python -m fsslib.runs {grid_path}{set_flags(settings)} "
                  "--table-only collects them.")
        with tqdm(total=sum(units), desc=f"grid {name} ({len(runs)} runs, epochs + evaluations)", unit="step") as bar:
            pending = set(handles)
            while pending:
                done, pending = _wait_any(pending)
                for handle in done:
                    handle.result()  # an error in a run stops the grid here
                states = [_progress(outputs / run_name(p), u - 1) for p, u in zip(runs, units)]
                finished = [units[i] if h.done() else min(states[i][0], units[i] - 1) for i, h in enumerate(handles)]
                bar.update(sum(finished) - bar.n)
                # the pool also marks the next queued runs as running: show the `jobs` furthest along
                active = sorted(((state == "starting", f"{run_name(p)}: {state}") for p, (_, state), h
                                 in zip(runs, states, handles) if not h.done() and h.running()))[:shown_jobs]
                bar.set_postfix_str("; ".join(text for _, text in active))
        results_per_run = [h.result() for h in handles]
    finally:  # after an error or an interrupt, no further run starts here (submitted jobs run on)
        runner_pool.shutdown()
    rows = _write_grid_table(grid, name, runs, results_per_run, results, publish=not smoke and not settings and results is None)
    if grid.get("zoo") and not smoke and not settings and results is None:  # a zoo grid ships its trained models (fsslib.zoo)
        exported = zoo_runs(grid, runs)
        for params, result in zip(tqdm(runs, desc="export to the zoo"), results_per_run):
            if params not in exported:
                continue
            export_to_zoo(outputs / run_name(params), f"python -m fsslib.runs {grid_path}  (run {run_name(params)})",
                          result["rows"], budget=budget_record(grid, params))
    return rows


def _wait_any(pending: set) -> tuple[set, set]:
    """(done, still pending) after at most 2 seconds: futures are waited on, submitit jobs polled."""
    if all(isinstance(handle, Future) for handle in pending):
        return wait(pending, timeout=2, return_when=FIRST_COMPLETED)
    time.sleep(2)
    done = {handle for handle in pending if handle.done()}
    return done, pending - done


def plan(grid_path: str | Path, smoke: bool = False, jobs: int | None = None, settings: list[str] | None = None,
         executor: str = "pool", gpus_per_run: int | None = None) -> str:
    """``--plan``: what the grid's runs read and lack, with the fetch commands, and the GPU-hours they take
    (:func:`fsslib.plan.plan_text`); runs nothing."""
    from fsslib.plan import plan_text, run_plans

    grid = load_grid(grid_path)
    if settings:
        grid = with_settings(grid, settings)
    runs = expand(grid)
    check_parameters(grid, runs)
    return plan_text(grid, grid_path, run_plans(runs, smoke, run_folder(grid)), grid.get("jobs", 1) if jobs is None else jobs,
                     grid.get("gpus_per_run", 1) if gpus_per_run is None else gpus_per_run, executor)


def export_to_zoo(run_dir: Path, command: str, rows: list[dict], root: Path | None = None,
                  budget: dict[str, Any] | None = None) -> Path:
    """Write a trained run (``run_dir/best.pt`` and its logs) into the zoo as float16 weights and provenance;
    returns the checkpoint's path. The .json's ``check`` is measured on the written float16 weights; ``budget``
    (:func:`budget_record`) says why the run's budget is its plateau."""
    from fsslib.config import Config
    from fsslib.methods import frozen_files
    from fsslib.models.files import read_weights
    from fsslib.pretrain.saving import file_sha256, half_precision, save_checkpoint
    from fsslib.zoo import zoo_name, zoo_root

    root = root or zoo_root()
    state = read_weights(run_dir / "best.pt", "The run's best checkpoint", f"finish the run first: it is not in {run_dir}.")
    config = state["config"]
    name = zoo_name(config["method"], config["fold"], config["shots"], config["variant"])
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.pt"
    save_checkpoint(path, {"method": state["method"], "model": half_precision(state["model"]), "config": config,
                           "frozen": state.get("frozen", {}), "epoch": state["epoch"]})
    summary = json.loads((run_dir / "train_summary.json").read_text())
    elapsed = [record["elapsed_s"] for record in summary["history"]]  # restarts at 0 when a run is resumed
    sittings = [last for last, following in zip(elapsed, [*elapsed[1:], 0.0]) if following < last]  # each sitting's time
    provenance = {
        "name": name, "method": config["method"], "variant": config["variant"], "fold": config["fold"],
        "train_shots": config["shots"], "tier": config["preset"], "command": command,
        "git_commit": rows[0]["commit"], "torch": rows[0]["torch"], "device": rows[0]["device"],
        **({"hardware": summary["hardware"]} if "hardware" in summary else {}),  # the machine of its last sitting
        **({"trained_on": summary["trained_on"]} if summary.get("trained_on") else {}),  # each CPU's epochs
        "train_time_s": round(sum(sittings), 1), "sittings": len(sittings),
        "epochs": summary["epochs"], "best_epoch": state["epoch"],
        "best_val_miou": summary["best_val_miou"],
        "validation_curve": [[h["epoch"], h["val_miou"]] for h in summary["history"] if h.get("val_miou") is not None],
        "test_rows": [{k: row[k] for k in ("ways", "shots", "episodes", "miou", "fbiou")} for row in rows],
        "check": measure_check(path, config),
        "checkpoint": {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path), "dtype": "float16"},
        "frozen_files": {role: {"file": _shown_path(Path(file)), "sha256": file_sha256(_located(Path(file)))}
                         for role, file in frozen_files(Config(**config)).items()},
        **({"budget": budget} if budget else {}),
    }
    write_text(path.with_suffix(".json"), json.dumps(provenance, indent=1) + "\n")
    return path


def measure_check(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The ``check`` of a zoo model's .json: the mIoU and FB-IoU of the weights at ``path`` on the first
    :data:`~fsslib.zoo.CHECK_EPISODES` 1-way test episodes of the run's ``config`` (its fold, shots and seed), on
    the CPU at :data:`~fsslib.zoo.CHECK_THREADS` torch threads (another count sums in another order, and a pixel on
    a decision boundary may flip), recording the CPU it ran on (another kind may flip such a pixel too). A fingerprint
    of the weights and the code that reads them, not a fold score."""
    from fsslib import evaluate
    from fsslib.config import Config
    from fsslib.device import torch_threads
    from fsslib.zoo import CHECK_EPISODES, CHECK_THREADS

    with torch_threads(CHECK_THREADS), tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore", evaluate.FewEpisodesWarning)  # too few episodes for every class: expected
        check = evaluate.run(Config(**{**config, "ckpt": str(path), "episodes": CHECK_EPISODES, "ways": 1,
                                       "out": out, "progress": False, "device": "cpu"}))
    return {"episodes": CHECK_EPISODES, "ways": 1, "shots": config["shots"], "seed": config["seed"],
            "threads": CHECK_THREADS, "miou": check["miou"], "fbiou": check["fbiou"],
            "processor": check["processor"]}


def recheck_zoo(grid_path: str | Path) -> dict[str, dict[str, Any]]:
    """Measure the check of each zoo model that grid ``grid_path`` exports again (:func:`measure_check`) and write it
    into the model's .json, everything else unchanged: after :data:`~fsslib.zoo.CHECK_EPISODES` changes. Returns
    each model's new check by its name."""
    from fsslib.models.files import read_weights

    grid = load_grid(grid_path)
    if not grid.get("zoo"):
        raise FsslibError(f"Grid {grid['name']} exports no zoo model.",
                          f"name a grid that does: {', '.join(ZOO_GRIDS)}.")
    checks = {}
    for params in zoo_runs(grid, expand(grid)):
        path = zoo_checkpoint(params["method"], params["fold"], params.get("shots", 1), params.get("variant", ""))
        record = path.with_suffix(".json")
        info = json.loads(record.read_text())
        state = read_weights(path, "A zoo model", f"re-make it: python -m fsslib.runs {grid_path}")
        info["check"] = measure_check(path, state["config"])
        write_text(record, json.dumps(info, indent=1) + "\n")
        checks[path.stem] = info["check"]
    return checks


def _located(file: Path) -> Path:
    """A file a run named: absolute, or relative to the notebooks' folder (the runs' working directory)."""
    return file if file.is_absolute() else (REPO / "notebooks" / file).resolve()


def _shown_path(file: Path) -> str:
    """A run's file as the repository names it (relative to its root when inside it)."""
    located = _located(file)
    return str(located.relative_to(REPO)) if located.is_relative_to(REPO) else str(located)


def _write_grid_table(grid: dict[str, Any], name: str, runs: list[dict[str, Any]], results_per_run: list[dict[str, Any]],
                      results: str | Path | None, publish: bool) -> list[dict[str, Any]]:
    """Write the grid's table and curves from its runs' ``metrics.json`` contents; ``publish``: also RESULTS.md."""
    rows = [row for result in results_per_run for row in result["rows"]]
    curves = {run_name(p): result["history"] for p, result in zip(runs, results_per_run)  # runs validated each epoch
              if any(h.get("val_miou") is not None for h in result.get("history") or [])}
    results_dir = Path(results or REPO / "papermill_runs" / "results")
    write_table(rows, results_dir / name, curves, beside_rows(grid, REPO / "papermill_runs" / "results"), grid.get("paper"))
    if publish:
        write_results_page(REPO / "papermill_runs")
    return rows


def rewrite_table(grid_path: str | Path, outputs: str | Path | None = None,
                  results: str | Path | None = None, settings: list[str] | None = None) -> list[dict[str, Any]]:
    """Write a grid's table again from its runs' outputs, running nothing: after a grid it sets its rows
    ``beside`` has been re-run, the comparison is refreshed with the same rows, curves and provenance. With
    ``settings`` (``--set``), the runs and table are the ``<name>_set`` ones :func:`execute` wrote."""
    grid = with_settings(load_grid(grid_path), settings) if settings else load_grid(grid_path)
    name = grid["name"] + ("_set" if settings else "")
    outputs = Path(outputs).resolve() if outputs else REPO / "papermill_runs" / "outputs" / name
    publish = results is None and not settings
    runs = expand(grid)
    if grid.get("compare"):
        from fsslib.compare import collect_comparison

        rows = collect_comparison(name, [(p, outputs / run_name(p)) for p in runs],
                                  Path(results or REPO / "papermill_runs" / "results"), seed_rows(grid),
                                  _strata_pairs(grid))
        if publish:
            write_results_page(REPO / "papermill_runs")
        return rows
    missing = [run_name(p) for p in runs if not (outputs / run_name(p) / "metrics.json").is_file()]
    if missing:
        raise DatasetNotFoundError(f"No outputs of {len(missing)} runs of {name} under {outputs} (e.g. {missing[0]}).",
                                   f"run the grid itself: python -m fsslib.runs {grid_path}{set_flags(settings)}")
    results_per_run = [json.loads((outputs / run_name(p) / "metrics.json").read_text()) for p in runs]
    return _write_grid_table(grid, name, runs, results_per_run, results, publish=publish)


def set_flags(settings: list[str] | None) -> str:
    """The ``--set`` arguments of a command line, to repeat them in a printed command."""
    return "".join(f" --set {setting}" for setting in settings or [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsslib.runs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="a grid file, e.g. papermill_runs/prototype_toy.yaml or papermill_runs/paper/piclip.yaml")
    parser.add_argument("--smoke", action="store_true", help="tiny settings, results to <name>_smoke")
    parser.add_argument("--plan", action="store_true",
                        help="run nothing: print the runs, the files they read that are missing (with the "
                             "python -m fsslib.fetch command for each) and the estimated GPU-hours")
    parser.add_argument("--set", dest="settings", action="append", metavar="KEY=VALUE",
                        help="change a setting of every run (repeatable; VALUE read as YAML): fold=0 keeps fold 0's "
                             "runs, image_size=97 sets it, options.clip_pretrained=null one method option; results to "
                             "<name>_set")
    parser.add_argument("--outputs", default=None, help="where the runs' folders (executed notebooks, checkpoints) go")
    parser.add_argument("--results", default=None,
                        help="where the table goes (default papermill_runs/results; elsewhere RESULTS.md is not rewritten)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at once (default: the grid's, else 1); on a GPU machine one per GPU group")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: the grid's, else 1)")
    parser.add_argument("--gpus-per-run", type=int, default=None,
                        help="GPUs per run, trained through torchrun (default: the grid's gpus_per_run, else 1)")
    parser.add_argument("--executor", choices=EXECUTORS, default="pool",
                        help="pool: this machine (default); slurm: one Slurm job per run through submitit; local: "
                             "submitit's local executor")
    parser.add_argument("--partition", default=None, help="with --executor slurm: the partition (default: the grid's slurm:)")
    parser.add_argument("--time-min", type=int, default=None,
                        help="with --executor slurm or local: each job's time limit in minutes; a run that needs more is "
                             "requeued and resumes (default: the grid's slurm:, else 240)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted grid: keep finished runs, resume the others from their last.pt")
    parser.add_argument("--table-only", action="store_true",
                        help="run nothing: write the table again from the runs' outputs (e.g. after a 'beside' grid changed)")
    parser.add_argument("--recheck-zoo", action="store_true",
                        help="run nothing: measure the check of each zoo model this grid exports again (its mIoU on "
                             "the first test episodes, which the tests repeat) and write it into the model's .json")
    parser.add_argument("--from-csv", action="store_true",
                        help="run nothing, need no outputs: write the means over folds and the comparison with the 'beside' "
                             "grids again from the committed CSV files")
    args = parser.parse_args(argv)
    try:
        name = load_grid(args.grid)["name"] + ("_smoke" if args.smoke else "_set" if args.settings else "")
        if args.recheck_zoo:
            for model, check in recheck_zoo(args.grid).items():
                print(f"{model:45s} check mIoU {check['miou']:.4f} on {check['episodes']} episodes")
            return
        if args.from_csv and (args.smoke or args.table_only):
            parser.error("--from-csv runs nothing: it goes with neither --smoke nor --table-only")
        if args.plan:
            print(plan(args.grid, smoke=args.smoke, jobs=args.jobs, settings=args.settings, executor=args.executor,
                       gpus_per_run=args.gpus_per_run))
            return
        if args.from_csv and load_grid(args.grid).get("compare"):
            parser.exit(0, f"pages and index -> {write_results_page(REPO / 'papermill_runs')} (its means: --table-only)\n")
        if args.from_csv:
            rows = refresh_from_csv(args.grid)
        elif args.table_only:
            rows = rewrite_table(args.grid, args.outputs, args.results, args.settings)
        else:
            rows = execute(args.grid, smoke=args.smoke, outputs=args.outputs, results=args.results, jobs=args.jobs,
                           threads=args.threads,
                           resume=args.resume, settings=args.settings, executor=args.executor,
                           gpus_per_run=args.gpus_per_run, partition=args.partition, time_min=args.time_min)
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")
    results = args.results or "papermill_runs/results"
    if load_grid(args.grid).get("compare") and not args.from_csv:
        print(f"{len(rows)} rows -> table {results}/{name}.md, figure {results}/{name}.png"
              + ("" if args.smoke or args.results else "; every grid: papermill_runs/RESULTS.md"))
        return
    written = f"{name}.md (its means and comparison)" if args.from_csv else f"{name}.csv and .md"
    print(f"{len(rows)} rows -> {results}/{written}")


if __name__ == "__main__":
    main()
