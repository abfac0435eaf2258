"""Where a grid's runs execute (fsslib.launch): one run per GPU group, several GPUs per run through torchrun, Slurm
jobs through submitit that resume from their checkpoint when preempted; on the CPU, with submitit's local executor."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from fsslib import launch, runs
from fsslib.config import make_config
from fsslib.errors import FsslibError
from fsslib.methods import METHODS, build_method

pytestmark = pytest.mark.budget(10)  # the preempted job has its own


@pytest.mark.parametrize(("method", "variant"), [*((m, "") for m in METHODS), ("clip-dinoiser-support", "trained_adapter")])
def test_whether_a_run_trains_is_what_its_model_says(method, variant, toy_root):
    cfg = make_config(method, "toy", variant=variant)
    assert launch.trains(cfg) == build_method(cfg).trainable
    assert not launch.trains(make_config(method, "toy", variant=variant, ckpt="zoo"))


def test_gpu_groups_give_each_job_its_own_devices():
    assert launch.device_groups(["0", "1", "2", "3"], 1, 8) == ["0", "1", "2", "3"]  # fewer GPUs than jobs: fewer jobs
    assert launch.device_groups(["0", "1", "2", "3", "4"], 2, 8) == ["0,1", "2,3"]
    assert launch.device_groups(["GPU-a", "GPU-b"], 1, 1) == ["GPU-a"]
    assert launch.device_groups([], 2, 3) == [None, None, None]  # a CPU machine: nothing set
    with pytest.raises(FsslibError, match="needs 4 GPUs"):
        launch.device_groups(["0", "1"], 4, 1)


class Probe:
    """A stand-in for a grid's run (picklable, so a spawned worker calls it): the devices it was given. Each call
    waits at a barrier of two, so two calls run in two workers however late one of them starts."""

    runner, gpus_per_run = "python", 2

    def __init__(self, barrier) -> None:
        self.barrier = barrier

    def __call__(self, params: dict) -> str:
        self.barrier.wait(timeout=300)
        return os.environ.get("CUDA_VISIBLE_DEVICES", "unset")


def test_the_pool_sets_each_workers_cuda_visible_devices(monkeypatch):
    import multiprocessing

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # four GPUs, as a machine shows them
    with multiprocessing.Manager() as manager:
        pool = launch.Pool(Probe(manager.Barrier(2)), jobs=4)
        try:
            assert pool.jobs == 2
            seen = {future.result() for future in [pool.submit({}) for _ in range(2)]}
        finally:
            pool.shutdown()
    assert seen == {"0,1", "2,3"}


def test_a_worker_waits_for_its_gpu_group_to_arrive(monkeypatch):
    """A multiprocessing queue delivers what was put through a feeder thread: on a busy machine a worker can start
    before its group arrives. The initializer waits for it instead of failing the pool."""
    import queue

    free = queue.Queue()
    threading.Timer(0.3, free.put, args=("2,3",)).start()  # the group arrives after the worker starts
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # recorded, so that undo removes what _take_devices sets
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    launch._take_devices(free)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_slurm_jobs_ask_for_the_partition_gpus_and_time_of_the_grid(tmp_path, monkeypatch):
    import shutil

    import submitit

    if shutil.which("srun") is None:  # a machine without Slurm is told so
        with pytest.raises(FsslibError, match="--executor local runs the same jobs here"):
            launch.slurm_executor(tmp_path, "g", 1, launch.SlurmSettings())
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as on a login node
    grid = {"name": "g", "slurm": {"partition": "gpu", "time_min": 90}}
    settings = launch.SlurmSettings.of(grid, time_min=30)  # the command line's over the grid's
    executor = launch.slurm_executor(tmp_path, "g", 2, settings)
    script = executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --gpus-per-node=2", "#SBATCH --cpus-per-task=16",
                 "#SBATCH --signal=USR2@120", "#SBATCH --job-name=fsslib-g"):
        assert line in script, line
    with pytest.raises(FsslibError, match="slurm settings \\['gpus'\\] are not known"):
        launch.SlurmSettings.of({"name": "g", "slurm": {"gpus": 2}})


def _task_pid(folder: Path) -> int | None:
    """The pid of the running task of submitit's local job in ``folder`` (a child of its controller, whose pid is the
    job id), or None before it has started."""
    for submitted in folder.glob("*_submitted.pkl"):
        controller = submitted.name.split("_")[0]
        children = Path(f"/proc/{controller}/task/{controller}/children")
        pids = children.read_text().split() if children.is_file() else []
        if pids:
            return int(pids[0])
    return None


@pytest.mark.slow
@pytest.mark.budget(60)  # 30-47 s on two busy cores: six processes start (two jobs, each a task and two DDP workers)
def test_a_preempted_job_of_two_processes_resumes_from_its_checkpoint(tmp_path, monkeypatch, toy_root):
    """A run of two DDP processes (torchrun, gloo on the CPU) as a job of submitit's local executor: preempted after
    its first epoch (submitit's signal), it stops torchrun and is requeued; the requeued job resumes from last.pt with
    --resume, trains the remaining epochs and the grid writes its table. An epoch's 17 episodes do not split evenly
    over the 2 ranks (9 and 8, so 3 and 2 batches of 4): both must still run the same number of steps, or the
    processes wait on each other forever."""
    monkeypatch.delenv("FSSLIB_SMOKE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid = tmp_path / "ddp.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "ddp", "runner": "python", "gpus_per_run": 2, "grid": {"fold": [0]},
        "fixed": {"method": "prototype", "preset": "toy", "seed": 0, "epochs": 8, "episodes_per_epoch": 17,
                  "batch_size": 4, "val_episodes": 8, "episodes": 8}}))
    run_dir = tmp_path / "out" / "prototype-fold0-1shot-seed0"
    preempted = []
    grid_done = threading.Event()

    def preempt_after_the_first_epoch() -> None:
        while not grid_done.is_set():  # no deadline of its own: a busy machine only makes the first epoch later
            log = run_dir / "log.jsonl"
            pid = _task_pid(tmp_path / "out" / "submitit")
            if pid and log.is_file() and log.read_text().strip():
                os.kill(pid, signal.SIGUSR2)  # what Slurm sends before preempting or at the time limit
                preempted.append(log.read_text().splitlines())
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=preempt_after_the_first_epoch)
    watcher.start()
    try:
        runs.main([str(grid), "--executor", "local", "--outputs", str(tmp_path / "out"), "--results", str(tmp_path / "res")])
    finally:
        grid_done.set()
        watcher.join()
    assert preempted and len(preempted[0]) < 8, "the job was not preempted during training"
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert [record["epoch"] for record in summary["history"]] == list(range(1, 9)) and summary["world_size"] == 2
    first_sitting = [json.loads(line) for line in preempted[0]]
    assert summary["history"][:len(first_sitting)] == first_sitting  # kept from last.pt, not trained again
    logs = "".join(path.read_text() for path in (tmp_path / "out" / "submitit").glob("*_0_log.out"))
    assert "fsslib: stopped; requeued to resume" in logs and "Requeued job" in logs
    assert (tmp_path / "res" / "ddp.csv").is_file()


def test_a_notebook_run_s_kernel_imports_the_fsslib_that_runs_the_grid(tmp_path, monkeypatch):
    """The kernel inherits PYTHONPATH with this fsslib's folder first: a grid run from one checkout while another
    checkout is installed (editable) trains the running checkout's code, not the installed one's."""
    import papermill

    root = str(Path(launch.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", root]))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # run_notebook sets them for its kernel: undone after the test
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    seen = []

    def execute(source, target, parameters, **kwargs):  # stands in for the kernel: records what it would inherit
        seen.append(os.environ["PYTHONPATH"].split(os.pathsep))
        Path(parameters["out_dir"], "metrics.json").write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    for _ in range(2):  # a worker runs several notebooks: the folder is put first once
        launch.run_notebook(Path("notebooks/90_train_eval.ipynb"), tmp_path, True, 1, False,
                            {"method": "prototype", "fold": 0, "shots": 1, "seed": 0})
    assert seen == [[root, "/elsewhere", root]] * 2
