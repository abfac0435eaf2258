"""The methods side by side on the same test episodes: the comparison a grid with ``compare: true`` writes.

    python -m fsslib.runs papermill_runs/compare_toy.yaml

Every run of such a grid evaluates one method on the same test episodes of a fold at each of its
``test_ways`` and ``test_shots``: the episodes depend on the fold, shots, ways and seed only. A trained
method's model is the shipped zoo model (``ckpt: zoo``) or a checkpoint file, evaluated by
:func:`fsslib.evaluate.run` in ``jobs`` worker processes (:func:`execute_comparison`); a run with ``ckpt: null``
is trained by the grid itself through its ``notebook`` (the main job's prototype). From the evaluations'
``metrics.json`` and ``episodes.npz`` :func:`write_comparison` writes

* ``<name>.csv`` -- one row per run and setting, with the method's support annotation and its model, and
  ``<name>_per_class.csv`` -- the per-class IoUs behind each row;
* ``<name>.md`` -- the comparison (mean over the compared folds of the default variants, for each of the
  1-way / 2-way, 1-shot / 5-shot settings that ran; figure ``<name>.png``), the support-mode matrix (each
  mode a method reads, figure ``<name>_support_modes.png``), the strata of the 1-way 1-shot episodes
  (:mod:`fsslib.data.strata`, mIoU with a bootstrap interval and the episode count, figure
  ``<name>_strata.png``, table ``<name>_strata.csv``), each mechanism's difference from its baseline per
  stratum (paired bootstrap; the pairs of :data:`MECHANISMS`, or the grid's ``strata_pairs``, whose labels may
  name a variant as ``method (variant)``: a control), the spread of training seeds on fold 0 (the grids named
  under the compare grid's ``seeds``, e.g. ``[zoo_seeds_toy, qgnet_seeds_toy]``) and the rows per fold.
"""
from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import zlib
from statistics import fmean
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset
from fsslib.data.strata import STRATA, describe_episodes, episode_strata
from fsslib.engine import open_source
from fsslib.errors import FsslibError
from fsslib.paths import atomic_path, save_figure, write_text
from fsslib.methods import support_annotation
from fsslib.metrics import episodes_miou, percentile_interval, resampled_miou
from fsslib.tables import CSV_DECIMALS, curve_lines, provenance_line, shown
from fsslib.zoo import names_zoo

# what a support brings, by the methods' support annotation (fsslib.methods.support_annotation)
SUPPORT_MODES = {
    "class names": "class name",
    "images (no masks)": "whole image",
    "pixel masks": "image + mask",
    "images + pixel masks": "image + mask",
    "pixel masks + class names": "image + mask + class name",
    "class names + pixel masks": "image + mask + class name",
    "images + class names": "image + class name",
}
MODES = ("class name", "whole image", "image + mask", "image + mask + class name", "image + class name")
SETTINGS = ((1, 1), (1, 5), (2, 1), (2, 5))  # (ways, shots) of the comparison's columns
ROW_COLUMNS = ("method", "variant", "support annotation", "model", "fold", "ways", "shots", "train_shots", "seed", "episodes",
               "miou", "fbiou")
RESAMPLES = 1000  # bootstrap resamples of the strata's intervals
EVALUATION_KEYS = ("method", "variant", "preset", "fold", "shots", "ways", "test_shots", "test_ways", "seed", "episodes",
                   "ckpt")  # what a compare grid's run may set


def evaluations(params: dict[str, Any], folder: Path) -> list[tuple[dict[str, Any], Path]]:
    """The evaluations of one run of a compare grid: (config overrides, output folder) per test ways and shots,
    in the folders the train/eval notebook uses (``eval_<N>way_<K>shot``)."""
    unknown_keys = sorted(set(params) - set(EVALUATION_KEYS))
    if unknown_keys:
        raise FsslibError(f"A compare grid's run sets {unknown_keys}, which an evaluation does not take.",
                          f"set only {', '.join(EVALUATION_KEYS)}.")
    fixed = {k: v for k, v in params.items() if k not in ("test_shots", "test_ways")}
    return [({**fixed, "ways": ways, "shots": shots}, folder / f"eval_{ways}way_{shots}shot")
            for ways in params.get("test_ways") or [params.get("ways", 1)]
            for shots in params.get("test_shots") or [params.get("shots", 1)]]


