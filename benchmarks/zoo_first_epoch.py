"""Does this machine train each zoo model as its record says, and is a difference the code's or the machine's?

    python benchmarks/zoo_first_epoch.py   # fold 0, 1-shot of each family -> benchmarks/results/zoo_first_epoch_toy.md
    python benchmarks/zoo_first_epoch.py --models pfenet-fold0-1shot qgnet-fold0-1shot --no-at-commits
    python benchmarks/zoo_first_epoch.py --cause COMMIT   # + the families the code moved, either side of COMMIT

A zoo model's ``.json`` names the grid and run that made it, the commit of its code, and keeps its validation curve.
For each model asked for, this script reads that run's training parameters from the grid file (those of
``notebooks/90_train_eval.ipynb``) and calls ``fsslib.train.run`` with them on the CPU, as that notebook does, at
the grid's torch threads into a fresh output folder. It stops the run at the first epoch whose recorded validation
mIoU is above 0 (a first epoch at 0.0, all background, as PFENet's often is, tells nothing) and compares the
validation mIoU of those epochs with the record's, as the floats are written (bit for bit). It then trains the same
epochs with the code of the recorded commit (a temporary worktree, reading today's toy world) and compares them with
today's. Where today's code moved some, ``--cause COMMIT`` tests one suspected commit: it trains them at its parent and
at it, which moved them if the parent gives the recorded commit's first epochs and the commit gives today's. A
last table trains one model's first epochs with the math libraries' instruction sets capped, as another CPU would
cap them.

Training is deterministic at a fixed thread count on one kind of CPU (``docs/protocol.md``). Equal first epochs say
the code, the data and the frozen files the run reads are those the model was trained with. When today's differ
from the record but equal the recorded commit's, the code did not move them; the machine, the software beneath
fsslib (the record names its torch build) or the generated toy world did. One epoch does not prove the rest of the
run equal: code that acts only later (the end of the schedule) is not exercised.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

from fsslib.launch import run_name
from fsslib.paths import data_root
from fsslib.pretrain.saving import file_sha256
from fsslib.provenance import first_epochs_processor
from fsslib.runs import expand
from fsslib.zoo import SHIPPED_ZOO as ZOO_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import command_line, write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "zoo_first_epoch_toy.md"
# The notebook's parameters that configure training (the rest choose what is evaluated after it)
TRAINING_PARAMETERS = ("method", "variant", "options", "preset", "fold", "shots", "ways", "seed", "epochs", "lr",
                       "episodes", "smoke")
TRAIN_ONE_RUN = """
import json, sys, torch
from fsslib import train
from fsslib.config import make_config
params, threads, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
train.run(make_config(**params, device="cpu", out=out))
"""


# The instruction sets the math libraries may use, capped as another CPU would cap them: MKL (matrix products),
# oneDNN (convolutions) and torch's own vectorised kernels each choose a kernel by the CPU, and each kernel sums
# in its own order. Each entry: a label, and the environment variables that set it.
KERNEL_SETTINGS = [
    ("this CPU's own", {}),
    ("MKL at AVX2", {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    ("oneDNN at AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("torch's kernels at AVX2", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("torch's kernels unvectorised", {"ATEN_CPU_CAPABILITY": "default"}),
    ("all three at AVX2",
     {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}),
]


def family_models() -> list[str]:
    """Fold 0, 1-shot of every family in the zoo (one model per method and variant)."""
    return sorted(path.stem for path in ZOO_DIR.glob("*-fold0-1shot.json"))


def run_parameters(record: dict) -> tuple[dict, int, str]:
    """The training parameters, torch threads and grid name of the run that made a zoo model (from its record)."""
    command = record["command"]  # "python -m fsslib.runs papermill_runs/X.yaml  (run NAME)"
    grid_file, run = command.split()[3], command.split("(run ")[1].rstrip(")")
    grid = yaml.safe_load((REPO / grid_file).read_text())
    for params in expand(grid):
        if run_name(params) == run:
            return {k: params[k] for k in TRAINING_PARAMETERS if k in params}, int(grid.get("threads", 1)), grid["name"]
    raise SystemExit(f"{grid_file} has no run {run}: the zoo record's command names a run the grid no longer holds.")


def recorded_first_epochs(record: dict) -> list[float]:
    """A zoo record's validation mIoU up to its first epoch above 0 (all of them if none is)."""
    curve = record["validation_curve"]
    recorded = [miou for _, miou in (json.loads(curve) if isinstance(curve, str) else curve)]
    return recorded[:next((i + 1 for i, miou in enumerate(recorded) if miou > 0), len(recorded))]


