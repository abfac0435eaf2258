"""Train BAM, HDMNet and PI-CLIP on them again, on base learners of 384 epochs, over several sittings (no part of
fsslib: the schedule of one retraining, kept with its carried runs until it lands).

    python papermill_runs/in_training/piclip_baselines_384.py start CLONE    # continue in CLONE (cloned if missing)
    python papermill_runs/in_training/piclip_baselines_384.py save CLONE     # CLONE's progress -> this folder
    python papermill_runs/in_training/piclip_baselines_384.py status CLONE   # what is finished, in flight, waiting
    python papermill_runs/in_training/piclip_baselines_384.py trained-on LAND  # at the landing: each CPU's epochs

What trains, two processes at a time with one torch thread each (the toy tier's 2-core machine):

- the base learners of folds 1-3 at 384 epochs, with the command of fold 0's
  (``benchmarks/results/base_learner_budget/fold0-e384-s0.pt``, the budget control's run);
- on each fold's base learner, that fold's runs of ``piclip_baselines_toy`` (160 epochs: the 160 -> 320 doubling
  on fold 0's 384-epoch base learner kept that budget), once the base learner is finished;
- on fold 0's, the seed grid ``piclip_baselines_seeds_toy`` and the two-way control
  ``piclip_hdmnet_two_way_control`` (its grid file as it lands, here: it reads the zoo's base learner).

CLONE is a clone of this repository at ``TRAINING_COMMIT``, a commit of main: every run of the retraining trains
with the same code and records a commit that main holds, whatever main has become since. The runs
read this repository's ``.venv`` with ``PYTHONPATH=CLONE``. A fold's base learner replaces the zoo's in CLONE only
(``fsslib/checkpoints/zoo/base-learner-fold<F>.pt``), where the grid reads it and the zoo models record its digest.
``start`` loads what ``save`` carried (``base_learner_384/`` and the grids' folders here, :mod:`carry`), so every
step continues with ``--resume`` where the last sitting stopped. Run ``save`` and commit this folder before the
machine goes.

Sittings run on whatever machine is lent, and the training commit's records name only the last sitting's CPU. So
``start`` appends to ``sittings.jsonl`` this machine's CPU and the epoch each base learner and run starts from (the
clone's, after loading: a clone that outlived its sitting is further along than the carried files). A sitting
trained the epochs from its start to the next sitting's; ``trained-on`` writes those spans into the landing clone's
records as today's trainer records them (``trained_on``: :func:`fsslib.provenance.trained_on`).
"""
from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fsslib.provenance import cpu_model, trained_on

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BASE_LEARNERS = HERE / "base_learner_384"  # carried base learners: finished (.pt, .json) or in flight (.partial.pt)
BUDGET_FOLDER = Path("benchmarks/results/base_learner_budget")  # where the budget control writes, in CLONE
FOLDS_TO_TRAIN = (1, 2, 3)  # fold 0's base learner of 384 epochs is committed
GRIDS = {"piclip_baselines_toy": "piclip_baselines_toy_set",  # grid -> its outputs folder in CLONE
         "piclip_baselines_seeds_toy": "piclip_baselines_seeds_toy",
         "piclip_hdmnet_two_way_control": "piclip_hdmnet_two_way_control"}
SITTINGS = HERE / "sittings.jsonl"  # each sitting's CPU and where each step started from
LANDING_GRID_FILES = ("piclip_hdmnet_two_way_control.yaml",)  # here as they land; copied into CLONE's papermill_runs
SLOTS = 2
TRAINING_COMMIT = "b8e4e3f93985628a9deb3b132bf4fc8365f346fc"  # the code every run trains with (main, 2026-12-01)

spec = importlib.util.spec_from_file_location("carry", HERE / "carry.py")
carry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(carry)


def base_learner(clone: Path, fold: int) -> Path:
    """The 384-epoch base learner of ``fold`` in ``clone`` (the budget control's name for it)."""
    return clone / BUDGET_FOLDER / f"fold{fold}-e384-s0.pt"


def finished(out: Path) -> bool:
    """Whether the base learner ``out`` has finished: its ``.json``, which the trainer writes last (after the
    weights and their held-out scores), is there."""
    return out.with_suffix(".json").is_file()


