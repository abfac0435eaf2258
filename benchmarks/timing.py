"""Shared helpers of the benchmark scripts: median timings, batched-against-loop rows, the report's footer."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from fsslib.provenance import run_provenance


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


def write_report(lines: list[str], out: Path) -> None:
    """Append the provenance line (torch, commit, the CPU that ran it, the machines' noise), write ``out`` and print
    it."""
    provenance = run_provenance("cpu")
    lines = [*lines, "", f"Produced with torch {provenance['torch']}; commit {provenance['commit']}; device cpu, "
                         f"{provenance['processor']} (this project's 2-core machines; 25% apart from run to run)."]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n-> {out}")