def first_epochs(params: dict, threads: int, out: Path, epochs: int, kernels: dict | None = None,
                 code: Path | None = None) -> list[float]:
    """Train the run in a child process until it has logged ``epochs`` epochs; their validation mIoU. ``kernels``:
    environment variables that cap the instruction sets of the math libraries (:data:`KERNEL_SETTINGS`); ``code``:
    a checkout whose fsslib trains (on a copy of the toy world, which older code must not write to)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(kernels or {})}
    env.pop("FSSLIB_SMOKE", None)
    if code is not None:
        shutil.copytree(data_root() / "toyworld", out / "data" / "toyworld")
        env.update(PYTHONPATH=str(code), FSSLIB_DATA=str(out / "data"))
    with (out / "stderr.txt").open("w") as stderr:
        child = subprocess.Popen([sys.executable, "-c", TRAIN_ONE_RUN, json.dumps(params), str(threads), str(out)],
                                 env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=code or REPO)
        log = out / "log.jsonl"
        try:
            while not (log.is_file() and len(log.read_text().splitlines()) >= epochs):
                if child.poll() is not None:
                    raise RunFailed(error_line((out / "stderr.txt").read_text()))
                time.sleep(0.5)
        finally:
            child.kill()
            child.wait()
    return [json.loads(line)["val_miou"] for line in log.read_text().splitlines()[:epochs]]


class RunFailed(RuntimeError):
    """A run stopped before the epochs asked for; its message is the line of its error output naming the error."""


def error_line(output: str) -> str:
    """The last line of a traceback that names an exception (else the output's last line)."""
    lines = output.strip().splitlines() or ["no error output"]
    return next((line for line in reversed(lines) if re.match(r"[\w.]+(Error|Exception)\b", line)), lines[-1])


@contextmanager
def checkout(commit: str) -> Iterator[Path]:
    """A temporary worktree of this repository at ``commit``."""
    with tempfile.TemporaryDirectory() as folder:
        tree = Path(folder) / "code"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), commit], cwd=REPO, check=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=True)


def place_frozen_files(record: dict, tree: Path, repo: Path = REPO) -> None:
    """Give a checkout at a record's commit the frozen files the record names (a base learner, a prior extractor):
    where the checkout lacks one, or holds another version than the recorded digest (a file retrained after that
    commit), today's copy is put in its place when its digest is the recorded one."""
    for frozen in record.get("frozen_files", {}).values():
        mine, theirs = repo / frozen["file"], tree / frozen["file"]
        if theirs.exists() and file_sha256(theirs) == frozen["sha256"]:
            continue
        if mine.exists() and file_sha256(mine) == frozen["sha256"]:
            theirs.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(mine, theirs)


def at_commit(record: dict, params: dict, threads: int, epochs: int,
              commit: str | None = None) -> list[float] | str | None:
    """The run's first epochs trained with the code of ``commit`` (default: the commit its record names), on this
    CPU, beside the frozen files its record names (:func:`place_frozen_files`); None when the run's code held
    uncommitted changes (it cannot be checked out); the error's last line if it fails."""
    commit = commit or str(record["git_commit"])
    if "+" in commit or commit == "uncommitted":
        return None
    with checkout(commit) as tree, tempfile.TemporaryDirectory() as folder:
        place_frozen_files(record, tree)
        try:
            return first_epochs(params, threads, Path(folder), epochs, code=tree)
        except RunFailed as failure:
            return f"failed: {failure}"


def cause_table(commit: str, moved: list[tuple[str, dict, dict, int, list[float], list[float]]]) -> str:
    """A control of one named cause: each family whose first epochs today's code moved (its name, record,
    parameters, threads, first epochs at its recorded commit and today's), trained again at ``commit``'s parent and
    at ``commit``. The commit moved them where its parent gives the recorded commit's first epochs and it gives
    today's."""
    def git(*words: str) -> str:
        return subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    full = git("rev-parse", commit)
    subject = git("log", "-1", "--format=%s", full).split(";")[0].rstrip(".")
    lines = [f"## The families today's code moved, trained on either side of commit {full[:7]}", "",
             f"The commit's subject begins: {subject}.", "",
             "| model | at its parent | at the commit | the parent gives the recorded commit's "
             "| the commit gives today's |", "|---|---|---|---|---|"]
    for name, record, params, threads, then, today in moved:
        before, after = (at_commit(record, params, threads, len(today), code) for code in (f"{full}^", full))
        shown = [value if isinstance(value, str) else ", ".join(map(repr, value)) for value in (before, after)]
        lines.append(f"| {name} | {shown[0]} | {shown[1]} | {'yes' if before == then else 'no'} "
                     f"| {'yes' if after == today else 'no'} |")
        print(f"{name}: at {full[:7]}^ {before}, at {full[:7]} {after}", flush=True)
    return "\n".join(lines)