def partial(path: Path) -> Path:
    """The file ``--resume`` continues a base learner from."""
    return path.with_suffix(".partial.pt")


@dataclass
class Step:
    """One command of the schedule; it may start when ``ready()`` and is done when ``done()`` (or it exited)."""
    name: str
    command: list[str]
    ready: Callable[[], bool] = lambda: True
    done: Callable[[], bool] = lambda: False
    before: Callable[[], None] = lambda: None  # what the command needs placed in the clone first
    process: subprocess.Popen | None = field(default=None, repr=False)
    exit_code: int | None = None


def steps(clone: Path) -> list[Step]:
    """The schedule in ``clone``, in the order slots take its steps: the base learners, each fold's grid runs (once
    its base learner is finished), the seed grid and the two-way control."""
    python = str(REPO / ".venv" / "bin" / "python")
    schedule = []
    for fold in FOLDS_TO_TRAIN:
        out = base_learner(clone, fold)
        schedule.append(Step(f"base-learner-fold{fold}",
                             [python, "-m", "fsslib.pretrain", "base-learner", "--fold", str(fold), "--epochs", "384",
                              "--seed", "0", "--precision", "fp32", "--threads", "1", "--no-progress", "--resume",
                              "--out", str(out)],
                             done=lambda out=out: finished(out)))
    for fold in (0, *FOLDS_TO_TRAIN):
        out = base_learner(clone, fold)
        schedule.append(Step(f"piclip_baselines_toy-fold{fold}",
                             [python, "-m", "fsslib.runs", "papermill_runs/piclip_baselines_toy.yaml", "--set",
                              f"fold={fold}", "--jobs", "1", "--resume"],
                             ready=lambda out=out: finished(out), before=lambda fold=fold: place_base_learner(clone, fold)))
    for grid in ("piclip_baselines_seeds_toy", "piclip_hdmnet_two_way_control"):
        schedule.append(Step(grid, [python, "-m", "fsslib.runs", f"papermill_runs/{grid}.yaml", "--jobs", "1", "--resume"],
                             ready=lambda: finished(base_learner(clone, 0)), before=lambda: place_base_learner(clone, 0)))
    return schedule


def place_base_learner(clone: Path, fold: int) -> None:
    """Put fold ``fold``'s 384-epoch base learner where the grids read it: the zoo's file in ``clone``, unless it is
    there already (another step's run may be reading it); each copy lands whole (a temporary file, then a rename)."""
    zoo = clone / "fsslib" / "checkpoints" / "zoo" / f"base-learner-fold{fold}.pt"
    source = base_learner(clone, fold)
    for made, placed in ((source, zoo), (source.with_suffix(".json"), zoo.with_suffix(".json"))):
        if placed.is_file() and filecmp.cmp(made, placed, shallow=False):
            continue
        shutil.copy2(made, placed.with_name(placed.name + ".tmp"))
        os.replace(placed.with_name(placed.name + ".tmp"), placed)


def clone_if_missing(clone: Path) -> None:
    """Clone this repository into ``clone`` at ``TRAINING_COMMIT`` if ``clone`` is missing, then check its commit."""
    if not clone.exists():
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "--detach", TRAINING_COMMIT], check=True)
    check_commit(clone)


def prepare(clone: Path) -> None:
    """Bring back into ``clone`` what earlier sittings carried."""
    for name in LANDING_GRID_FILES:
        shutil.copy2(HERE / name, clone / "papermill_runs" / name)
    for fold in FOLDS_TO_TRAIN:
        out = base_learner(clone, fold)
        carried = BASE_LEARNERS / out.name
        if finished(carried) and not finished(out):
            shutil.copy2(carried, out)
            shutil.copy2(carried.with_suffix(".json"), out.with_suffix(".json"))
        elif partial(carried).is_file() and not finished(out) and not partial(out).is_file():
            shutil.copy2(partial(carried), partial(out))
    for grid, outputs in GRIDS.items():
        if (HERE / grid).is_dir():
            (clone / "papermill_runs" / "outputs" / outputs).mkdir(parents=True, exist_ok=True)
            carry.load(HERE / grid, clone / "papermill_runs" / "outputs" / outputs)