def _evaluate(overrides: dict[str, Any], folder: Path, smoke: bool, threads: int) -> dict[str, Any]:
    """One evaluation in a worker process or thread: ``fsslib.evaluate.run`` with ``threads`` torch threads."""
    from fsslib import evaluate

    torch.set_num_threads(threads)
    return evaluate.run(make_config(**overrides, smoke=smoke, out=folder, progress=False))


def finished(overrides: dict[str, Any], folder: Path, smoke: bool) -> dict[str, Any] | None:
    """The metrics of an evaluation already in ``folder`` if they were made with these settings and after the
    checkpoint they read was last written (a re-made zoo model is evaluated again); else None."""
    metrics_file, episodes_file = folder / "metrics.json", folder / "episodes.npz"
    if not (metrics_file.is_file() and episodes_file.is_file()):
        return None
    metrics = json.loads(metrics_file.read_text())
    wanted = make_config(**overrides, smoke=smoke).to_dict()
    saved = metrics.get("config", {})
    if any(saved.get(key) != wanted[key] for key in (*overrides, "episodes", "smoke")):
        return None
    checkpoint = metrics.get("checkpoint")
    if checkpoint and (not Path(checkpoint).is_file() or Path(checkpoint).stat().st_mtime > metrics_file.stat().st_mtime):
        return None
    return metrics


TRAINING_FREE = "none (training-free)"  # the model column of a method without weights
LIVE = "trained by this grid"  # ... of a run with ckpt: null (the train/eval notebook trains it)


def trains_live(params: dict[str, Any]) -> bool:
    """Whether a compare grid's run goes through the train/eval notebook, which trains a trained method and then
    evaluates it (``ckpt: null``), rather than evaluating a given model (``ckpt: zoo`` or a path)."""
    return "ckpt" in params and params["ckpt"] is None


def model_source(params: dict[str, Any], row: dict[str, Any]) -> str:
    """What a row's model is, for the ``model`` column of the rows per fold: the zoo, trained by the grid, a
    checkpoint file, or none."""
    if not row.get("checkpoint"):
        return TRAINING_FREE
    return LIVE if trains_live(params) else "zoo" if names_zoo(params.get("ckpt")) else str(params.get("ckpt"))


def _live_finished(params: dict[str, Any], folder: Path, smoke: bool) -> list[dict[str, Any]] | None:
    """The metrics of a live run's evaluations (its notebook wrote them into ``folder/eval_<N>way_<K>shot``) if
    every one was made with the grid's settings (:func:`finished`; the checkpoint is the run's own); else None."""
    made = [finished({k: v for k, v in overrides.items() if k != "ckpt"}, eval_dir, smoke)
            for overrides, eval_dir in evaluations(params, folder)]
    return None if any(metrics is None for metrics in made) else made


def execute_comparison(name: str, runs: list[tuple[dict[str, Any], Path]], results_dir: Path, jobs: int,
                       threads: int, resume: bool, smoke: bool, seed_rows: list[dict[str, Any]] = (),
                       run_notebook: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                       pairs: tuple[tuple[str, str], ...] | None = None) -> list[dict[str, Any]]:
    """Evaluate every (run parameters, output folder) of a compare grid, ``jobs`` at a time with ``threads``
    torch threads each, in worker processes (one job without runs to train: in a thread of this process)
    (``resume``: evaluations already made with the same settings are read,
    :func:`finished`), then write the comparison, with ``seed_rows``' spread, into ``results_dir``; returns
    the rows. A run with ``ckpt: null`` (:func:`trains_live`) is handed whole to ``run_notebook`` (the
    train/eval notebook: it trains, then evaluates into the same folders), first, since it takes longest;
    its evaluations must then be the grid's (not, say, smoke-sized because ``FSSLIB_SMOKE`` was set).
    An error in one evaluation cancels those not yet started."""
    live = [(params, folder) for params, folder in runs if trains_live(params)]
    if live and run_notebook is None:
        raise FsslibError(f"Grid {name} trains its run {live[0][1].name} (ckpt: null) but names no notebook to train it.",
                          "add `notebook: notebooks/90_train_eval.ipynb` to the grid, or give the run a checkpoint.")
    tasks = [task for params, folder in runs if not trains_live(params) for task in evaluations(params, folder)]
    made: dict[Path, dict[str, Any]] = {}  # evaluation folder -> its metrics
    if resume:
        made |= {eval_dir: metrics for overrides, eval_dir in tasks
                 if (metrics := finished(overrides, eval_dir, smoke)) is not None}
        for params, folder in live:
            if (metrics := _live_finished(params, folder, smoke)) is not None:
                made |= {eval_dir: m for (_, eval_dir), m in zip(evaluations(params, folder), metrics)}
    threads_before, torch_threads = os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the workers
    if jobs == 1 and not live:  # evaluations one at a time: in a thread of this process, no worker to start
        pool = ThreadPoolExecutor(max_workers=1)
    else:  # papermill changes its process's working directory: a notebook runs in a process of its own
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(run_notebook, params): (params, folder) for params, folder in live
                   if any(eval_dir not in made for _, eval_dir in evaluations(params, folder))}
        futures |= {pool.submit(_evaluate, overrides, eval_dir, smoke, threads): (overrides, eval_dir)
                    for overrides, eval_dir in tasks if eval_dir not in made}
        for future in tqdm(as_completed(futures), total=len(futures),
                           desc=f"compare {name} ({len(tasks)} evaluations, {len(live)} runs trained)"):
            result = future.result()  # an error stops the grid here
            params, folder = futures[future]
            if not trains_live(params):
                made[folder] = result
            elif (metrics := _live_finished(params, folder, smoke)) is not None:
                made |= {eval_dir: m for (_, eval_dir), m in zip(evaluations(params, folder), metrics)}
            else:
                raise FsslibError(f"The notebook of run {folder.name} did not evaluate it with the grid's settings.",
                                  "unset FSSLIB_SMOKE (it shrinks the notebook's runs), or pass --smoke to the grid.")
    finally:  # after an error or an interrupt, no further evaluation starts
        pool.shutdown(cancel_futures=True)
        torch.set_num_threads(torch_threads)  # as it was, after evaluations in this process's thread
        if threads_before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = threads_before
    return _write_in_order(name, runs, results_dir, seed_rows, made, pairs)