def kernel_table(name: str) -> str:
    """The first epochs of zoo model ``name`` trained again under each of :data:`KERNEL_SETTINGS`, on this CPU."""
    record = json.loads((ZOO_DIR / f"{name}.json").read_text())
    params, threads, _ = run_parameters(record)
    epochs = len(recorded_first_epochs(record))
    lines = [f"## {name}'s first {epochs} epochs with the math libraries' instruction sets capped", "",
             "The same run, code and thread count on this CPU; only the kernels the libraries choose differ "
             "(environment variables, read when a library loads).", "",
             "| kernels | environment | validation mIoU |", "|---|---|---|"]
    for label, kernels in KERNEL_SETTINGS:
        with tempfile.TemporaryDirectory() as folder:
            today = first_epochs(params, threads, Path(folder), epochs, kernels)
        setting = " ".join(f"`{key}={value}`" for key, value in kernels.items()) or "none"
        lines.append(f"| {label} | {setting} | {', '.join(map(repr, today))} |")
        print(f"{label}: {today}", flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None,
                        help="zoo models by file stem (default: fold 0, 1-shot of each family)")
    parser.add_argument("--out", type=Path, default=OUT, help="the Markdown table to write")
    parser.add_argument("--at-commits", action=argparse.BooleanOptionalAction, default=True,
                        help="also train each run's first epochs with the code of the commit its record names")
    parser.add_argument("--kernels", default="pfenet-fold0-1shot",
                        help="the zoo model whose first epochs are trained again under each of KERNEL_SETTINGS "
                             "(a second table); 'none' skips it")
    parser.add_argument("--cause", default=None, metavar="COMMIT",
                        help="a commit suspected of moving first epochs: each family whose first epochs today's code "
                             "moved is trained again at its parent and at it (a third table)")
    args = parser.parse_args(argv)
    if args.cause and not args.at_commits:
        parser.error("--cause needs --at-commits: a family counts as moved by the code against its recorded commit")
    rows, moved = [], []
    for name in args.models or family_models():
        record = json.loads((ZOO_DIR / f"{name}.json").read_text())
        params, threads, grid = run_parameters(record)
        recorded = recorded_first_epochs(record)
        with tempfile.TemporaryDirectory() as folder:
            try:
                today = first_epochs(params, threads, Path(folder), len(recorded))
            except RunFailed as failure:
                raise SystemExit(f"{name}: the run stopped before its epoch {len(recorded)}: {failure}") from None
        then = at_commit(record, params, threads, len(recorded)) if args.at_commits else None
        machine = first_epochs_processor(record) or "not recorded"  # the CPU that trained the epochs compared
        rows.append((name, grid, record["git_commit"], machine, recorded, today, then))
        if isinstance(then, list) and then != today:
            moved.append((name, record, params, threads, then, today))
        print(f"{name}: recorded {recorded}, today {today}, at its commit {then}", flush=True)
    lines = ["# The zoo's first epochs trained again (toy tier)", "",
             f"Made by `{command_line(__file__, argv)}`. Each zoo model's run, from its grid file, stopped "
             "after its first epoch whose recorded validation mIoU is above 0; the validation mIoU of those epochs "
             "beside the ones its record keeps (bit for bit: equal or not), and, trained on this CPU with the code of "
             "the commit the record names, whether the code since changed them.", "",
             "| model | grid | trained at commit | on | epochs | recorded validation mIoU | today's | equal to the "
             "record | at its commit, here | equal to today's |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, grid, made, machine, expected, today, then in rows:
        commit_made = str(made)[:7] + (" +" if "+" in str(made) else "")
        recorded, trained = ", ".join(map(repr, expected)), ", ".join(map(repr, today))
        at_recorded = "not checked" if then is None else then if isinstance(then, str) else ", ".join(map(repr, then))
        same_code = "" if then is None or isinstance(then, str) else ("yes" if then == today else "no")
        lines.append(f"| {name} | {grid} | {commit_made} | {machine} | {len(expected)} | {recorded} | {trained} "
                     f"| {'yes' if expected == today else 'no'} | {at_recorded} | {same_code} |")
    lines += ["", "A `+` after a commit: the run's fsslib/ held uncommitted changes, so its code cannot be checked "
              "out. \"on\": the CPU that trained the model's first epochs (of a run resumed on another machine, "
              "its record's first `trained_on` span); \"not recorded\": the model was trained before runs recorded "
              "their machine."]
    if args.cause and moved:
        lines += ["", cause_table(args.cause, moved)]
    if args.kernels != "none":
        lines += ["", kernel_table(args.kernels)]
    write_report(lines, args.out, echo=False, timings=False)  # the machine and commit that trained them again


if __name__ == "__main__":
    main()
