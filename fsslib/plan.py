"""What a grid of the paper tier needs before it runs, and how long it runs: ``python -m fsslib.runs GRID --plan``.

:func:`grid_needs` asks :func:`fsslib.fetch.run_needs` what each run reads (the prepared benchmark, the backbone's and
CLIP's weights, the files its options name) and where fsslib looks for it; :func:`require_ready` stops a plain run
before anything starts while one is missing, naming the files and the ``python -m fsslib.fetch`` commands.
:func:`plan_text` adds the number of runs and the GPU-hours estimated from the measured rates (:mod:`fsslib.rates`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsslib.errors import DatasetNotFoundError
from fsslib.fetch import PROG, Need, run_needs
from fsslib.launch import run_config, run_name, trains


@dataclass(frozen=True)
class RunPlan:
    """One run: its name, config, evaluations ((ways, shots)), whether it trains, and its estimated GPU-hours."""

    name: str
    cfg: Any
    evaluations: list[tuple[int, int]]
    trains: bool
    hours: Any  # fsslib.rates.Estimate, or None without a measured rate
    workdir: Path  # the folder the run executes in: a relative file path in its options is read from there


def count(number: int, noun: str) -> str:
    """``count(1, "run")`` is "1 run", ``count(3, "run")`` "3 runs"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def run_plans(runs: list[dict[str, Any]], smoke: bool = False, workdir: Path | None = None) -> list[RunPlan]:
    """Each run's config and estimate (paper-tier runs only get an estimate: the rates are GPU rates); ``workdir``
    is the folder the runs execute in (the notebook's folder for notebook runs), the working directory if None."""
    from fsslib.rates import estimate

    plans = []
    for params in runs:
        cfg, evaluations, _ = run_config(params, smoke=smoke)
        trained = trains(cfg)
        hours = estimate(cfg, evaluations, trained) if cfg.preset == "paper" else None
        plans.append(RunPlan(run_name(params), cfg, evaluations, trained, hours, workdir or Path.cwd()))
    return plans


def grid_needs(plans: list[RunPlan]) -> list[tuple[Need, list[str]]]:
    """Every file or prepared benchmark the runs read, once, with the names of the runs that read it."""
    needs: dict[tuple[str, tuple[str, ...]], tuple[Need, list[str]]] = {}
    for plan in plans:
        for need in run_needs(plan.cfg, plan.workdir):
            needs.setdefault((need.name, need.looked_at), (need, []))[1].append(plan.name)
    return list(needs.values())


def fetch_all_commands(plans: list[RunPlan]) -> list[str]:
    """``python -m fsslib.fetch --all-for METHOD`` for each method of the runs (with its benchmark)."""
    pairs = dict.fromkeys((plan.cfg.method, plan.cfg.benchmark) for plan in plans if plan.cfg.preset == "paper")
    return [f"{PROG} --all-for {method}" + ("" if benchmark == "pascal" else f" --benchmark {benchmark}")
            for method, benchmark in pairs if benchmark in ("pascal", "coco")]


def _need_lines(need: Need, runs: list[str], total: int) -> list[str]:
    where = ", ".join(need.looked_at) or "not set"
    read_by = "every run" if len(runs) == total else f"{count(len(runs), 'run')}, e.g. {runs[0]}"
    return [f"  {'present' if need.present else 'MISSING'}  {need.name} ({read_by}): {where}",
            *([] if need.present else [f"           -> {need.command}"])]


def require_ready(plans: list[RunPlan], grid_path: str | Path) -> None:
    """Raise, naming every missing file and the command that fetches it, unless everything the runs read is there."""
    needs = grid_needs(plans)
    missing = [(need, runs) for need, runs in needs if not need.present]
    if not missing:
        return
    listed = "\n".join(line for need, runs in missing for line in _need_lines(need, runs, len(plans)))
    fetch_all = "; or at once: " + ", ".join(f"`{c}`" for c in fetch_all_commands(plans)) if fetch_all_commands(plans) else ""
    raise DatasetNotFoundError(
        f"Grid {grid_path} cannot start: {len(missing)} of the files its runs read are missing (nothing has run):\n"
        f"{listed}",
        f"fetch each with the command under it{fetch_all}; then run the grid again "
        f"(`python -m fsslib.runs {grid_path} --plan` lists what is still missing).")