def _write_in_order(name: str, runs: list[tuple[dict[str, Any], Path]], results_dir: Path,
                    seed_rows: list[dict[str, Any]], made: dict[Path, dict[str, Any]],
                    pairs: tuple[tuple[str, str], ...] | None = None) -> list[dict[str, Any]]:
    """Write the comparison of ``runs`` in the grid's order from ``made`` (evaluation folder -> metrics), each
    row with its ``model`` (:func:`model_source`)."""
    rows = [({**made[eval_dir], "model": model_source(params, made[eval_dir])}, eval_dir)
            for params, folder in runs for _, eval_dir in evaluations(params, folder)]
    trained = [folder / "metrics.json" for params, folder in runs if trains_live(params)]  # the notebook's learning curve
    curves = {path.parent.name: history for path in trained if path.is_file()
              and (history := json.loads(path.read_text()).get("history"))}
    write_comparison(name, rows, results_dir, seed_rows, pairs, curves)
    return [row for row, _ in rows]


def collect_comparison(name: str, runs: list[tuple[dict[str, Any], Path]], results_dir: Path,
                       seed_rows: list[dict[str, Any]] = (), pairs: tuple[tuple[str, str], ...] | None = None
                       ) -> list[dict[str, Any]]:
    """Write the comparison again from the evaluations' outputs, running nothing."""
    made = {}
    for params, folder in runs:
        for _, eval_dir in evaluations(params, folder):
            if not ((eval_dir / "metrics.json").is_file() and (eval_dir / "episodes.npz").is_file()):
                raise FsslibError(f"No outputs (metrics.json and episodes.npz) of the evaluation {eval_dir} of {name}.",
                                  "run the grid itself first.")
            made[eval_dir] = json.loads((eval_dir / "metrics.json").read_text())
    return _write_in_order(name, runs, results_dir, seed_rows, made, pairs)


def method_label(row: dict[str, Any]) -> str:
    """``method`` or ``method (variant)``."""
    return f"{row['method']} ({row['variant']})" if row.get("variant") else row["method"]


def compared_folds(rows: list[dict[str, Any]]) -> list[int]:
    """The folds a comparison covers: every fold any of its rows ran on (the 4 folds of ``compare_toy``, fold 0
    of the quickstart's)."""
    return sorted({int(row["fold"]) for row in rows})


def folds_text(folds: list[int]) -> str:
    """How a table names the folds its numbers cover: "mean over the 4 folds", "fold 0", "mean over folds 0, 1"."""
    if folds == [0, 1, 2, 3]:
        return "mean over the 4 folds"
    return f"fold {folds[0]}" if len(folds) == 1 else f"mean over folds {', '.join(map(str, folds))}"


