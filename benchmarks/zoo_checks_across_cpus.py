"""Do the shipped zoo models repeat their recorded checks on this machine's kind of CPU?

    python benchmarks/zoo_checks_across_cpus.py     # -> benchmarks/results/zoo_checks_<this CPU's kind>.md

A zoo model's check (its mIoU on the first ``fsslib.zoo.CHECK_EPISODES`` test episodes at one torch thread) was
measured on the machine that exported it. Another kind of CPU may run other kernels, which sum in another order, so
a pixel on a decision boundary may flip and the check move a little. This measures every shipped model's check
here and sets it beside the recorded one: the tests repeat a check exactly on the kind of CPU that recorded it and
to within ``fsslib.zoo.CHECK_TOLERANCE_OTHER_CPU`` elsewhere, and this table is that tolerance's evidence.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from timing import write_report
from tqdm.auto import tqdm

from fsslib import zoo
from fsslib.models.files import read_weights
from fsslib.provenance import cpu_line, cpu_model
from fsslib.runs import measure_check

REPO = Path(__file__).resolve().parents[1]


def cpu_kind(model: str) -> str:
    """A file-name-safe name of the CPU's product line, e.g. ``amd_epyc`` or ``intel_xeon``."""
    return re.sub(r"[^a-z0-9]+", "_", cpu_line(model).lower()).strip("_")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="the report (default: benchmarks/results/zoo_checks_<this CPU's kind>.md)")
    args = parser.parse_args(argv)
    here = cpu_model()
    out = args.out or REPO / "benchmarks" / "results" / f"zoo_checks_{cpu_kind(here)}.md"
    rows, differences = [], []
    for name in tqdm(zoo.zoo_entries(zoo.SHIPPED_ZOO), desc="zoo checks"):
        path = zoo.SHIPPED_ZOO / f"{name}.pt"
        recorded = json.loads(path.with_suffix(".json").read_text())["check"]
        measured = measure_check(path, read_weights(path, "A zoo model", "re-make the zoo")["config"])
        difference = measured["miou"] - recorded["miou"]
        differences.append(difference)
        rows.append(f"| {name} | {recorded.get('processor', 'not recorded')} | {recorded['miou']:.4f} | "
                    f"{measured['miou']:.4f} | {difference:+.4f} |")
    exact = sum(abs(d) <= 1e-6 for d in differences)
    largest = max(differences, key=abs)
    lines = [f"# The zoo's checks measured again on {here}", "",
             "Made by `python benchmarks/zoo_checks_across_cpus.py`: each shipped model's check (mIoU on its first "
             f"{zoo.CHECK_EPISODES} test episodes, {zoo.CHECK_THREADS} torch thread) measured here, beside the "
             "one its `.json` recorded where it was exported.", "",
             f"**{exact} of {len(differences)} checks repeat to 1e-6; the largest difference is {largest:+.4f} "
             f"mIoU points** (the tests allow {zoo.CHECK_TOLERANCE_OTHER_CPU} on another kind of CPU).", "",
             "| model | recorded on | recorded mIoU | here | difference |", "|---|---|---|---|---|", *rows]
    write_report(lines, out, timings=False)


if __name__ == "__main__":
    main()
