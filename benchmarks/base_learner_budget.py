"""Is BAM's base learner at its plateau? The budget control of stage 1 (toy tier).

    python benchmarks/base_learner_budget.py        # trains what is missing, then -> benchmarks/results/base_learner_budget_toy.md
    python benchmarks/base_learner_budget.py --fold 0 --epochs 24 48 96 --seed-epochs 48 --jobs 2

BAM, HDMNet and PI-CLIP on them read a frozen base learner per fold (``python -m fsslib.pretrain base-learner``,
:mod:`fsslib.pretrain.base_learner`). Its budget is chosen as the meta learners' are (``docs/protocol.md``): double
the epochs until a doubling moves the held-out score by less than its noise. Here the score is the test split's
base-class mIoU (the base learner's own task, 1000 images) and the noise is that of training seeds: the same budget
trained with other seeds (``--noise-seeds``) gives the standard deviation s, and a doubling must move the test mIoU
by less than the difference that resolves two single rows, ``2 s sqrt(2)``
(:func:`fsslib.compare.resolution_threshold`, the threshold ``docs/protocol.md`` applies to every family). The runs
are trained into ``--runs`` (one process of one thread each, ``--jobs`` at a time) unless their files are there
already, so an interrupted control resumes where it stopped: a finished run is kept, an unfinished one continues
from the end of its last epoch (``--resume``).

``--record-zoo`` writes into each zoo base learner's ``.json`` (``fsslib/checkpoints/zoo``) the fold-0 doubling of
its own budget and rate, and whether it moved the test mIoU by less than the threshold (:func:`budget_record`).

The table gives, per run, the test and validation base-class mIoU of the kept (best validation) weights, the
curve's last-quarter gain with its plateau verdict, and the wall and CPU time; then each doubling's move of the
test mIoU against that threshold, and the first budget whose doubling moves it by less.

A precision control: the run of ``--precision-control`` epochs, seed 0, is also trained with ``--precision bf16``
(bf16 autocast, a third less CPU time per step: ``benchmarks/toy_step_costs.py``); its test mIoU beside the float32
run's says whether the cheaper steps may train the longer budgets.

A learning-rate control: the toy tier's default budget, seed 0, is also trained at each learning rate of
``--lr-control`` (the toy tier's is 0.01, the head at ten times it). If a doubling keeps moving the score, a better
rate might reach the plateau in fewer epochs; the validation mIoU compares the rates, the test mIoU is reported
beside it.
``--rate-doublings`` tests that: budgets trained at one such rate (seed 0), whose doublings are set beside the same
doublings at the toy tier's rate and judged by the same threshold, with the first budget under it at that rate.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from fsslib.compare import resolution_threshold
from fsslib.runs import is_budget_row, single_row_threshold
from fsslib.tables import load_grid, read_table

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "fsslib" / "checkpoints" / "zoo"
GRIDS = REPO / "papermill_runs"
# The series starts from the toy tier's base-learner recipe of 24 epochs at lr 0.01 (seed 0, float32) and doubles
# its epochs; fixed here, so that the toy tier's defaults may move to the budget this control chooses.
TOY_EPOCHS, TOY_LR, ZOO_SEED = 24, 0.01, 0

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def run_file(runs: Path, fold: int, epochs: int, seed: int, precision: str = "fp32", lr: float = TOY_LR) -> Path:
    """The checkpoint of one control run (its provenance is the ``.json`` beside it)."""
    rate = "" if lr == TOY_LR else f"-lr{lr:g}"
    return runs / f"fold{fold}-e{epochs}-s{seed}{'' if precision == 'fp32' else '-' + precision}{rate}.pt"


def train_command(path: Path, fold: int, epochs: int, seed: int, precision: str = "fp32",
                  lr: float = TOY_LR) -> list[str]:
    return [sys.executable, "-m", "fsslib.pretrain", "base-learner", "--fold", str(fold), "--epochs", str(epochs),
            "--seed", str(seed), "--precision", precision, "--lr", str(lr), "--threads", "1", "--no-progress",
            "--resume", "--out", str(path)]


def train_missing(runs: Path, fold: int, settings: list[tuple[int, int, str, float]], jobs: int) -> None:
    """Train the runs (epochs, seed, precision, lr) whose provenance file is missing, ``jobs`` processes at a time."""
    missing = [setting for setting in settings if not run_file(runs, fold, *setting).with_suffix(".json").is_file()]
    runs.mkdir(parents=True, exist_ok=True)

    def train(setting: tuple[int, int, str, float]) -> None:
        path = run_file(runs, fold, *setting)
        with path.with_suffix(".log").open("w") as log:
            subprocess.run(train_command(path, fold, *setting), cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(train, missing))


def row(path: Path) -> dict:
    record = json.loads(path.with_suffix(".json").read_text())
    return {"epochs": record["settings"]["epochs"], "seed": record["seed"],
            "precision": record["settings"].get("precision", "fp32"), "lr": record["settings"]["lr"],
            "test": record["held_out"]["test"]["miou"], "val": record["held_out"]["val"]["miou"],
            "gain": record["plateau"]["last_quarter_gain"], "error": record["plateau"]["standard_error"],
            "verdict": record["plateau"]["verdict"], "wall_min": record["wall_time_s"]["train"] / 60,
            "cpu_min": record["cpu_time_s"] / 60, "curve": record["curve"], "file": path}


def curves_figure(rows: list[dict], fold: int) -> Figure:
    """The validation curves of the budget series (float32 at the toy tier's rate: base-class mIoU against the
    epoch), on a log2 epoch axis so that each doubling of the budget is one step."""
    from fsslib.viz import plot_learning_curves

    series = sorted(_series(rows), key=lambda r: (r["epochs"], r["seed"]))
    figure = plot_learning_curves({f"{r['epochs']} epochs, seed {r['seed']}": r["curve"] for r in series},
                                  title=f"BAM's base learner, fold {fold}: validation base-class mIoU (toy tier)")
    ax = figure.axes[0]
    ax.set_xscale("log", base=2)
    doublings = [2 ** k for k in range(max(r["epochs"] for r in series).bit_length() + 1)]  # 1, 2, 4, ... epochs
    ax.set_xticks(doublings, [str(epochs) for epochs in doublings])
    ax.minorticks_off()
    return figure


def _gain(run: dict) -> str:
    """A run's last-quarter gain with its standard error, as the tables print it."""
    return f"{run['gain']:+.2f}" + ("" if run["error"] is None else f" ({run['error']:.2f})")