def fold_mean(rows: list[dict[str, Any]], key: str, folds: list[int]) -> float | None:
    """The mean of ``key`` over rows that cover ``folds`` once each, as every table takes it: of the values as
    given, unrounded (:func:`fsslib.tables.means_basis`); None otherwise (a fold did not run)."""
    covered = sorted(int(row["fold"]) for row in rows)
    return fmean(row[key] for row in rows) if covered == folds else None


def comparison_table(rows: list[dict[str, Any]], variants: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """One row per method (default variants, and ``variants``' labels ``method (variant)``): mean mIoU and
    FB-IoU over the compared folds per (ways, shots)."""
    folds = compared_folds(rows)
    table = []
    shown = [row for row in rows if not row.get("variant") or method_label(row) in variants]
    for label in dict.fromkeys(method_label(row) for row in shown):
        mine = [row for row in shown if method_label(row) == label]
        entry: dict[str, Any] = {"method": label,
                                 "support annotation": support_annotation(mine[0]["method"], mine[0].get("variant", ""))}
        for ways, shots in SETTINGS:
            setting = [row for row in mine if row["ways"] == ways and row["shots"] == shots]
            entry[f"{ways}-way {shots}-shot mIoU"] = fold_mean(setting, "miou", folds)
            entry[f"{ways}-way {shots}-shot FB-IoU"] = fold_mean(setting, "fbiou", folds)
        table.append(entry)
    return table


def support_mode_matrix(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method, the 1-way 1-shot mIoU (mean over the compared folds) of each support mode it reads (None:
    blank); where two variants read the same mode, the default variant's."""
    folds = compared_folds(rows)
    settings: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if (row["ways"], row["shots"]) == (1, 1):
            settings.setdefault((row["method"], row.get("variant", "")), []).append(row)
    matrix: dict[str, dict[str, Any]] = {}
    for (method, variant), group in sorted(settings.items(), key=lambda item: item[0][1] == ""):  # defaults last
        mode = SUPPORT_MODES.get(support_annotation(method, variant))  # None: reads nothing of the support
        if mode is not None:
            matrix.setdefault(method, {"method": method, **dict.fromkeys(MODES)})[mode] = fold_mean(group, "miou", folds)
    return [matrix[method] for method in dict.fromkeys(row["method"] for row in rows) if method in matrix]


MECHANISMS = (("piclip", "pfenet"), ("qgnet", "pfenet"), ("lfss", "pfenet"), ("clip-dinoiser-support", "clip-dinoiser"),
              ("piclip-bam", "bam"), ("piclip-hdmnet", "hdmnet"))
# (method, its baseline) whose per-stratum difference tests what docs/compare.md says each paper expects: PI-CLIP's
# and QGNet's priors over PFENet's (PI-CLIP's also over BAM's and HDMNet's), LFSS's class names over PFENet's masks,
# support images over text prompts


def _strata_inputs(runs: list[tuple[dict[str, Any], Path]], shots: int,
                   variants: tuple[str, ...] = ()) -> dict[str, dict[int, tuple[Any, dict]]]:
    """Per default-variant method (and per ``variants``' label, ``method (variant)``) that ran on every compared
    fold at 1 way and ``shots`` shots: per fold, its saved episodes (``episodes.npz``) and their strata
    (described afresh from the fold, count and seed; the saved episodes must be those: their classes are
    checked)."""
    chosen = [(row, folder) for row, folder in runs if (row["ways"], row["shots"]) == (1, shots)
              and (not row.get("variant") or method_label(row) in variants)]
    folds = compared_folds([row for row, _ in chosen])
    cfg = make_config(preset="toy")
    described: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}

    def strata_of(fold: int, folder: Path, episodes: Any) -> dict[str, np.ndarray]:
        key = (fold, len(episodes["counts"]), int(episodes["seed"]))
        if key not in described:
            dataset = EpisodeDataset(open_source(cfg, "test"), fold, shots, cfg.image_size, key[1], key[2])
            described[key] = describe_episodes(dataset)
        if not np.array_equal(described[key]["class_id"], episodes["class_ids"][:, 0]):
            raise FsslibError(f"{folder / 'episodes.npz'} holds other episodes than fold {fold}'s {key[1]} 1-way "
                              f"{shots}-shot test episodes of seed {key[2]}.",
                              "evaluate again with fsslib.evaluate (it writes episodes.npz), then write the comparison.")
        return episode_strata(described[key])

    inputs = {}
    for method in dict.fromkeys(method_label(row) for row, _ in chosen):
        mine = {row["fold"]: folder for row, folder in chosen if method_label(row) == method}
        if sorted(mine) == folds:
            saved = {fold: np.load(mine[fold] / "episodes.npz") for fold in folds}
            inputs[method] = {fold: (saved[fold], strata_of(fold, mine[fold], saved[fold])) for fold in folds}
    return inputs


def _stratum_scores(per_fold: dict[int, tuple[Any, dict]], grouping: str, stratum: str) -> tuple[list, list, int]:
    """One method's mIoU on each fold's episodes in a stratum, their bootstrap resamples ((R,) each) and the
    episode count. The resamples come from one generator per (grouping, stratum), so two methods' resamples
    pick the same episodes: their difference is a paired bootstrap."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{grouping}|{stratum}".encode()))
    points, resampled, count = [], [], 0
    for episodes, groupings in per_fold.values():
        inside = groupings[grouping] == stratum  # (E,)
        if not inside.any():
            continue
        counts = torch.from_numpy(episodes["counts"][inside, 1])  # (e, 2): the object's [I, U]
        classes = np.unique(episodes["class_ids"][:, 0])  # the fold's classes
        index = torch.from_numpy(np.searchsorted(classes, episodes["class_ids"][inside, 0]))
        points.append(float(episodes_miou(counts, index, len(classes))))
        resampled.append(resampled_miou(counts, index, len(classes), RESAMPLES, generator))
        count += int(inside.sum())
    return points, resampled, count


def strata_table(runs: list[tuple[dict[str, Any], Path]], shots: int = 1,
                 variants: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """mIoU of each default-variant method (and of ``variants``, labelled ``method (variant)``) on each stratum
    of its 1-way ``shots``-shot test episodes.

    ``runs``: (row, folder of its ``episodes.npz``). Per stratum the mIoU of each fold's episodes in it is
    averaged over the compared folds (those of any chosen row; a method that missed one is left out); the
    interval is the percentile bootstrap of that mean (episodes resampled within each fold), ``episodes``
    the count over the folds.
    """
    table = []
    for method, per_fold in _strata_inputs(runs, shots, variants).items():
        for grouping, names in STRATA.items():
            for stratum in names:
                points, resampled, count = _stratum_scores(per_fold, grouping, stratum)
                if points:
                    low, high = percentile_interval(torch.stack(resampled).mean(0))
                    table.append({"method": method, "grouping": grouping, "stratum": stratum, "episodes": count,
                                  "miou": 100 * float(np.mean(points)), "low": 100 * low, "high": 100 * high})
    return table


def strata_differences(runs: list[tuple[dict[str, Any], Path]], pairs: tuple[tuple[str, str], ...] = MECHANISMS,
                       shots: int = 1) -> list[dict[str, Any]]:
    """Per (method, baseline) of ``pairs`` that both ran and per stratum: the method's mIoU minus the
    baseline's on the same episodes (mean over the compared folds), with the 95% interval of the paired
    bootstrap (the same resampled episodes for both); rows shaped as :func:`strata_table`'s, ``method`` being
    ``"<method> - <baseline>"`` and ``miou`` the difference; a method or baseline may be a variant's label,
    ``method (variant)``."""
    inputs = _strata_inputs(runs, shots, variants_in(pairs))
    computed: dict[tuple[str, str, str], tuple[list, list, int]] = {}  # a baseline serves several pairs

    def scores(method: str, grouping: str, stratum: str) -> tuple[list, list, int]:
        if (method, grouping, stratum) not in computed:
            computed[method, grouping, stratum] = _stratum_scores(inputs[method], grouping, stratum)
        return computed[method, grouping, stratum]

    table = []
    for method, baseline in pairs:
        if method not in inputs or baseline not in inputs:
            continue
        for fold, (episodes, _) in inputs[method].items():  # pairing needs the very same episodes
            if not np.array_equal(episodes["class_ids"], inputs[baseline][fold][0]["class_ids"]):
                raise FsslibError(f"{method} and {baseline} were scored on other episodes of fold {fold}.",
                                  "evaluate both with the same episodes and seed (one compare grid), then write the comparison.")
        for grouping, names in STRATA.items():
            for stratum in names:
                points, resampled, count = scores(method, grouping, stratum)
                base_points, base_resampled, _ = scores(baseline, grouping, stratum)
                if points:
                    low, high = percentile_interval((torch.stack(resampled) - torch.stack(base_resampled)).mean(0))
                    table.append({"method": f"{method} - {baseline}", "grouping": grouping, "stratum": stratum,
                                  "episodes": count, "miou": 100 * (float(np.mean(points)) - float(np.mean(base_points))),
                                  "low": 100 * low, "high": 100 * high})
    return table


POOLED_SPREAD = ("pfenet", "piclip", "lfss", "qgnet")  # the trained FSS methods the papers' claims compare; the
# prototype baseline's seeds swing more, and its own spread applies to it (docs/protocol.md)


def pooled_spread(spread: list[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """Per setting of :func:`seed_spread`'s table: the seed spread ``s`` pooled over :data:`POOLED_SPREAD` (root mean
    of their variances, each from three seeds) and how many methods it pools."""
    variances: dict[str, list[float]] = {}
    for entry in spread:
        if entry["method"] in POOLED_SPREAD:
            variances.setdefault(entry["setting"], []).append(entry["std"] ** 2)
    return {setting: (math.sqrt(sum(values) / len(values)), len(values)) for setting, values in variances.items()}


def resolution_threshold(pooled: float, n1: int, n2: int) -> float:
    """The difference that counts as resolved between a number of ``n1`` and one of ``n2`` separately trained models,
    given the pooled seed spread ``pooled``: twice its standard error, ``2 s sqrt(1/n1 + 1/n2)``."""
    return 2 * pooled * math.sqrt(1 / n1 + 1 / n2)


def resolution_thresholds(spread: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per setting of :func:`seed_spread`'s table: the pooled seed spread ``s`` (:func:`pooled_spread`) and the
    difference that counts as resolved (:func:`resolution_threshold`) between two single rows (n = 1), two means
    over the 4 folds (n = 4) and two means of three seeds (n = 3)."""
    table = []
    for setting, (pooled, methods) in pooled_spread(spread).items():
        table.append({"setting": setting, "methods pooled": methods, "pooled s": f"{pooled:.2f}",
                      **{label: f"{resolution_threshold(pooled, n, n):.2f}" for label, n in
                         (("two single rows", 1), ("two means over 4 folds", 4), ("two 3-seed means", 3))}})
    return table


