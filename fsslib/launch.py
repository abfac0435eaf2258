"""Where and how the runs of a grid execute: one run per GPU, several GPUs per run, a Slurm cluster.

:mod:`fsslib.runs` hands each run of a grid to a :class:`GridRun`, which executes it one of two ways:

* ``runner: notebook`` (the default): the papermill notebook ``notebooks/90_train_eval.ipynb`` (:func:`run_notebook`);
* ``runner: python``: :func:`train_and_evaluate`, the notebook's steps as a function, which takes every
  :class:`~fsslib.config.Config` field (input size, benchmark, backbone weights, data workers, ...) and trains through
  ``torchrun`` when the grid sets ``gpus_per_run`` above 1. The paper-tier grids (``papermill_runs/paper/``) run so.

Placement (``--executor pool``, the default): ``jobs`` worker processes on this machine. Each worker takes a group of
``gpus_per_run`` of the visible GPUs for its lifetime and sets ``CUDA_VISIBLE_DEVICES`` to it before anything touches
CUDA, so each run sees its own devices (:func:`device_groups`). On a machine without GPUs nothing is set. One job with
one GPU per run executes in a thread of this process.

Several GPUs per run: ``python -m torch.distributed.run --standalone --nproc_per_node G -m fsslib.launch train
CONFIG.json``, i.e. ``torchrun``; :mod:`fsslib.train` runs DDP, one process per GPU (NCCL), or gloo on the CPU.
``batch_size`` is per process, so a step trains G x ``batch_size`` episodes.

A cluster (``--executor slurm``): each run is a Slurm job submitted through submitit (:func:`slurm_executor`: partition,
GPUs and time per run). ``--executor local`` is submitit's local executor, the same jobs as processes of this machine
(the tests use it). A job that is preempted or reaches its time limit gets submitit's signal, stops its training
processes, and is requeued as the same run with fsslib's ``--resume`` (:class:`SubmititRun`): training continues from
the run's ``last.pt``, written at the end of every epoch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsslib.errors import FsslibError
from fsslib.paths import write_text

if TYPE_CHECKING:
    from submitit.helpers import DelayedSubmission

    from fsslib.config import Config

RUN_KEYS = ("test_shots", "test_ways", "test_seed")  # what a run sets beside the Config fields
SET_BY_THE_RUNNER = ("out", "resume", "smoke", "progress")  # Config fields a grid does not set
TRAINING_FREE = ("all-foreground", "maskclip", "clip-dinoiser", "clip-dinoiser-support")  # unless an option trains
TRAINING_OPTIONS = ("adapter",)  # the options that make a training-free method train (CLIP-DINOiser's adapter)
PATH_VARIABLES = ("FSSLIB_WEIGHTS", "FSSLIB_DATA")  # read from fsslib.paths where a grid's value names them

_children: list[subprocess.Popen] = []  # this process's torchrun, stopped when submitit checkpoints the run


# ----------------------------------------------------------------------------------------------- one run as a notebook

def run_name(params: dict[str, Any]) -> str:
    """A run's folder name below the grid's outputs: method, variant, fold, ways, training shots and seed."""
    variant = f"-{params['variant']}" if params.get("variant") else ""
    ways = f"-{params['ways']}way" if params.get("ways", 1) != 1 else ""
    return f"{params['method']}{variant}-fold{params['fold']}{ways}-{params.get('shots', 1)}shot-seed{params.get('seed', 0)}"


def children_import_this_fsslib() -> None:
    """Put the folder this fsslib was imported from first on ``PYTHONPATH``, which kernels and subprocesses
    inherit. Without it a kernel imports whichever fsslib its Python finds (an editable install of another
    checkout, say), not the code of the checkout that runs the grid."""
    root = str(Path(__file__).resolve().parent.parent)
    paths = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    if paths[:1] != [root]:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def run_notebook(notebook: Path, outputs: Path, smoke: bool, threads: int, resume: bool,
                 params: dict[str, Any]) -> dict[str, Any]:
    """Execute ``notebook`` with ``params`` into ``outputs/<run name>/`` (working directory: the
    notebook's folder; the kernel gets ``threads`` torch threads; ``resume``: training continues
    from the run's ``last.pt``); returns the ``metrics.json`` its last cell wrote."""
    import papermill
    from traitlets.config import Config

    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)  # inherited by the kernel
    children_import_this_fsslib()
    run_dir = outputs / run_name(params)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fsslib-kernel-") as sockets:  # local sockets of this kernel alone: no TCP
        papermill.execute_notebook(str(notebook), str(run_dir / notebook.name),
                                   parameters={**params, "smoke": smoke, "out_dir": str(run_dir), "resume": resume},
                                   cwd=str(notebook.parent), progress_bar=False,
                                   config=Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "ipc")}}))
    return json.loads((run_dir / "metrics.json").read_text())


