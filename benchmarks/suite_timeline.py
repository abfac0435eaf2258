"""Where the test suite's wall time goes on this machine: are the cores busy, and do the workers finish together?

    python benchmarks/suite_timeline.py          # `bash .ci/run` -> benchmarks/results/suite_timeline.md
    python benchmarks/suite_timeline.py --command "make test-fast" --out /tmp/fast.md
    python benchmarks/suite_timeline.py --log "fresh toy world, nothing else of ours running"   # + a row of the log
    python benchmarks/suite_timeline.py --busy 2 --log "two CPU-bound processes beside it"     # under load

The command runs with ``FSSLIB_TEST_TIMELINE`` set, so the suite's ``conftest.py`` writes each test's start and end on
the worker that ran it (a pytest that a test starts writes nothing); meanwhile this script reads the machine's CPU
use once a second (``/proc/stat``, Linux; time stolen by the hypervisor counts as idle).
The report gives the wall time, how many cores were busy on average while tests ran (all processes: a busy machine
shows here too, so run it quiet), the seconds with at least half a core idle, each worker's share, the longest
units (a notebook's cells summed) and the units that used the most CPU. The tests' CPU seconds over the cores is the
least wall time they could take: if the cores are busy throughout and the workers end together, only less CPU work
makes the suite faster, and the CPU table says where it goes (a wall time also counts the waits for a core that
other tests kept busy); idle seconds point at the tests that wait.

``--log CONDITIONS`` appends the run to the suite's log of measured runs, ``benchmarks/results/suite_runs.md`` (quiet
runs) or, with ``--busy N`` (N CPU-bound processes started beside the command and ended after it),
``benchmarks/results/suite_under_load.md``: the host's kind, the commit, the conditions, pytest's summary, the
command's wall time and its user CPU time (its processes only, not the busy ones). A quiet row also gives the host's
speed at that hour: the median CPU seconds of a fresh interpreter importing torch, measured just before the command
(the same code's time moves with it; the virtual machines' other tenants are not ours to stop).
``benchmarks/README.md`` renders its figures from those logs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from fsslib.provenance import cpu_kind, cpu_model

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "suite_timeline.md"
QUIET_LOG = REPO / "benchmarks" / "results" / "suite_runs.md"
LOAD_LOG = REPO / "benchmarks" / "results" / "suite_under_load.md"
BUSY = "while True: pass"  # one CPU-bound process
OVER_BUDGET_LINE = re.compile(r"\s*[\d.]+ s  \(budget [\d.]+ s\)  ")  # conftest.py's list of slow tests
SPEED_STATEMENT = "import torch"  # the host's speed: what every test process and kernel pays first


def cpu_counters() -> tuple[int, int]:
    """(all jiffies, jiffies not spent on this machine's work) so far, from the first line of ``/proc/stat``: user,
    nice, system, idle, iowait, irq, softirq and steal (guest time is inside user already); idle, iowait and steal
    (time the hypervisor gave to other virtual machines) are not this machine's work."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields), fields[3] + fields[4] + (fields[7] if len(fields) > 7 else 0)


def sample_cpu(samples: list[tuple[float, float]], stop: threading.Event, cores: int) -> None:
    """Append (time, cores busy over the last second) until ``stop`` is set."""
    total, idle = cpu_counters()
    while not stop.wait(1.0):
        now_total, now_idle = cpu_counters()
        samples.append((time.time(), cores * (1 - (now_idle - idle) / max(1, now_total - total))))
        total, idle = now_total, now_idle


def unit(test: str) -> str:
    """A notebook's cells count as one unit (one kernel, one worker); any other test is its own."""
    return test.split("::")[0] if ".ipynb::" in test else test


def summarize(tests: list[dict], samples: list[tuple[float, float]], cores: int) -> list[str]:
    """The report's lines from the tests' records (``test``, ``start``, ``end``, ``worker``) and the CPU samples."""
    first, last = min(t["start"] for t in tests), max(t["end"] for t in tests)
    during = [busy for moment, busy in samples if first <= moment <= last]
    idle_seconds = [moment for moment, busy in samples if first <= moment <= last and busy < cores - 0.5]
    waiting = Counter(unit(t["test"]) for moment in idle_seconds for t in tests if t["start"] <= moment <= t["end"])
    workers: dict[str, list[dict]] = defaultdict(list)
    for test in tests:
        workers[test["worker"]].append(test)
    lines = [f"| tests run from first start to last end | {last - first:.0f} s |",
             f"| cores busy while tests ran (mean, of {cores}) | {sum(during) / max(1, len(during)):.2f} |" if during
             else "| cores busy while tests ran | not measured (no /proc/stat) |",
             f"| seconds with at least half a core idle while tests ran | {len(idle_seconds)} |"]
    lines += [f"| worker {name}: tests, seconds in tests, last end after the first start | {len(runs)}, "
              f"{sum(t['end'] - t['start'] for t in runs):.0f} s, {max(t['end'] for t in runs) - first:.0f} s |"
              for name, runs in sorted(workers.items())]
    ends = [max(t["end"] for t in runs) for runs in workers.values()]
    lines += [f"| seconds in tests, all workers | {sum(t['end'] - t['start'] for t in tests):.0f} |",
              f"| the workers' last ends, apart | {max(ends) - min(ends):.0f} s |"]
    measured_cpu = all("cpu" in t for t in tests)
    if measured_cpu:
        cpu = sum(t["cpu"] for t in tests)
        lines += [f"| CPU seconds in tests, all workers (with the processes they started) | {cpu:.0f} |",
                  f"| that CPU over the {cores} cores: the least time the tests could take here | "
                  f"{cpu / cores:.0f} s |"]
    lines += ["", "The longest units (a notebook's cells summed):", "", "| unit | seconds |", "|---|---|"]
    durations: Counter = Counter()
    for test in tests:
        durations[unit(test["test"])] += test["end"] - test["start"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in durations.most_common(15)]
    if measured_cpu:  # what a unit costs, whatever else ran beside it: where a cut saves time
        used: Counter = Counter()
        for test in tests:
            used[unit(test["test"])] += test["cpu"]
        lines += ["", "The units with the most CPU seconds (their own processes and those they started; a notebook's "
                  "kernel counts when it ends):", "", "| unit | CPU seconds |", "|---|---|"]
        lines += [f"| {name} | {seconds:.1f} |" for name, seconds in used.most_common(15)]
    files: Counter = Counter()
    for test in tests:
        files[test["test"].split("::")[0]] += test["end"] - test["start"]
    lines += ["", f"The files with the most test-seconds (of {sum(files.values()):.0f}):", "", "| file | seconds |",
              "|---|---|"]
    lines += [f"| {name} | {seconds:.1f} |" for name, seconds in files.most_common(15)]
    notebooks = [t for t in tests if ".ipynb::" in t["test"]]
    if notebooks:
        first_cells = [t for t in notebooks if t["test"].endswith("::Cell 0")]
        lines += ["", "| notebooks (nbval) | value |", "|---|---|",
                  f"| notebooks | {len({t['test'].split('::')[0] for t in notebooks})} |",
                  f"| seconds in their cells | {sum(t['end'] - t['start'] for t in notebooks):.0f} |",
                  f"| seconds in their first cells (the kernel's imports) | "
                  f"{sum(t['end'] - t['start'] for t in first_cells):.0f} |"]
    if waiting:
        lines += ["", "Units running during the seconds with half a core idle (seconds):", "",
                  ", ".join(f"{name} ({count})" for name, count in waiting.most_common(10))]
    return lines


def pytest_summary(line: str) -> tuple[str, float] | None:
    """pytest's closing counts ("1322 passed, 2 skipped") and its own seconds, from its summary line, else None."""
    counts = r"(?:\d+ (?:passed|failed|skipped|errors?|xfailed|xpassed|warnings?)(?:, )?)+"
    found = re.search(rf"({counts}) in ([\d.]+)s", line)
    if not found:
        return None
    return re.sub(r",? ?\d+ warnings?", "", found.group(1)).strip(", "), float(found.group(2))


def cpu_seconds(statement: str) -> float:
    """User + system CPU seconds of a fresh interpreter that runs ``statement`` (in the repository's root)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", statement], cwd=REPO, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def host_speed(statement: str = SPEED_STATEMENT, repeats: int = 5) -> float:
    """The median CPU seconds (user + system) of ``repeats`` fresh interpreters running ``statement``."""
    seconds = sorted(cpu_seconds(statement) for _ in range(repeats))
    return seconds[len(seconds) // 2]


def log_row(host: str, commit: str, conditions: str, summary: str, wall: float, user_cpu: float, busy: int,
            over_budget: int, speed: float | None = None) -> str:
    """One row of the suite's log (:data:`QUIET_LOG`, or :data:`LOAD_LOG` when ``busy`` processes ran beside);
    ``wall`` is pytest's own time, ``speed`` the host's (:func:`host_speed`, quiet rows)."""
    if busy:
        beside = f"{busy} CPU-bound process{'es' if busy > 1 else ''}, {conditions}"
        return f"| {host} | {commit} | {beside} | {summary} | {wall / 60:.1f} | — | {over_budget} |"
    return (f"| {host} | {commit} | {conditions} | {summary} | {wall / 60:.1f} | {wall:.0f} | — | "
            f"{user_cpu / 60:.1f} | the command | {'—' if speed is None else f'{speed:.2f}'} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", default="bash .ci/run", help="the test command, run in the repository's root")
    parser.add_argument("--out", type=Path, default=OUT, help="the Markdown report to write")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="run N CPU-bound processes beside the command (ended after it): the suite under load")
    parser.add_argument("--log", default=None, metavar="CONDITIONS",
                        help="append this run, with these words on its conditions, to benchmarks/results/"
                             "suite_runs.md (suite_under_load.md with --busy)")
    parser.add_argument("--records", type=Path, default=None,
                        help="also write every test's record (test, start, end, cpu, worker) to this JSON-lines file")
    args = parser.parse_args(argv)
    speed = host_speed() if args.log is not None and not args.busy else None  # before anything else of ours runs
    cores = os.cpu_count() or 1
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_cpu, args=(samples, stop, cores), daemon=True)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            started, cpu_before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
            if Path("/proc/stat").is_file():
                sampler.start()
            command = subprocess.Popen(args.command, shell=True, cwd=REPO, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True,
                                       env={**os.environ, "FSSLIB_TEST_TIMELINE": folder})
            summary, over_budget = None, 0
            for line in command.stdout:  # shown as it comes; pytest's summary line and budget list are read
                print(line, end="", flush=True)
                summary = pytest_summary(line) or summary
                over_budget += bool(OVER_BUDGET_LINE.match(line))
            returncode = command.wait()
            wall = time.time() - started
            user_cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu_before  # before the busy ones end
            stop.set()
            tests = [{**json.loads(line), "worker": log.stem} for log in Path(folder).glob("*.jsonl")
                     for line in log.read_text().splitlines()]
    finally:
        for process in busy:
            process.kill()
            process.wait()
    if args.records is not None:
        args.records.write_text("".join(json.dumps(test) + "\n" for test in tests))
    if not tests:
        raise SystemExit(f"`{args.command}` ran no test that recorded itself (exit status {returncode}).")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    first = min(t["start"] for t in tests)
    lines = [f"# Where the test suite's time goes (commit {commit.strip()}, {cpu_model()}, {cores} cores)", "",
             f"Made by `python benchmarks/suite_timeline.py --command \"{args.command}\"`; exit status "
             f"{returncode}.", "", "| measurement | value |", "|---|---|",
             f"| host | {cpu_kind(cpu_model())} |",
             f"| wall time of the command | {wall:.0f} s |",
             f"| before the first test (installation check, collection, workers' start) | {first - started:.0f} s |"]
    lines += summarize(tests, samples, cores)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.log is not None:
        log = LOAD_LOG if args.busy else QUIET_LOG
        counts, seconds = summary or (f"exit status {returncode}", wall)  # pytest's own time, else the command's
        row = log_row(cpu_kind(cpu_model()), commit.strip(), args.log, counts, seconds, user_cpu, args.busy,
                      over_budget, speed)
        with log.open("a") as handle:
            handle.write(row + "\n")
        print(f"logged in {log.relative_to(REPO)}: {row}")
    if returncode:
        raise SystemExit(returncode)  # a failing suite fails this command too (its report and log row are kept)


if __name__ == "__main__":
    main()