def positions(clone: Path) -> dict[str, int]:
    """The epochs each base learner and run in ``clone`` has finished: ``base-learner-fold<F>`` and
    ``<grid>/<run>`` (those with none yet are left out)."""
    reached = {}
    for fold in FOLDS_TO_TRAIN:
        out = base_learner(clone, fold)
        if finished(out):
            reached[f"base-learner-fold{fold}"] = json.loads(out.with_suffix(".json").read_text())["settings"]["epochs"]
        elif partial(out).is_file():
            state = torch.load(partial(out), map_location="cpu", weights_only=False)
            reached[f"base-learner-fold{fold}"] = state["epoch"]
    for grid, outputs in GRIDS.items():
        folder = clone / "papermill_runs" / "outputs" / outputs
        for run in sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []:
            if (run / "train_summary.json").is_file():
                reached[f"{grid}/{run.name}"] = json.loads((run / "train_summary.json").read_text())["epochs"]
            elif (run / "last.pt").is_file():
                state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
                reached[f"{grid}/{run.name}"] = state["epoch"]
    return reached


def record_sitting(clone: Path, sittings: Path | None = None) -> None:
    """Append this sitting to ``sittings`` (:data:`SITTINGS`): when it started, this machine's CPU and where each
    step starts from."""
    with (sittings or SITTINGS).open("a") as log:
        log.write(json.dumps({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "processor": cpu_model(),
                              "positions": positions(clone)}) + "\n")


def trained_on_spans(item: str, epochs: int, sittings: Path | None = None) -> list[dict]:
    """Which CPU trained which of the ``epochs`` epochs of ``item`` (a key of :func:`positions`), from ``sittings``
    (:data:`SITTINGS`): each sitting trained those from its start's position to the next sitting's (the last, to
    the end)."""
    sittings = sittings or SITTINGS
    records = [json.loads(line) for line in sittings.read_text().splitlines() if line.strip()]
    starts = [record["positions"].get(item, 0) for record in records]
    if starts != sorted(starts):
        raise SystemExit(f"{sittings}: {item} starts a sitting behind an earlier one ({starts}): a sitting lost "
                         "carried epochs, so which CPU trained them cannot be told.")
    spans: list[dict] = []
    for record, start, end in zip(records, starts, [*starts[1:], epochs]):
        for epoch in range(start + 1, end + 1):
            spans = trained_on(spans, epoch, record["processor"])
    return spans


def write_trained_on(land: Path) -> None:
    """Write ``trained_on`` into the landing clone ``land``'s records of the retraining: the zoo's base learners of
    folds 1-3 and the loaded runs' training summaries (which the zoo's export copies)."""
    for fold in FOLDS_TO_TRAIN:
        path = land / "fsslib" / "checkpoints" / "zoo" / f"base-learner-fold{fold}.json"
        record = json.loads(path.read_text())
        record["trained_on"] = trained_on_spans(f"base-learner-fold{fold}", record["settings"]["epochs"])
        path.write_text(json.dumps(record, indent=1) + "\n")
    for grid in GRIDS:
        for summary in sorted((land / "papermill_runs" / "outputs" / grid).glob("*/train_summary.json")):
            record = json.loads(summary.read_text())
            record["trained_on"] = trained_on_spans(f"{grid}/{summary.parent.name}", record["epochs"])
            summary.write_text(json.dumps(record, indent=1))


def check_commit(clone: Path) -> None:
    """Refuse a clone at another commit than the retraining's."""
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head != TRAINING_COMMIT:
        raise SystemExit(f"{clone} holds commit {head[:7] or 'none'}, not the retraining's {TRAINING_COMMIT[:7]}: every "
                         "run trains with one commit. Name a new folder (it is cloned at that commit), or check it out.")