# ----------------------------------------------------------------------------------------------- one run in Python

def expand_path_variables(value: Any) -> Any:
    """``value`` with ``$FSSLIB_WEIGHTS`` and ``$FSSLIB_DATA`` in its strings replaced by :mod:`fsslib.paths`' folders
    (their defaults when the variables are unset), through lists and dictionaries (a grid's ``options``)."""
    from fsslib import paths

    folders = {"FSSLIB_WEIGHTS": paths.weights_root(), "FSSLIB_DATA": paths.data_root()}
    if isinstance(value, str):
        for name in PATH_VARIABLES:
            value = value.replace(f"${{{name}}}", str(folders[name])).replace(f"${name}", str(folders[name]))
        return value
    if isinstance(value, dict):
        return {key: expand_path_variables(item) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_path_variables(item) for item in value]
    return value


def run_config(params: dict[str, Any], run_dir: Path | None = None, smoke: bool = False,
               resume: bool = False) -> tuple[Config, list[tuple[int, int]], int]:
    """The :class:`~fsslib.config.Config` of a python-runner run, its evaluations ((ways, shots) pairs, as the
    notebook's ``test_ways`` x ``test_shots``) and the seed of its test episodes."""
    from fsslib.config import make_config
    from fsslib.notebook import smoke_requested

    settings = {k: v for k, v in expand_path_variables(params).items() if k not in RUN_KEYS}
    cfg = make_config(**settings, smoke=smoke or smoke_requested(), resume=resume, progress=False,
                      out=None if run_dir is None else str(run_dir))
    evaluations = list(product(params.get("test_ways") or [cfg.ways], params.get("test_shots") or [cfg.shots]))
    test_seed = params.get("test_seed")
    return cfg, evaluations, cfg.seed if test_seed is None else test_seed


def trains(cfg: Config) -> bool:
    """Whether a run of ``cfg`` trains before it evaluates, as its model's ``trainable`` says, without building it:
    no checkpoint is given and the method trains (a training-free one only with a :data:`TRAINING_OPTIONS` option
    on). ``tests/test_launch.py`` checks this against every method's built model."""
    if cfg.ckpt is not None:
        return False
    if cfg.method not in TRAINING_FREE:
        return True
    from fsslib.methods import method_options_type

    options = method_options_type(cfg.method).parse(cfg.options)
    return any(getattr(options, name, False) for name in TRAINING_OPTIONS)


def train_and_evaluate(params: dict[str, Any], run_dir: Path, smoke: bool = False, resume: bool = False,
                       gpus_per_run: int = 1, threads: int = 1) -> dict[str, Any]:
    """One run of a ``runner: python`` grid, the steps of ``notebooks/90_train_eval.ipynb`` without its figures: train
    (a trained method without ``ckpt``; ``gpus_per_run`` > 1: through torchrun), then evaluate at every (ways, shots)
    with the all-foreground reference on the same episodes. Writes and returns ``run_dir/metrics.json`` (the
    notebook's record: the rows and the learning curve)."""
    import torch

    from fsslib import evaluate, train

    torch.set_num_threads(threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").unlink(missing_ok=True)
    cfg, evaluations, episode_seed = run_config(params, run_dir, smoke, resume)
    summary = None
    if trains(cfg):
        summary = train.run(cfg) if gpus_per_run == 1 else train_with_torchrun(cfg, gpus_per_run, run_dir)
        cfg = replace(cfg, ckpt=summary["checkpoint"])
    rows = []
    for ways, shots in evaluations:
        evaluated = replace(cfg, ways=ways, shots=shots, seed=episode_seed, out=str(run_dir / f"eval_{ways}way_{shots}shot"))
        metrics = evaluate.run(evaluated)
        reference = evaluate.run(replace(evaluated, method="all-foreground", variant="", ckpt=None,
                                         out=str(Path(evaluated.out) / "all_foreground")))
        rows.append({**metrics, "seed": cfg.seed, "test_seed": metrics["seed"], "reference_miou": reference["miou"],
                     "train": summary and {k: v for k, v in summary.items() if k != "history"}})
    record = {"rows": rows, "history": summary and summary["history"]}
    write_text(run_dir / "metrics.json", json.dumps(record, indent=1))
    return record


def train_with_torchrun(cfg: Config, processes: int, run_dir: Path) -> dict[str, Any]:
    """Train ``cfg`` with DDP in ``processes`` processes (``torchrun --standalone``: this node), one per visible GPU;
    returns the training summary its rank 0 wrote."""
    config_file = run_dir / "train_config.json"
    write_text(config_file, json.dumps(cfg.to_dict(), indent=1))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "fsslib.launch", "train", str(config_file)]
    children_import_this_fsslib()
    with open(run_dir / "torchrun.log", "a") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _children.append(child)
        try:  # polled, not waited on: stop_children, called from a signal handler, must be able to wait for it
            while child.poll() is None:
                time.sleep(0.5)
            code = child.returncode
        finally:
            _children.remove(child)
    if code != 0:
        raise FsslibError(f"Training {cfg.method} fold {cfg.fold} with torchrun ({processes} processes) failed "
                          f"(exit code {code}).", f"read {run_dir / 'torchrun.log'}; the command: {' '.join(command)}")
    return json.loads((run_dir / "train_summary.json").read_text())


