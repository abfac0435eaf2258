"""Foundation benchmarks (toy tier): evaluation throughput of the baseline and the main job's wall time.

    python benchmarks/foundation.py              # throughput only (about a minute) -> results/foundation_toy.md
    python benchmarks/foundation.py --main-job   # also times `python -m fsslib.runs papermill_runs/quickstart.yaml`

The main job runs as on a new machine: the toy world is generated into an empty ``FSSLIB_DATA`` folder, and its
outputs and tables go to temporary folders (the committed results stay as they are). Its wall time and the user CPU
time of its processes are reported. Numbers depend on the machine: the report names it (benchmarks/README.md reads a
2-core CPU run).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fsslib import evaluate, train
from fsslib.config import make_config
from timing import command_line, write_report  # the benchmarks' shared report (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parent.parent


def evaluation_throughput(shots: int, episodes: int, workdir: Path) -> float:
    """Episodes/s of the prototype baseline over ``episodes`` toy test episodes (data loading included)."""
    checkpoint = workdir / "proto" / "best.pt"
    if not checkpoint.is_file():
        train.run(make_config(method="prototype", smoke=True, progress=False, out=str(checkpoint.parent)))
    cfg = make_config(method="prototype", shots=shots, episodes=episodes, ckpt=str(checkpoint),
                      out=str(workdir / f"eval{shots}"), progress=False)
    evaluate.run(make_config(method="prototype", shots=shots, episodes=50, ckpt=str(checkpoint),
                             out=str(workdir / "warmup"), progress=False))
    return evaluate.run(cfg)["episodes_per_s"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--main-job", action="store_true", help="also time the README's main job")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "foundation_toy.md",
                        help="the Markdown report to write")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for shots in (1, 5):
            rate = evaluation_throughput(shots, args.episodes, Path(workdir))
            rows.append((f"toy tier: prototype evaluation, {shots}-shot", f"{rate:.0f} episodes/s"))
    if args.main_job:
        wall, user = main_job_minutes()
        rows += [("toy tier: main job, wall time (`make quickstart`'s grid, fresh toy world)", f"{wall:.1f} min"),
                 ("toy tier: main job, user CPU time of its processes", f"{user:.1f} min")]
    lines = ["# Foundation benchmarks (toy tier)", "",
             f"Made by `{command_line(__file__, argv)}`, {torch.get_num_threads()} torch threads in this process"
             + (" (the main job: 2 processes of 1 thread)." if args.main_job else "."), "",
             "| measurement | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    write_report(lines, args.out)


def main_job_minutes() -> tuple[float, float]:
    """(wall, user CPU) minutes of the main job, `python -m fsslib.runs papermill_runs/quickstart.yaml`, in empty data,
    outputs and results folders."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "FSSLIB_DATA": f"{folder}/data", "FSSLIB_OUTPUTS": f"{folder}/outputs"}
        user_before, start = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime, time.perf_counter()
        subprocess.run([sys.executable, "-m", "fsslib.runs", "papermill_runs/quickstart.yaml", "--outputs",
                        f"{folder}/outputs", "--results", f"{folder}/results"], cwd=REPO, env=env, check=True)
        wall = time.perf_counter() - start
        return wall / 60, (resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - user_before) / 60


if __name__ == "__main__":
    main()