def _series(rows: list[dict]) -> list[dict]:
    """The runs of the budget series: float32 at the toy tier's learning rate (the controls' runs left out)."""
    return [r for r in rows if r["precision"] == "fp32" and r["lr"] == TOY_LR]


def first_budget(runs: dict[int, dict], threshold: float | None) -> int | None:
    """The first budget whose doubling moves the test mIoU by less than ``threshold`` (``runs``: epochs -> run),
    or None: no doubling is under it, or the threshold is not measured."""
    budgets = sorted(runs)
    return next((short for short, long in zip(budgets, budgets[1:])
                 if threshold is not None and abs(runs[long]["test"] - runs[short]["test"]) < threshold), None)


def seed_noise(rows: list[dict], seed_epochs: int) -> tuple[float | None, float | None]:
    """The standard deviation s of the test mIoU over the seeds trained at ``seed_epochs`` (float32, the toy tier's
    rate), and the difference that resolves two single rows, ``2 s sqrt(2)``; None for both under two seeds."""
    seed_rows = [r["test"] for r in _series(rows) if r["epochs"] == seed_epochs]
    spread = statistics.stdev(seed_rows) if len(seed_rows) > 1 else None
    return spread, None if spread is None else resolution_threshold(spread, 1, 1)


def budget_record(rows: list[dict], epochs: int, lr: float, seed_epochs: int) -> dict:
    """Whether a zoo base learner of ``epochs`` at learning rate ``lr`` is at its plateau, for its ``.json``
    (``budget``, as a zoo model's from :func:`fsslib.runs.budget_record`): fold 0's test mIoU (seed 0, float32, the
    same rate) at that budget and at twice it, the move, and the threshold of :func:`seed_noise`. Without a run at
    twice the budget, the doubling into it (from half) stands in: under the threshold, half the budget is already at
    the plateau; over it, the budget is not shown at its plateau."""
    runs = {r["epochs"]: r for r in rows if (r["precision"], r["seed"], r["lr"]) == ("fp32", ZOO_SEED, lr)}
    short, long = (epochs, 2 * epochs) if 2 * epochs in runs else (epochs // 2, epochs)
    _, threshold = seed_noise(rows, seed_epochs)
    if short not in runs or long not in runs or threshold is None:
        raise SystemExit(f"The fold-0 control lacks the runs a base learner of {epochs} epochs at lr {lr:g} needs: "
                         f"seed {ZOO_SEED} at {epochs} and {2 * epochs} (or {epochs // 2}) epochs at that rate, and "
                         f"seeds at {seed_epochs} epochs for the noise. Train them: python benchmarks/"
                         f"base_learner_budget.py --rate-doublings {lr:g} {epochs // 2} {epochs} {2 * epochs}")
    move = runs[long]["test"] - runs[short]["test"]
    return {"control": "benchmarks/results/base_learner_budget_toy.md", "doubling_epochs": [short, long], "lr": lr,
            "fold0_test_miou": [runs[short]["test"], runs[long]["test"]], "move": move,
            "resolved_threshold": threshold, "at_plateau": abs(move) < threshold}


def grids_reading(weights: Path, grids: Path = GRIDS) -> list[dict]:
    """The committed grids whose runs read the base learner ``weights`` (their ``options: base_learner``)."""
    reading = []
    for path in sorted(grids.glob("*.yaml")):
        grid = load_grid(path)
        option = grid.get("fixed", {}).get("options", {}).get("base_learner")
        if option and Path(option).name == weights.name:
            reading.append(grid)
    return reading


def downstream_record(runs: Path, epochs: int, lr: float, grids: Path = GRIDS,
                      results: Path | None = None) -> dict | None:
    """What the doubling into a base learner of ``epochs`` at ``lr`` does to the meta models that read it: each
    method's fold-0 1-way 1-shot test mIoU (seed 0) in the grids that read the control's run of half the epochs
    and in those that read the run itself, at the meta budget of ``piclip_baselines_toy``; the moves and the
    difference that resolves two single rows (:func:`fsslib.runs.single_row_threshold`). None where no grid
    reads both runs."""
    meta_epochs = load_grid(grids / "piclip_baselines_toy.yaml")["fixed"]["epochs"]
    results = results or grids / "results"

    def rows(weights: Path) -> tuple[list[str], dict[str, float]]:
        names, scores = [], {}
        for grid in grids_reading(weights, grids):
            table = results / f"{grid['name']}.csv"
            if grid["fixed"].get("epochs") != meta_epochs or not table.is_file():
                continue
            kept = {r["method"]: r["miou"] for r in read_table(table) if not r.get("variant") and is_budget_row(r)}
            if kept:
                names.append(grid["name"])
                scores.update(kept)
        return names, scores

    (short_grids, short), (long_grids, long) = (rows(run_file(runs, 0, budget, ZOO_SEED, lr=lr))
                                                for budget in (epochs // 2, epochs))
    methods = [method for method in short if method in long]
    if not methods:
        return None
    threshold = single_row_threshold(results)
    moves = {method: long[method] - short[method] for method in methods}
    return {"grids": [short_grids, long_grids], "doubling_epochs": [epochs // 2, epochs], "meta_epochs": meta_epochs,
            "fold0_test_miou": {method: [short[method], long[method]] for method in methods}, "move": moves,
            "resolved_threshold": threshold, "within": all(abs(move) < threshold for move in moves.values())}


def record_zoo(rows: list[dict], seed_epochs: int, runs: Path, zoo: Path = ZOO) -> list[Path]:
    """Write :func:`budget_record` into each zoo base learner's ``.json`` (its own epochs and rate, fold 0's
    doubling), with the meta models' side of that doubling (:func:`downstream_record`, ``downstream``; the runs
    are those of the folder ``runs``); returns the files written."""
    written = []
    for path in sorted(zoo.glob("base-learner-fold*.json")):
        record = json.loads(path.read_text())
        epochs, lr = record["settings"]["epochs"], record["settings"]["lr"]
        record["budget"] = {**budget_record(rows, epochs, lr, seed_epochs),
                            "downstream": downstream_record(runs, epochs, lr)}
        path.write_text(json.dumps(record, indent=1) + "\n")
        written.append(path)
    return written


def zoo_budget(fold: int, zoo: Path = ZOO) -> str:
    """Which run the zoo's base learner of ``fold`` is (its epochs and rate, seed 0, float32), as the page says it."""
    path = zoo / f"base-learner-fold{fold}.json"
    if not path.is_file():
        return f"the zoo holds no base learner of fold {fold}"
    settings = json.loads(path.read_text())["settings"]
    return f"the zoo's base learner of fold {fold} is the run of {settings['epochs']} epochs at lr {settings['lr']:g}"


def report(fold: int, rows: list[dict], seed_epochs: int, complete: bool = True) -> tuple[list[str], int | None]:
    """The page's lines and the chosen budget (None when no doubling is under the threshold that resolves two single
    rows); ``complete``: every run of the control has finished (else a budget found so far may still change)."""
    series = _series(rows)
    seed_zero = {r["epochs"]: r for r in series if r["seed"] == ZOO_SEED}
    spread, threshold = seed_noise(rows, seed_epochs)  # s, the standard deviation over seeds
    lines = [f"# BAM's base learner at twice the budget (toy tier, fold {fold})", "",
             "Made by `python benchmarks/base_learner_budget.py` (the module docstring says what it measures). "
             f"Base-class mIoU (%) of the kept weights; {zoo_budget(fold)}. Wall and CPU "
             "times were taken on a shared 2-core machine (runs beside others, paused at times), where both grow "
             "with the load: the cost of a step is compared in `benchmarks/results/toy_step_costs.md`.", "",
             "| epochs | seed | precision | test mIoU | val mIoU | last-quarter gain (SE) | verdict | train wall / CPU min |",
             "|---|---|---|---|---|---|---|---|"]
    at_toy_rate = [r for r in rows if r["lr"] == TOY_LR]  # the learning-rate control has a table of its own
    for r in sorted(at_toy_rate, key=lambda r: (r["epochs"], r["seed"], r["precision"])):
        lines.append(f"| {r['epochs']} | {r['seed']} | {r['precision']} | {r['test']:.2f} | {r['val']:.2f} | "
                     f"{_gain(r)} | {r['verdict']} | {r['wall_min']:.1f} / {r['cpu_min']:.1f} |")
    for r in at_toy_rate:  # the precision control: a bf16 run beside the float32 run of its budget and seed
        pair = next((f for f in series if (f["epochs"], f["seed"]) == (r["epochs"], r["seed"])), None)
        if r["precision"] != "fp32" and pair is not None:
            lines += ["", f"Precision control: at {r['epochs']} epochs, seed {r['seed']}, {r['precision']} steps score "
                      f"{r['test'] - pair['test']:+.2f} points of test mIoU against float32's (one run each)."]
    seeds = sorted((r for r in series if r["epochs"] == seed_epochs), key=lambda r: r["seed"])
    scores = ", ".join(f"{r['test']:.2f}" for r in seeds)
    lines += ["", f"Seed spread of the test mIoU at {seed_epochs} epochs: two single rows are resolved when they "
              "differ by 2 s sqrt(2), s the standard deviation over the seeds (the threshold of `docs/protocol.md`).",
              "",
              "| seeds | test mIoU | standard deviation s | threshold 2 s sqrt(2) |", "|---|---|---|---|",
              f"| {', '.join(str(r['seed']) for r in seeds)} | {scores} | "
              + ("not measured | not measured |" if spread is None else f"{spread:.2f} | {threshold:.2f} |"),
              "", f"Each doubling of seed {ZOO_SEED}'s budget:", "",
              "| doubling | test mIoU moves | under the threshold |", "|---|---|---|"]
    budgets = sorted(seed_zero)
    for short, long in zip(budgets, budgets[1:]):
        move = seed_zero[long]["test"] - seed_zero[short]["test"]
        verdict = "not measured" if threshold is None else "yes" if abs(move) < threshold else "no"
        lines.append(f"| {short} -> {long} | {move:+.2f} | {verdict} |")
    chosen = first_budget(seed_zero, threshold)
    if not complete:
        lines += ["", "Budget: not decided while runs of the control are missing."]
    elif chosen is not None:
        lines += ["", f"Budget: {chosen} epochs, the first whose doubling moves the test mIoU by less than the "
                  "threshold."]
    else:
        lines += ["", "Budget: not found; no doubling moves the test mIoU by less than the threshold (train longer "
                  "budgets)."]
    rates = sorted((r for r in rows if (r["precision"], r["epochs"], r["seed"]) == ("fp32", TOY_EPOCHS, ZOO_SEED)),
                   key=lambda r: r["lr"])
    if len(rates) > 1:  # the learning-rate control
        best = max(rates, key=lambda r: r["val"])
        lines += ["", f"Learning-rate control: at {TOY_EPOCHS} epochs, seed {ZOO_SEED}, float32 (one run each; the toy "
                  f"tier's rate is {TOY_LR:g}); the best validation mIoU is at {best['lr']:g}.", "",
                  "| lr | val mIoU | test mIoU | last-quarter gain (SE) | verdict |", "|---|---|---|---|---|"]
        lines += [f"| {r['lr']:g} | {r['val']:.2f} | {r['test']:.2f} | {_gain(r)} | {r['verdict']} |" for r in rates]
    lines += _rate_doublings(rows, seed_zero, threshold)
    return lines, chosen


def _rate_doublings(rows: list[dict], seed_zero: dict[int, dict], threshold: float | None) -> list[str]:
    """The doublings at another learning rate (float32, seed 0), beside the same doublings at the toy tier's rate:
    does the faster rate reach the plateau in fewer epochs?"""
    other = {}
    for r in rows:
        if (r["precision"], r["seed"]) == ("fp32", ZOO_SEED) and r["lr"] != TOY_LR:
            other.setdefault(r["lr"], {})[r["epochs"]] = r
    lines = []
    for rate, runs in sorted(other.items()):
        budgets = sorted(runs)
        if len(budgets) < 2:
            continue  # the learning-rate control's run alone: no doubling
        lines += ["", f"Doublings at learning rate {rate:g} (seed 0, float32, one run each), beside the same doublings "
                  f"at the toy tier's {TOY_LR:g}:", "",
                  f"| doubling | test mIoU at {rate:g} | moves | at {TOY_LR:g}, moves "
                  f"| under the threshold at {rate:g} |",
                  "|---|---|---|---|---|"]
        for short, long in zip(budgets, budgets[1:]):
            move = runs[long]["test"] - runs[short]["test"]
            toy = (f"{seed_zero[long]['test'] - seed_zero[short]['test']:+.2f}"
                   if short in seed_zero and long in seed_zero else "not trained")
            under = "not measured" if threshold is None else "yes" if abs(move) < threshold else "no"
            lines.append(f"| {short} -> {long} | {runs[short]['test']:.2f} -> {runs[long]['test']:.2f} | {move:+.2f} | "
                         f"{toy} | {under} |")
        chosen = first_budget(runs, threshold)
        lines += ["", f"Budget at {rate:g}: " + (
            f"{chosen} epochs, the first whose doubling moves the test mIoU by less than the threshold."
            if chosen is not None else f"not found up to {budgets[-1]} epochs; no doubling moves the test mIoU by "
                                       "less than the threshold.")]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--fold", type=int, default=0, help="the fold whose base learner is controlled")
    parser.add_argument("--epochs", type=int, nargs="+", default=[24, 48, 96, 192, 384],
                        help="the budgets, each twice the last")
    parser.add_argument("--seed-epochs", type=int, default=48,
                        help="the budget also trained with the --noise-seeds (their spread is the noise)")
    parser.add_argument("--noise-seeds", type=int, nargs="+", default=[1, 2],
                        help="the seeds trained at --seed-epochs besides seed 0")
    parser.add_argument("--runs", type=Path, default=REPO / "benchmarks" / "results" / "base_learner_budget",
                        help="folder of the trained runs: their .json (provenance, curve, scores) are committed there, "
                             "and the weights of those a committed grid reads")
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time, one thread each")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "base_learner_budget_toy.md",
                        help="the page to write")
    parser.add_argument("--precision-control", type=int, default=24, metavar="EPOCHS",
                        help="the budget also trained with bf16 steps, seed 0 (0: none)")
    parser.add_argument("--lr-control", type=float, nargs="*", default=[0.003, 0.03, 0.1, 0.3],
                        help=f"learning rates also trained at the toy tier's default budget ({TOY_EPOCHS} epochs), "
                             f"seed 0 (the toy tier's rate: {TOY_LR:g})")
    parser.add_argument("--rate-doublings", type=float, nargs="*", default=[0.03, 48, 96, 192, 384],
                        metavar="LR_THEN_EPOCHS",
                        help="a learning rate, then budgets also trained at it, seed 0: does a faster rate reach "
                             "the plateau in fewer epochs? (the default budget at that rate is the "
                             "learning-rate control's run)")
    parser.add_argument("--table-only", action="store_true", help="train nothing: the table of the runs finished so far")
    parser.add_argument("--record-zoo", action="store_true",
                        help="also write into each zoo base learner's .json the fold-0 doubling of its budget and rate "
                             "(its `budget` field), from the runs finished so far")
    args = parser.parse_args(argv)
    if args.record_zoo and args.fold != 0:
        raise SystemExit("--record-zoo writes fold 0's doubling into every fold's base learner: run it with --fold 0.")
    settings = [(epochs, ZOO_SEED, "fp32", TOY_LR) for epochs in args.epochs]
    settings += [(args.seed_epochs, seed, "fp32", TOY_LR) for seed in args.noise_seeds]
    settings += [(args.precision_control, ZOO_SEED, "bf16", TOY_LR)] if args.precision_control else []
    settings += [(TOY_EPOCHS, ZOO_SEED, "fp32", lr) for lr in args.lr_control if lr != TOY_LR]
    if args.rate_doublings:
        rate, *budgets = args.rate_doublings
        settings += [(int(epochs), ZOO_SEED, "fp32", rate) for epochs in budgets]
    if not args.table_only:
        train_missing(args.runs, args.fold, settings, args.jobs)
    finished = [s for s in settings if run_file(args.runs, args.fold, *s).with_suffix(".json").is_file()]
    rows = [row(run_file(args.runs, args.fold, *setting)) for setting in finished]
    series_done = all(s in finished for s in settings if s[2:] == ("fp32", TOY_LR))  # the controls do not decide
    lines, _ = report(args.fold, rows, args.seed_epochs, complete=series_done)
    missing = [f"{epochs} epochs, seed {seed}, {precision}, lr {lr:g}" for epochs, seed, precision, lr in settings
               if (epochs, seed, precision, lr) not in finished]
    if missing:
        lines += ["", f"Still to train: {'; '.join(missing)} (run the command without --table-only)."]
    if _series(rows):
        figure = curves_figure(rows, args.fold)
        figure.savefig(args.out.with_suffix(".png"), dpi=100)
        lines += ["", "The validation curves of the runs, on a log2 epoch axis (one step per doubling):", "",
                  f"![the validation curves of the runs]({args.out.with_suffix('.png').name})"]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.record_zoo:
        written = record_zoo(rows, args.seed_epochs, args.runs)
        print(f"Wrote the budget record into {len(written)} zoo base learners' .json.")


if __name__ == "__main__":
    main()