def stop_children() -> None:
    """Stop this process's torchrun (it stops its workers) and wait for it, so that a preempted job leaves nothing
    running when it is requeued."""
    for child in list(_children):
        child.terminate()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()


# ----------------------------------------------------------------------------------------------- a run of a grid

@dataclass(frozen=True)
class GridRun:
    """How a grid executes each of its runs (a picklable callable: a pool worker or a submitit job calls it with a
    run's parameters and gets the run's ``metrics.json`` record)."""

    runner: str  # "notebook" or "python"
    outputs: Path  # the grid's outputs folder: a run writes into outputs/<run name>
    notebook: Path | None
    smoke: bool
    threads: int
    resume: bool
    gpus_per_run: int = 1

    def __call__(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.runner == "notebook":
            return run_notebook(self.notebook, self.outputs, self.smoke, self.threads, self.resume, params)
        return train_and_evaluate(params, self.outputs / run_name(params), self.smoke, self.resume, self.gpus_per_run,
                                  self.threads)


class SubmititRun:
    """A run as a submitit job; preempted or timed out, it stops its torchrun and is requeued with ``resume`` (submitit
    requeues a job whose callable has a ``checkpoint`` method)."""

    def __init__(self, run: GridRun, params: dict[str, Any]) -> None:
        self.run, self.params = run, params

    def __call__(self) -> dict[str, Any]:
        return self.run(self.params)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """submitit calls this on its preemption / time-limit signal: the same run again, resuming from ``last.pt``."""
        from submitit.helpers import DelayedSubmission

        stop_children()
        print(f"fsslib: stopped; requeued to resume from {self.run.outputs}/<run>/last.pt", flush=True)
        return DelayedSubmission(SubmititRun(replace(self.run, resume=True), self.params))


# ----------------------------------------------------------------------------------------------- placement

def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` as given (ids or UUIDs), else every device torch
    counts (``[]`` on a machine without CUDA)."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [gpu for gpu in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def device_groups(gpus: list[str], gpus_per_run: int, jobs: int) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` of each of ``jobs`` workers: consecutive groups of ``gpus_per_run`` of ``gpus``, as
    many as fit (fewer jobs then); ``[None] * jobs`` without GPUs (nothing changes on a CPU machine)."""
    if not gpus:
        return [None] * jobs
    if gpus_per_run > len(gpus):
        raise FsslibError(f"A run needs {gpus_per_run} GPUs (gpus_per_run) but this machine shows {len(gpus)}.",
                          f"set gpus_per_run: {len(gpus)} or less (--gpus-per-run), or run on a machine with more.")
    groups = [",".join(gpus[i:i + gpus_per_run]) for i in range(0, len(gpus) - gpus_per_run + 1, gpus_per_run)]
    return groups[:jobs]


DEVICE_HANDOVER_S = 300  # a worker that finds no group in 5 minutes fails (the pool then says so)


def _take_devices(free: Any) -> None:
    """Pool worker initializer: this worker's GPU group, kept for its lifetime (set before CUDA is initialised).
    The groups are put before the pool starts, but a multiprocessing queue hands them over through a feeder thread:
    the get waits for its group (on a busy machine the queue can still look empty when a worker starts)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = free.get(timeout=DEVICE_HANDOVER_S)


class Pool:
    """This machine's runs: ``jobs`` spawned worker processes, each on its own GPU group; one job of one GPU (or none)
    runs in a thread of this process instead. Its handles are futures."""

    def __init__(self, run: GridRun, jobs: int) -> None:
        import multiprocessing

        self.run = run
        groups = device_groups(visible_gpus(), run.gpus_per_run, jobs)
        self.jobs = len(groups)
        if self.jobs == 1 and run.runner == "python" and run.gpus_per_run == 1:
            self.executor = ThreadPoolExecutor(max_workers=1)  # no placement to make: no process to start
        elif groups[0] is None:
            self.executor = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"))
        else:
            context = multiprocessing.get_context("spawn")
            free = context.Queue()
            for group in groups:
                free.put(group)
            self.executor = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=_take_devices,
                                                initargs=(free,))

    def submit(self, params: dict[str, Any]) -> Future:
        return self.executor.submit(self.run, params)

    def shutdown(self) -> None:
        self.executor.shutdown(cancel_futures=True)


