"""What a new Python process pays for its imports (toy tier, this machine): the CPU seconds of one process that
imports a module and exits, for torch and the fsslib modules that the suite's processes and kernels import.

    python benchmarks/import_costs.py               # -> benchmarks/results/import_costs_toy.md
    python benchmarks/import_costs.py --repeats 9

Every test that starts a process (a kernel, a command-line run, a DDP worker) pays these imports again, so they set
a floor under the test suite's time (benchmarks/README.md, "The test suite's time"). Each statement runs in a fresh
interpreter ``--repeats`` times, the statements alternated so that a change of the machine's speed touches all
alike; the CPU time (user + system) of each process is read from ``resource.getrusage``. The table gives each
statement's median and range, and its median beyond the bare interpreter's.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from suite_timeline import cpu_seconds
from timing import write_report

from fsslib.provenance import cpu_model

REPO = Path(__file__).resolve().parents[1]
STATEMENTS = {  # label -> the statement a fresh interpreter runs
    "the interpreter alone": "pass",
    "torch": "import torch",
    "fsslib's toy training (`fsslib.train`)": "import fsslib.train",
    "fsslib's notebook helpers (`fsslib.notebook`, matplotlib)": "import fsslib.notebook",
    "fsslib's CLIP (`fsslib.clip`: open_clip, torchvision)": "import fsslib.clip",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="processes per statement, alternated")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "import_costs_toy.md")
    args = parser.parse_args(argv)
    for statement in STATEMENTS.values():  # a first, untimed round: files into the page cache
        cpu_seconds(statement)
    times: dict[str, list[float]] = {label: [] for label in STATEMENTS}
    for _ in range(args.repeats):
        for label, statement in STATEMENTS.items():
            times[label].append(cpu_seconds(statement))
    bare = statistics.median(times["the interpreter alone"])
    lines = [f"# What a new process pays for its imports ({cpu_model()})", "",
             f"Made by `python benchmarks/import_costs.py --repeats {args.repeats}`: CPU seconds (user + system) "
             f"of one fresh interpreter, {args.repeats} processes per statement, alternated.", "",
             "| imports | CPU s, median | range | beyond the interpreter alone |", "|---|---|---|---|"]
    lines += [f"| {label} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} | "
              f"{statistics.median(values) - bare:.2f} |" for label, values in times.items()]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