def start(clone: Path) -> None:
    """Run the schedule in ``clone`` until every step has finished or failed, ``SLOTS`` steps at a time."""
    clone_if_missing(clone)  # before anything is written there: a folder that exists is not cloned into
    logs = clone / "in_training_logs"
    logs.mkdir(parents=True, exist_ok=True)
    lock = logs / "schedule.pid"
    if lock.is_file() and Path(f"/proc/{lock.read_text().strip()}").exists():
        raise SystemExit(f"A schedule already runs in {clone} (process {lock.read_text().strip()}); "
                         f"stop it first, or follow it with: status {clone}")
    lock.write_text(str(os.getpid()))
    prepare(clone)
    record_sitting(clone)
    environment = {**os.environ, "PYTHONPATH": str(clone)}
    pending = [step for step in steps(clone) if not step.done()]
    running: list[Step] = []
    try:
        run_schedule(pending, running, clone, logs, environment)
    except BaseException:  # stopped or failed: its steps stop too, so that a restart does not run them twice
        for step in running:
            step.process.terminate()
        raise


def already_running(command: list[str]) -> bool:
    """Whether a process with exactly this command line runs (a step left running by a schedule that died)."""
    wanted = "\0".join(command).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().rstrip(b"\0").endswith(wanted):
                return True
        except OSError:  # the process ended while being read
            continue
    return False


def run_schedule(pending: list[Step], running: list[Step], clone: Path, logs: Path, environment: dict) -> None:
    """Start pending steps as they become ready, ``SLOTS`` at a time, until every step has exited."""
    while pending or running:
        for step in list(running):
            if step.process.poll() is not None:
                step.exit_code = step.process.returncode
                running.remove(step)
                print(f"{time.strftime('%H:%M')} {step.name}: exit {step.exit_code}", flush=True)
        for step in [step for step in pending if step.ready()]:
            if len(running) == SLOTS:
                break
            if already_running(step.command):
                raise SystemExit(f"{step.name} already runs outside this schedule: stop it (it resumes from its last "
                                 "epoch), then start the schedule again.")
            step.before()
            with (logs / f"{step.name}.log").open("a") as log:
                step.process = subprocess.Popen(["nice", "-n", "10", *step.command], cwd=clone, env=environment,
                                                stdout=log, stderr=subprocess.STDOUT)
            pending.remove(step)
            running.append(step)
            print(f"{time.strftime('%H:%M')} {step.name}: started", flush=True)
        if not running and pending:
            print(f"waiting on nothing that runs: {', '.join(step.name for step in pending)} never became ready",
                  flush=True)
            return
        time.sleep(30)


def save(clone: Path) -> None:
    """Copy the clone's finished base learners (or their partial files) and the grids' runs into this folder."""
    BASE_LEARNERS.mkdir(parents=True, exist_ok=True)
    for fold in FOLDS_TO_TRAIN:
        out = base_learner(clone, fold)
        carried = BASE_LEARNERS / out.name
        if finished(out):
            shutil.copy2(out, carried)
            shutil.copy2(out.with_suffix(".json"), carried.with_suffix(".json"))
            partial(carried).unlink(missing_ok=True)
            print(f"base learner of fold {fold}: finished")
        elif partial(out).is_file():
            shutil.copy2(partial(out), partial(carried))
            print(f"base learner of fold {fold}: in flight")
    for grid, outputs in GRIDS.items():
        folder = clone / "papermill_runs" / "outputs" / outputs
        if folder.is_dir():
            copied = carry.save(folder, HERE / grid)
            print(f"{grid}: {len(copied)} runs copied" + "".join(f"\n  {name}" for name in copied))


def status(clone: Path) -> None:
    """Each base learner: finished, its epochs so far, or not started; each grid: its runs finished and started."""
    for fold in FOLDS_TO_TRAIN:
        out = base_learner(clone, fold)
        if finished(out):
            state = "finished"
        elif partial(out).is_file():
            state = f"epoch {torch.load(partial(out), map_location='cpu', weights_only=False)['epoch']} of 384"
        else:
            state = "not started"
        print(f"base learner of fold {fold}: {state}")
    for grid, outputs in GRIDS.items():
        folder = clone / "papermill_runs" / "outputs" / outputs
        runs = sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []
        done = [run.name for run in runs if (run / "metrics.json").is_file()]
        print(f"{grid}: {len(done)} runs finished, {len(runs) - len(done)} started and not finished")


if __name__ == "__main__":
    action, clone_path = sys.argv[1], Path(sys.argv[2]).resolve()
    {"start": start, "save": save, "status": status, "trained-on": write_trained_on}[action](clone_path)