def seed_spread(rows: list[dict[str, Any]], seed_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method (and variant) and setting that ``seed_rows`` (other training seeds on fold 0, e.g. grid
    ``zoo_seeds_toy``) hold: the fold-0 mIoU of every training seed, seed 0 from ``rows``, with their mean and
    sample standard deviation."""
    def key(row: dict[str, Any]) -> tuple[str, str, int, int]:
        return row["method"], row.get("variant") or "", int(row["ways"]), int(row["shots"])

    by_seed: dict[tuple[str, str, int, int], dict[int, float]] = {}
    for row in [r for r in rows if int(r["fold"]) == 0] + [r for r in seed_rows if int(r["fold"]) == 0]:
        by_seed.setdefault(key(row), {})[int(row["seed"])] = float(row["miou"])
    table = []
    for (method, variant, ways, shots), values in by_seed.items():
        if len(values) < 2:
            continue
        seeds = [values[seed] for seed in sorted(values)]
        table.append({"method": method_label({"method": method, "variant": variant}),
                      "setting": f"{ways}-way {shots}-shot", "seeds": ", ".join(map(str, sorted(values))),
                      "mIoU per seed": " / ".join(f"{v:.1f}" for v in seeds), "mean": float(np.mean(seeds)),
                      "std": float(np.std(seeds, ddof=1))})
    return table


def _cell(value: Any, decimals: int = 1) -> str:
    """A table's cell: a float with ``decimals`` decimals (one in Markdown, :data:`CSV_DECIMALS` in a CSV,
    :func:`fsslib.tables.shown`), None empty."""
    return "" if value is None else shown(value, decimals) if isinstance(value, float) else str(value)


def _markdown(table: list[dict[str, Any]], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in table]


INTEGER_COLUMNS = ("fold", "ways", "shots", "train_shots", "seed", "episodes")


def read_comparison(name: str, results_dir: Path) -> tuple[list[dict[str, Any]], ...]:
    """The committed rows (``<name>.csv``), strata (``<name>_strata.csv``) and the mechanisms' differences per
    stratum (``<name>_strata_differences.csv``; each empty if absent) of a comparison, typed as
    :func:`write_comparison` had them (IoUs to :data:`fsslib.tables.CSV_DECIMALS` decimals, one in CSVs written
    before they kept more), e.g. for notebook 08."""
    table = results_dir / f"{name}.csv"
    if not table.is_file():
        raise FsslibError(f"No comparison {table}.", f"write it: python -m fsslib.runs papermill_runs/{name}.yaml")

    def typed(row: dict[str, str]) -> dict[str, Any]:
        return {k: (None if v == "" else int(v)) if k in INTEGER_COLUMNS else float(v) if k in ("miou", "fbiou", "low", "high")
                else v for k, v in row.items()}

    def read(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            return []
        with path.open(newline="") as handle:
            return [typed(row) for row in csv.DictReader(handle)]

    return read(table), read(results_dir / f"{name}_strata.csv"), read(results_dir / f"{name}_strata_differences.csv")


def _strata_wide(strata: list[dict[str, Any]], signed: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The strata rows as one line per stratum, one column per method ("mIoU (low to high)", with a sign for
    differences), and its columns."""
    methods = list(dict.fromkeys(row["method"] for row in strata))
    lines: dict[tuple[str, str], dict[str, Any]] = {}
    for row in strata:
        line = lines.setdefault((row["grouping"], row["stratum"]), {"grouping": row["grouping"], "stratum": row["stratum"],
                                                                     "episodes": row["episodes"]})
        value, low, high = (round(row[key], 1) + 0.0 for key in ("miou", "low", "high"))  # + 0.0: no "-0.0"
        line[row["method"]] = (f"{value:+.1f} ({low:+.1f} to {high:+.1f})" if signed
                               else f"{value:.1f} ({low:.1f} to {high:.1f})")
    return list(lines.values()), ["grouping", "stratum", "episodes", *methods]