def plan_text(grid: dict[str, Any], grid_path: str | Path, plans: list[RunPlan], jobs: int, gpus_per_run: int,
              executor: str) -> str:
    """The plan printed by ``--plan``: the runs, what is missing with its fetch command, and the estimated GPU-hours."""
    from fsslib.papers import BENCHMARK_NAMES, PAPER_FILES
    from fsslib.rates import HARDWARE, SOURCE

    methods = sorted({plan.cfg.method + (f" ({plan.cfg.variant})" if plan.cfg.variant else "") for plan in plans})
    folds = sorted({plan.cfg.fold for plan in plans})
    shots = sorted({plan.cfg.shots for plan in plans})
    seeds = sorted({plan.cfg.seed for plan in plans})
    benchmarks = sorted({BENCHMARK_NAMES.get(plan.cfg.benchmark, plan.cfg.benchmark) for plan in plans})
    lines = [f"Grid {grid['name']} ({grid_path}): {count(len(plans), 'run')} of {', '.join(methods)} on {', '.join(benchmarks)}; "
             f"folds {', '.join(map(str, folds))}; trained on {', '.join(f'{k}-shot' for k in shots)} episodes; "
             f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))})."]
    if grid.get("paper"):
        lines.append(f"Its table sets each fold and mean beside the paper's (fsslib.papers, "
                     f"shared/papers/{PAPER_FILES[grid['paper']]}).")
    needs = grid_needs(plans)
    missing = [need for need, _ in needs if not need.present]
    lines += ["", f"Files the runs read: {len(missing)} missing, {len(needs) - len(missing)} present"
                  + (" (a plain run refuses to start until none is missing):" if missing else ":")]
    lines += [line for need, runs in needs for line in _need_lines(need, runs, len(plans))] or ["  none (toy tier)"]
    if missing and fetch_all_commands(plans):
        lines.append("  Everything the methods read, at once: " + "; ".join(fetch_all_commands(plans)))
    lines += ["", *_hours_lines(plans, jobs, gpus_per_run, executor)]
    if any(plan.hours is not None for plan in plans):
        lines += ["", f"Measured rates: {HARDWARE}; {SOURCE}. Counted: training steps and evaluation episodes "
                      "(fsslib.rates): not data loading or checkpoints, so 1-shot hours are lower bounds. Episodes are "
                      "scaled by their images from the nearest measured setting (1 or 5 shots), which over-counts "
                      "where no 5-shot rate was measured; machines differ by about 25%."]
    if gpus_per_run > 1:
        batch = sorted({plan.cfg.batch_size for plan in plans})
        lines.append(f"gpus_per_run {gpus_per_run}: batch_size is per process, so a step trains {gpus_per_run} x batch_size "
                     f"({' or '.join(map(str, batch))} here) episodes; set batch_size to the paper's batch / {gpus_per_run} "
                     "to keep its recipe.")
    flags = ("" if executor == "pool" else f" --executor {executor}") \
        + ("" if gpus_per_run == grid.get("gpus_per_run", 1) else f" --gpus-per-run {gpus_per_run}")
    lines += ["", f"Run: python -m fsslib.runs {grid_path}{flags}"]
    return "\n".join(lines)


def _hours_lines(plans: list[RunPlan], jobs: int, gpus_per_run: int, executor: str) -> list[str]:
    """The estimated GPU-hours: in all, per kind of run, and the wall time on the machine or cluster."""
    timed = [plan for plan in plans if plan.hours is not None]
    if not timed:
        return ["GPU time: no estimate (no paper-tier run with a measured rate; toy-tier times: benchmarks/README.md)."]
    total = sum(plan.hours.hours for plan in timed)
    train = sum(plan.hours.train_hours for plan in timed)
    lines = [f"GPU time, estimated: {total:.1f} GPU-hours for {count(len(timed), 'run')} (training {train:.2f}, evaluation "
             f"{total - train:.2f})" + (f"; {count(len(plans) - len(timed), 'run')} without a measured rate" if len(timed) < len(plans) else "") + "."]
    kinds: dict[str, list[RunPlan]] = {}
    for plan in timed:
        trained = (f"trained on {plan.cfg.shots}-shot, {plan.cfg.epochs} epochs of {plan.cfg.episodes_per_epoch} episodes"
                   if plan.trains else "training-free")
        label = f"{plan.cfg.method}{f' ({plan.cfg.variant})' if plan.cfg.variant else ''} {trained}"
        kinds.setdefault(label, []).append(plan)
    for label, group in kinds.items():
        each = group[0].hours
        lines.append(f"  {label}: {each.hours:.2f} GPU-hours per run ({each.train_hours:.2f} training), {count(len(group), 'run')}")
    longest = max(plan.hours.hours for plan in timed) / gpus_per_run
    if executor == "pool":
        slots = max(1, jobs)
        wall = max(longest, total / gpus_per_run / slots)
        lines.append(f"  jobs {slots}, gpus_per_run {gpus_per_run}: about {wall:.1f} h of wall time on {slots * gpus_per_run} "
                     f"GPU{'s' if slots * gpus_per_run > 1 else ''} (the grid's jobs; fewer if this machine has fewer)")
    else:
        lines.append(f"  as Slurm jobs of {gpus_per_run} GPU{'s' if gpus_per_run > 1 else ''}: the longest run takes about "
                     f"{longest:.1f} h (a job limit below that requeues it, and it resumes)")
    return lines