class SubmititHandle:
    """A submitted job seen as a future: ``done()``, ``running()``, ``result()``."""

    def __init__(self, job: Any) -> None:
        self.job = job

    def done(self) -> bool:
        return self.job.done()

    def running(self) -> bool:
        return self.job.state == "RUNNING"

    def result(self) -> dict[str, Any]:
        return self.job.result()


@dataclass(frozen=True)
class SlurmSettings:
    """What each Slurm job asks for (a grid's ``slurm:`` entry, overridden on the command line)."""

    partition: str | None = None
    time_min: int = 240  # the time limit per job; a run that needs longer is requeued and resumes
    cpus_per_gpu: int = 8  # data-loading workers and the main process
    signal_delay_s: int = 120  # how long before the limit submitit's signal comes (an epoch's checkpoint is kept)

    @classmethod
    def of(cls, grid: dict[str, Any], **overrides: Any) -> SlurmSettings:
        known = set(cls.__dataclass_fields__)
        given = {**grid.get("slurm", {}), **{k: v for k, v in overrides.items() if v is not None}}
        unknown_names = sorted(set(given) - known)
        if unknown_names:
            raise FsslibError(f"Grid {grid['name']}: slurm settings {unknown_names} are not known.",
                              f"use {', '.join(sorted(known))}.")
        return cls(**given)


def require_submitit() -> None:
    """Raise, with the install command, unless submitit (the optional ``cluster`` dependency) is installed."""
    import importlib.util

    if importlib.util.find_spec("submitit") is None:
        raise FsslibError("--executor slurm and local submit runs through submitit, which is not installed.",
                          "pip install submitit (or pip install -e .[cluster]).")


def slurm_executor(folder: Path, name: str, gpus_per_run: int, settings: SlurmSettings) -> Any:
    """A submitit SlurmExecutor for one run per job: ``gpus_per_run`` GPUs on one node, ``cpus_per_gpu`` CPUs for
    each, the partition and time limit of ``settings``; logs and submitit's pickles in ``folder``."""
    require_submitit()
    import submitit

    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=100)  # a long run is requeued until it ends
    except RuntimeError as error:  # no srun: not a Slurm machine
        raise FsslibError(f"--executor slurm submits to Slurm, which this machine does not have ({error}).",
                          "run the command on the cluster's login node; --executor local runs the same jobs here.") from None
    executor.update_parameters(job_name=f"fsslib-{name}", time=settings.time_min, nodes=1, ntasks_per_node=1,
                               gpus_per_node=gpus_per_run, cpus_per_task=settings.cpus_per_gpu * max(1, gpus_per_run),
                               signal_delay_s=settings.signal_delay_s,
                               **({"partition": settings.partition} if settings.partition else {}))
    return executor


def local_executor(folder: Path, gpus_per_run: int, settings: SlurmSettings) -> Any:
    """submitit's LocalExecutor: the same jobs as processes of this machine (tests; a machine without Slurm)."""
    require_submitit()
    import submitit

    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=100)
    executor.update_parameters(timeout_min=settings.time_min, signal_delay_s=settings.signal_delay_s,
                               gpus_per_node=gpus_per_run if visible_gpus() else 0)
    return executor


class Submitit:
    """Runs as submitit jobs (``--executor slurm`` or ``local``); its handles are :class:`SubmititHandle`."""

    def __init__(self, run: GridRun, executor: Any) -> None:
        self.run, self.executor = run, executor
        self.jobs = 0  # no limit of its own: the cluster schedules

    def submit(self, params: dict[str, Any]) -> SubmititHandle:
        return SubmititHandle(self.executor.submit(SubmititRun(self.run, params)))

    def shutdown(self) -> None:
        """Nothing to stop: submitted jobs run on; ``python -m fsslib.runs GRID --table-only`` collects them later."""



# ----------------------------------------------------------------------------------------------- torchrun's entry

def main(argv: list[str] | None = None) -> None:
    """``python -m fsslib.launch train CONFIG.json``: :func:`fsslib.train.run` on a Config written by
    :func:`train_with_torchrun` (what torchrun starts in every process)."""
    from fsslib.config import Config
    from fsslib.train import run

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "train":
        raise SystemExit("usage: python -m fsslib.launch train CONFIG.json (started by torchrun; see fsslib.launch)")
    run(Config(**json.loads(Path(argv[1]).read_text())))


if __name__ == "__main__":
    main()
