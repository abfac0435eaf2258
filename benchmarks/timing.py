"""Shared helpers of the benchmark scripts: median timings, batched-against-loop rows, the report's footer."""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from fsslib.provenance import cpu_model, run_provenance


def median_seconds(function: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls (after one warm-up call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batched_against_loop(label: str, batched: Callable[[], object], looped: Callable[[], object], repeats: int,
                         unit: str = "ms") -> list[str]:
    """Two table rows: the batched time, and the per-item loop's time with its ratio to the batched one."""
    scale = {"ms": 1e3, "s": 1.0}[unit]
    seconds_batched, seconds_looped = median_seconds(batched, repeats), median_seconds(looped, repeats)
    return [f"| {label}, batched | {scale * seconds_batched:.2f} {unit} |",
            f"| the same, one at a time | {scale * seconds_looped:.2f} {unit} ({seconds_looped / seconds_batched:.1f}x "
            "the batched time) |"]


def machine(device: str = "cpu") -> str:
    """The hardware a report's timings come from: the GPU's name and memory when ``device`` is CUDA, and the CPU's
    model and core count (a loader's or a CPU step's rate depends on them)."""
    cpu = f"{cpu_model()}, {os.cpu_count()} cores"
    if str(device).startswith("cuda"):
        properties = torch.cuda.get_device_properties(torch.device(device))
        return f"{properties.name} ({properties.total_memory // 2**20} MiB), CPU {cpu}"
    return f"CPU {cpu}"


def default_report(stem: str, device: str, on_cpu: str | None = None) -> Path | None:
    """``benchmarks/results/<stem>_<gpu>.md`` where ``device`` is CUDA and a GPU is present: the GPU's model in lower
    case (``h200``, ``h100``; another GPU's name, its spaces as underscores). On the CPU, ``<stem>_<on_cpu>.md``
    (a script whose CPU rows are results of their own, e.g. ``toy``); None without ``on_cpu``: a GPU script's smoke
    run there prints its report and writes no file unless ``--out`` names one."""
    folder = Path(__file__).parent / "results"
    if not (str(device).startswith("cuda") and torch.cuda.is_available()):
        return None if on_cpu is None else folder / f"{stem}_{on_cpu}.md"
    name = torch.cuda.get_device_name(torch.device(device)).removeprefix("NVIDIA ")
    machine = next((model.lower() for model in ("H200", "H100") if name.startswith(model)),
                   name.lower().replace(" ", "_"))
    return folder / f"{stem}_{machine}.md"


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def add_report_options(parser: argparse.ArgumentParser, out: Path | str, runs: int | None = 1) -> None:
    """``--out`` (the report's file: ``out``, or where ``out`` is words, None and the script picks the file, as
    :func:`default_report` does) and, unless ``runs`` is None (a script that measures once), ``--runs`` (the
    measurement repeated, one after the other, each run a table of its own: a page quotes the runs' span)."""
    parser.add_argument("--out", type=Path, default=out if isinstance(out, Path) else None,
                        help=f"the Markdown report to write (default: {out})")
    if runs is not None:
        parser.add_argument("--runs", type=positive, default=runs,
                            help=f"times the measurement is made, one after the other, each a table (default: {runs})")


def command_line(script: str, argv: list[str] | None) -> str:
    """How the report was made, as a reader types it: ``python benchmarks/<script>`` and its arguments."""
    arguments = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *arguments])


def run_tables(runs: int, header: list[str], measure: Callable[[], Iterator[list[str]]]) -> list[str]:
    """The report's tables: ``measure()`` once per run, each of its rows (a list of cells) printed as it comes;
    with several runs each table is headed by its run's number."""
    lines = []
    for run in range(1, runs + 1):
        if runs > 1:
            lines += [f"Run {run} of {runs}:", ""]
        lines += [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
        print("\n".join(lines[-2:]), flush=True)
        for cells in measure():
            lines.append(f"| {' | '.join(cells)} |")
            print(lines[-1], flush=True)
        lines.append("")
    return lines[:-1]


def write_report(lines: list[str], out: Path | None, device: str = "cpu", echo: bool = True,
                 timings: bool = True) -> None:
    """Append the provenance line (torch, commit, the hardware that ran it and, for ``timings``, the machines'
    noise), write ``out`` and print it (``echo``; else its last line only, for a script that printed its lines as it
    made them). With ``out`` None the report is printed whole and not written."""
    provenance = run_provenance(device)
    noise = " (timings: 25% apart from run to run on this project's machines)" if timings else ""
    lines = [*lines, "", f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; "
                         f"device {device}, {machine(device)}{noise}."]
    if out is None:
        print("\n".join(lines) + "\n(not written: give --out to write the report)")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines if echo else lines[-1:]) + f"\n-> {out}")