def variants_in(pairs: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The variant labels (``method (variant)``) that ``pairs`` name."""
    return tuple(label for pair in pairs for label in pair if " (" in label)


def write_comparison(name: str, runs: list[tuple[dict[str, Any], Path]], results_dir: Path,
                     seed_rows: list[dict[str, Any]] = (), pairs: tuple[tuple[str, str], ...] | None = None,
                     curves: dict[str, list[dict]] | None = None) -> list[dict[str, Any]]:
    """Write the comparison files of the module docstring from ``runs``: (row of a run's ``metrics.json``, its
    evaluation folder), with the spread of training seeds that ``seed_rows`` give (:func:`seed_spread`) and the learning
    ``curves`` of the runs the grid trained (their plateau verdicts, :func:`fsslib.tables.curve_lines`);
    returns the rows with their support annotation."""
    from fsslib.viz import plot_comparison, plot_strata, plot_support_modes

    rows = [{**row, "support annotation": support_annotation(row["method"], row.get("variant", ""))} for row, _ in runs]
    if not rows:
        raise FsslibError(f"Grid {name} has no rows to compare.", "run the grid first.")
    ran = [(w, k) for w, k in SETTINGS if any((row["ways"], row["shots"]) == (w, k) for row in rows)]
    folds = folds_text(compared_folds(rows))
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / name
    with atomic_path(stem.with_suffix(".csv")) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROW_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _cell(row.get(k), CSV_DECIMALS) for k in ROW_COLUMNS} for row in rows)
    with atomic_path(results_dir / f"{name}_per_class.csv") as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "variant", "fold", "ways", "shots", "class", "iou"])
        writer.writerows([row["method"], row.get("variant", ""), row["fold"], row["ways"], row["shots"], cls, f"{iou:.1f}"]
                         for row in rows for cls, iou in row["per_class_iou"].items())
    pairs = MECHANISMS if pairs is None else pairs
    comparison = comparison_table(rows, variants_in(pairs))
    matrix = support_mode_matrix(rows)
    strata = strata_table(runs, variants=variants_in(pairs))
    differences = strata_differences(runs, pairs)
    save_figure(plot_comparison(comparison, [f"{w}-way {k}-shot" for w, k in ran], folds), results_dir / f"{name}.png")
    if matrix:
        save_figure(plot_support_modes(matrix, MODES), results_dir / f"{name}_support_modes.png")
    for table, suffix, ylabel in ((strata, "strata", "1-way 1-shot mIoU (%)"),
                                  (differences, "strata_differences", "mIoU difference (points)")):
        if not table:
            continue
        save_figure(plot_strata(table, ylabel), results_dir / f"{name}_{suffix}.png")
        with atomic_path(results_dir / f"{name}_{suffix}.csv") as temporary, temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows({k: _cell(v, CSV_DECIMALS) for k, v in row.items()} for row in table)
    episodes = sorted({row["episodes"] for row in rows})
    sources = sorted({row.get("model") or "" for row in rows} - {"", TRAINING_FREE})
    setting_columns = [f"{w}-way {k}-shot mIoU" for w, k in ran] + [f"{w}-way {k}-shot FB-IoU" for w, k in ran]
    lines = [f"# {name}: the methods side by side", "",
             f"Toy tier; every row on the same test episodes ({', '.join(map(str, episodes))} per fold and setting, "
             f"seed {rows[0]['seed']}); trained methods' models: {', '.join(sources) or 'none'} (column `model` of the "
             f"rows per fold; the zoo: `fsslib.zoo`). mIoU and FB-IoU in %, {folds} (of the unrounded per-fold "
             f"values; blank: not every fold ran). The support annotation is what a user brings with each support "
             f"besides its image ([support modes](../../docs/protocol.md#support-modes)).", "",
             *_markdown(comparison, ["method", "support annotation", *setting_columns]), "",
             f"![the methods side by side]({name}.png)", "",
             "## Support modes", "",
             f"1-way 1-shot mIoU, {folds}, of each support mode a method reads (blank: not evaluated in this "
             f"grid; a method's default variant, the others in the rows per fold).", "",
             *_markdown(matrix, ["method", *MODES]), "",
             *([f"![support modes]({name}_support_modes.png)", ""] if matrix else [])]
    if strata:
        lines += ["## Where each method wins: strata of the 1-way 1-shot episodes", "",
                  f"Strata fixed before any method was scored ([their definitions](../../docs/protocol.md#strata)); "
                  f"mIoU ({folds}) with a 95% bootstrap interval of {RESAMPLES} resamples of the episodes, and the "
                  f"episode count over the folds. The intervals cover the episodes, not the training seed. "
                  f"Table: `{name}_strata.csv`.", "",
                  *_markdown(*_strata_wide(strata)), "", f"![strata]({name}_strata.png)", ""]
    if differences:
        compared = ("PI-CLIP's and QGNet's priors over PFENet's, PI-CLIP's over BAM's and HDMNet's, LFSS's class names "
                    "over PFENet's masks, CLIP-DINOiser's support images over its text prompts "
                    "(`fsslib.compare.MECHANISMS`; what each paper leads us to "
                    "expect: [docs/compare.md](../../docs/compare.md))") if pairs == MECHANISMS else \
            "the pairs the grid names (`strata_pairs`): " + ", ".join(f"{a} over {b}" for a, b in pairs)
        lines += [("### Each paper's mechanism against its baseline, per stratum" if pairs == MECHANISMS
                   else "### Each pair's difference, per stratum"), "",
                  "mIoU of a method minus its baseline's on the same episodes, in points. The 95% interval is the "
                  f"paired bootstrap's: the same resampled episodes for both. The pairs: {compared}. Table: "
                  f"`{name}_strata_differences.csv`.", "",
                  *_markdown(*_strata_wide(differences, signed=True)), "",
                  f"![differences per stratum]({name}_strata_differences.png)", ""]
    spread = seed_spread(rows, list(seed_rows))
    if spread:
        lines += ["## The spread of training seeds (fold 0)", "",
                  "Each trained method's zoo configuration trained with other seeds on fold 0 and evaluated on the same "
                  "episodes; seed 0 is the zoo model. The spread of the methods pooled below sets when a difference "
                  "between two methods counts as resolved, assumed alike on the other folds "
                  "([docs/protocol.md](../../docs/protocol.md#when-a-difference-is-resolved)).",
                  "", *_markdown(spread, ["method", "setting", "seeds", "mIoU per seed", "mean", "std"]), "",
                  f"Pooled over {', '.join(POOLED_SPREAD)}, the spread gives the differences that count as resolved "
                  "(twice the standard error from training seeds, `fsslib.compare.resolution_thresholds`):", "",
                  *_markdown(resolution_thresholds(spread), ["setting", "methods pooled", "pooled s", "two single rows",
                                                            "two means over 4 folds", "two 3-seed means"]), ""]
    if curves:
        lines += ["## The runs this grid trained", "", curve_lines(curves, stem), ""]
    lines += ["## Rows per fold", "", f"Per-class IoUs: `{name}_per_class.csv`.", "",
              *_markdown(rows, list(ROW_COLUMNS)), "", provenance_line(rows)]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    return rows
