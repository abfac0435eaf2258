"""Foundation benchmarks (toy tier): evaluation throughput of the baseline and the main job's wall time.

    python benchmarks/foundation.py              # throughput only (about a minute)
    python benchmarks/foundation.py --main-job   # also times `python -m fsslib.runs papermill_runs/quickstart.yaml`

Prints a Markdown table; numbers depend on the machine (the README quotes a 2-core CPU run).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fsslib import evaluate, train
from fsslib.config import make_config

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--main-job", action="store_true", help="also time the README's main job")
    args = parser.parse_args()
    rows = [("machine", f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                        f"{torch.get_num_threads()} threads")]
    with tempfile.TemporaryDirectory() as workdir:
        for shots in (1, 5):
            rate = evaluation_throughput(shots, args.episodes, Path(workdir))
            rows.append((f"toy tier: prototype evaluation, {shots}-shot", f"{rate:.0f} episodes/s"))
    if args.main_job:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fsslib.runs", "papermill_runs/quickstart.yaml"], cwd=REPO, check=True)
        rows.append(("toy tier: main job (quickstart grid: 1 model trained, 9 methods evaluated)", f"{(time.perf_counter() - start) / 60:.1f} min"))
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
