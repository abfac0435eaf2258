"""Grid files and the tables they write: ``papermill_runs/results/<name>.csv`` and ``.md``, and ``RESULTS.md``.

:mod:`fsslib.runs` runs a grid and hands its rows and learning curves here. A table holds one row per
evaluation (:data:`TABLE_COLUMNS`, IoUs in % with one decimal), the means over folds (:func:`mean_of_shown`:
the mean of the values shown, the same in every table), the rows of the grids it names under ``beside`` on
the same test episodes (:func:`comparison_table`: a paper's Table 1 in shape), the torch version, commit and
device of its runs, and each trained run's last-quarter gain with its standard error and verdict
(:func:`plateau_verdicts`, ``docs/plateau.md``). :func:`refresh_from_csv` writes the means and the
comparison again from the committed CSV files alone; :func:`write_results_page` assembles ``RESULTS.md``.
"""
from __future__ import annotations

import csv
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import yaml

from fsslib.errors import DatasetNotFoundError, FsslibError

REPO = Path(__file__).resolve().parent.parent

TABLE_COLUMNS = ("method", "variant", "tier", "benchmark", "fold", "ways", "shots", "train_shots", "seed", "episodes",
                 "miou", "fbiou", "reference_miou")  # reference_miou: the all-foreground predictor on the same episodes


PROVENANCE_KEYS = ("torch", "commit", "device")


PLATEAU_GAIN = 1.0  # points of validation mIoU over the last quarter of training below which a run is flat


NOISE_MULTIPLE = 2.0  # a gain under this many of its standard errors is within the curve's noise


PERCENT_COLUMNS = ("miou", "fbiou", "reference_miou")


MEAN_KEYS = ("method", "variant", "tier", "benchmark", "ways", "shots", "train_shots", "seed")


MEAN_COLUMNS = (*MEAN_KEYS, "folds", *PERCENT_COLUMNS)


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read a grid file; its runs are the product of ``grid`` lists over ``fixed`` values, plus ``extra``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"Grid file {path} does not exist.", "pass one of papermill_runs/*.yaml.")
    grid = yaml.safe_load(path.read_text())
    for key in ("name", "grid") if grid.get("compare") else ("name", "notebook", "grid"):  # a comparison needs one only to train (ckpt: null)
        if key not in grid:
            raise FsslibError(f"Grid file {path} has no {key!r} entry.",
                              "see papermill_runs/prototype_toy.yaml (notebook runs) or compare_toy.yaml (a comparison).")
    return grid


def plateau_gains(curves: dict[str, list[dict]]) -> dict[str, float]:
    """Each run's validation mIoU gained in the last quarter of its training: the mean over the last
    quarter's epochs minus the mean over the quarter before (means, so that one noisy validation
    does not decide)."""
    gains = {}
    for label, history in curves.items():
        values = [h["val_miou"] for h in history if h.get("val_miou") is not None]
        quarter = len(values) // 4
        if quarter:
            last, before = values[-quarter:], values[-2 * quarter:-quarter]
            gains[label] = sum(last) / quarter - sum(before) / quarter
    return gains


def gain_standard_error(history: list[dict]) -> float | None:
    """The standard error of a run's last-quarter gain from its curve's own epoch-to-epoch noise: the noise
    variance of one validation is half the variance of the curve's first differences over its last half
    (differences, so that a slow rise is not counted as noise), and the gain is a difference of two means of
    ``quarter`` validations. The validation episodes are the same every epoch, so this is the model's
    fluctuation; what the episode sample adds to a gain is measured apart (``benchmarks/validation_noise.py``)."""
    values = [h["val_miou"] for h in history if h.get("val_miou") is not None]
    quarter = len(values) // 4
    if quarter < 2:
        return None
    half = values[-2 * quarter:]
    steps = [b - a for a, b in zip(half, half[1:])]
    mean = sum(steps) / len(steps)
    noise_variance = sum((d - mean) ** 2 for d in steps) / (len(steps) - 1) / 2
    return (noise_variance * 2 / quarter) ** 0.5


def plateau_verdicts(curves: dict[str, list[dict]]) -> dict[str, tuple[float, float | None, str]]:
    """Per run: (last-quarter gain, its standard error, verdict). ``flat``: it gains under
    :data:`PLATEAU_GAIN` point; ``within noise``: under :data:`NOISE_MULTIPLE` standard errors of the curve's
    own noise (:func:`gain_standard_error`); ``rising``: neither, so its budget needs a run at twice the
    budget to show that the test mIoU no longer moves (each such control is named in the grid's notes)."""
    verdicts = {}
    for label, gain in plateau_gains(curves).items():
        error = gain_standard_error(curves[label])
        verdict = ("flat" if gain < PLATEAU_GAIN else
                   "within noise" if error is not None and gain < NOISE_MULTIPLE * error else "rising")
        verdicts[label] = (gain, error, verdict)
    return verdicts


def mean_of_shown(values: list[float]) -> float:
    """The mean of IoUs as the tables show them (1 decimal each), rounded half up to 1 decimal: the
    number a reader gets by hand from the table, the same in every table that shows those values."""
    shown = [Decimal(f"{value:.1f}") for value in values]
    return float((sum(shown) / len(shown)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def fold_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean IoUs over the folds (:func:`mean_of_shown`) of each (method, variant, tier, benchmark, shots, seed)
    run on several folds. A setting with a fold twice differs in a parameter the table does not show: it gets
    no mean."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row.get(c, "") for c in MEAN_KEYS)
        groups.setdefault(key, []).append(row)
    return [{**dict(zip(MEAN_KEYS, key)), "folds": len(group),
             **{c: mean_of_shown([r[c] for r in group]) for c in PERCENT_COLUMNS}}
            for key, group in groups.items() if len({r["fold"] for r in group}) == len(group) > 1]


def _markdown(columns: tuple[str, ...], table: list[dict[str, Any]]) -> list[str]:
    """The lines of a Markdown table of ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in table]


def _formatted(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    """``row`` restricted to ``columns``, IoUs with one decimal, missing values (None) empty."""
    return {c: (f"{row[c]:.1f}" if c in PERCENT_COLUMNS else "" if row.get(c) is None else row[c]) for c in columns}


def beside_rows(grid: dict[str, Any], results_dir: Path) -> list[dict[str, Any]]:
    """The committed rows (``results_dir/<other>.csv``) of the grids ``grid`` names under ``beside``."""
    return [row for other in grid.get("beside", []) for row in read_table(results_dir / f"{other}.csv")]


def read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of a committed ``<name>.csv`` (IoUs as floats, rounded as written)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"No results table {path}.", f"run its grid first: python -m fsslib.runs papermill_runs/{path.stem}.yaml")
    with path.open(newline="") as handle:
        return [{**row, **{c: float(row[c]) for c in PERCENT_COLUMNS}} for row in csv.DictReader(handle)]


SAME_EPISODES = ("benchmark", "fold", "ways", "shots", "seed", "episodes")  # a test-episode set's identity


COMPARISON_COLUMNS = ("method", "support annotation", "ways", "shots", "train_shots")


def comparison_table(rows: list[dict[str, Any]], beside: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This grid's default rows (no variant) with the ``beside`` rows on the same test episodes and the
    all-foreground reference: one row per (method, ways, shots, train_shots), mIoU per fold and
    their mean (:func:`mean_of_shown`). One training seed per method: a grid that trains several seeds
    (on the same episodes, ``test_seed``) is shown with its first row's seed; its own table has the others."""
    from fsslib.methods import support_annotation

    def key(row: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in SAME_EPISODES)

    first_seed = str(rows[0]["seed"]) if rows else None
    rows = [row for row in rows if str(row["seed"]) == first_seed]
    episodes = {key(row) for row in rows}
    folds = sorted({str(row["fold"]) for row in rows})
    reference = [{**row, "method": "all-foreground", "variant": "", "train_shots": "", "miou": row["reference_miou"]}
                 for row in rows if not row.get("variant")]
    chosen = [row for row in (*beside, *rows, *reference) if not row.get("variant") and key(row) in episodes]
    table: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in chosen:
        label = (row["method"], support_annotation(row["method"]), str(row["ways"]), str(row["shots"]),
                 "" if row.get("train_shots") is None else str(row["train_shots"]))
        entry = table.setdefault(label, dict(zip(COMPARISON_COLUMNS, label)))
        entry[f"fold {row['fold']}"] = f"{float(row['miou']):.1f}"
    for entry in table.values():
        values = [float(entry[f"fold {f}"]) for f in folds if f"fold {f}" in entry]
        entry.update({f"fold {f}": entry.get(f"fold {f}", "") for f in folds})
        entry["mean"] = f"{mean_of_shown(values):.1f}" if len(values) == len(folds) else ""
    return sorted(table.values(), key=lambda e: (int(e["ways"]), int(e["shots"]), e["method"] != "all-foreground", e["method"]))


BESIDE_HEADING = "Beside the other methods on the same test episodes"


def _comparison_lines(rows: list[dict[str, Any]], beside: list[dict[str, Any]]) -> list[str]:
    """The Markdown section of :func:`comparison_table`: its heading line and its table."""
    compared = comparison_table(rows, beside)
    columns = (*COMPARISON_COLUMNS, *sorted(c for c in compared[0] if c.startswith("fold ")), "mean")
    return [f"{BESIDE_HEADING} (mIoU; rows of other grids from their committed tables; mean of the values shown):", "",
            *_markdown(columns, compared)]


def refresh_from_csv(grid_path: str | Path, results: str | Path | None = None) -> list[dict[str, Any]]:
    """Write the means over folds and the ``beside`` comparison of a grid's committed table again from the
    committed CSV files, running nothing and needing none of its outputs (after a grid it names was re-run,
    or after the way means are taken changed). The rest of its Markdown file (rows, provenance,
    learning-curve gains) stays as it is. (``--table-only`` rewrites the whole table but needs the runs'
    ``metrics.json``, which live only as long as ``papermill_runs/outputs/``.)"""
    grid = load_grid(grid_path)
    results_dir = Path(results or REPO / "papermill_runs" / "results")
    stem = results_dir / grid["name"]
    if not (stem.with_suffix(".csv").is_file() and stem.with_suffix(".md").is_file()):
        raise DatasetNotFoundError(f"Grid {grid['name']} has no committed table under {results_dir}.",
                                   f"run the grid itself: python -m fsslib.runs {grid_path}")
    rows = read_table(stem.with_suffix(".csv"))
    lines = stem.with_suffix(".md").read_text().splitlines()
    end = next((i for i, line in enumerate(lines) if line.startswith("Produced with")), None)
    if end is None:
        raise FsslibError(f"{stem.with_suffix('.md')} has no provenance line ('Produced with ...').",
                          f"write the whole table again: python -m fsslib.runs {grid_path} --table-only")
    rows_end = next(i for i, line in enumerate(lines) if not line.startswith("|"))  # the table of rows comes first
    middle = []
    means = [_formatted(row, MEAN_COLUMNS) for row in fold_means(rows)]
    if means:
        middle += ["", "Mean over folds:", "", *_markdown(MEAN_COLUMNS, means)]
    if grid.get("beside"):
        middle += ["", *_comparison_lines(rows, beside_rows(grid, results_dir))]
    lines[rows_end:end] = [*middle, ""]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if results is None:
        write_results_page(REPO / "papermill_runs")
    return rows


def write_table(rows: list[dict[str, Any]], stem: Path, curves: dict[str, list[dict]] | None = None,
                beside: list[dict[str, Any]] | None = None) -> None:
    """Write ``stem.csv`` and ``stem.md`` with :data:`TABLE_COLUMNS` (IoUs in %, 1 decimal); the
    Markdown file adds the means over folds (:func:`fold_means`) when a setting ran on several,
    the comparison with the ``beside`` rows of other grids (:func:`comparison_table`), the
    provenance of the rows (torch, commit, device) and, given the runs' learning ``curves``,
    their gains over the last quarter of training; the curves go to ``stem_curves.png``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    table = [_formatted(row, TABLE_COLUMNS) for row in rows]
    with stem.with_suffix(".csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    lines = _markdown(TABLE_COLUMNS, table)
    means = [_formatted(row, MEAN_COLUMNS) for row in fold_means(rows)]
    if means:
        lines += ["", "Mean over folds:", "", *_markdown(MEAN_COLUMNS, means)]
    if beside:
        lines += ["", *_comparison_lines(rows, beside)]
    provenance = {key: sorted({str(row.get(key)) for row in rows}) for key in PROVENANCE_KEYS}
    lines += ["", "Produced with " + "; ".join(f"{key} {', '.join(values)}" for key, values in provenance.items()) + "."]
    if curves:
        lines += ["", curve_lines(curves, stem)]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def curve_lines(curves: dict[str, list[dict]], stem: Path) -> str:
    """Draw the runs' validation learning ``curves`` into ``stem_curves.png``; the sentence giving each run's gain
    over the last quarter of training, its standard error and verdict (:func:`plateau_verdicts`)."""
    from fsslib.viz import plot_learning_curves

    figure = plot_learning_curves(curves, title=stem.name)
    figure.savefig(stem.parent / f"{stem.name}_curves.png", dpi=100)
    verdicts = plateau_verdicts(curves)
    counts = {kind: sum(v[2] == kind for v in verdicts.values()) for kind in ("flat", "within noise", "rising")}
    per_run = ", ".join(f"{label} {gain:+.1f}" + ("" if error is None else f" ± {error:.1f}") + f" ({verdict})"
                        for label, (gain, error, verdict) in verdicts.items())
    return (f"Learning curves: `{stem.name}_curves.png`. Validation mIoU gained over the last quarter of "
            f"training (mean of the last quarter minus mean of the quarter before, ± its standard error from the "
            f"curve's epoch-to-epoch noise): {counts['flat']} of {len(verdicts)} runs flat (under "
            f"{PLATEAU_GAIN:.0f} point), {counts['within noise']} within noise (under {NOISE_MULTIPLE:.0f} "
            f"standard errors), {counts['rising']} rising; per run: {per_run}." if verdicts else "")


def grid_description(path: Path) -> str:
    """The comment block at the top of a grid file, without the '#' marks and its 'Run:' line."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line[1:].strip().startswith("Run:"):
            lines.append(line[1:].strip())
    return " ".join(lines)


def _demoted(markdown: str) -> str:
    """Markdown with every heading one level down (a grid's own page inside RESULTS.md's sections)."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def _grid_heading(path: Path, name: str) -> list[str]:
    """A grid's section heading in RESULTS.md: its name, its description and the command that makes it."""
    return [f"### {name}", "", grid_description(path), "", f"`python -m fsslib.runs papermill_runs/{path.name}`", ""]


def write_results_page(folder: Path) -> Path:
    """``folder/RESULTS.md``, for a newcomer: first the methods side by side (each grid with ``compare: true``:
    its page up to the rows, which its files keep, and its ``<name>.notes.md``), then one section per paper (each grid that names its ``paper``: its hand-written ``<name>.summary.md`` and
    its table shaped like the paper's, :func:`comparison_table`), then every grid in full with its description,
    table, learning curves and the hand-written analysis ``<name>.notes.md`` beside the grid file, if any."""
    results = folder / "results"
    grids = [(path, load_grid(path)) for path in sorted(folder.glob("*.yaml"))]
    made = [(path, grid) for path, grid in grids if (results / f"{grid['name']}.md").is_file()]
    sections = ["# Results", "",
                "Written by `python -m fsslib.runs` after each grid (do not edit: edit the grid's `<name>.summary.md` or "
                "`<name>.notes.md`). Every table comes from the one command in its section; mIoU / FB-IoU in %, 1000 "
                "test episodes per row; toy tier unless a row says otherwise. First the methods side by side, then one "
                "section per paper, then every grid in full.", "", "## The methods side by side", ""]
    compared = [(path, grid) for path, grid in made if grid.get("compare")]
    for path, grid in compared:  # each comparison's page up to its rows, which stay in its files (linked)
        name = grid["name"]
        text = (results / f"{name}.md").read_text().strip().splitlines()[1:]  # its own title left out
        rows_at = next((i for i, line in enumerate(text) if line.startswith("## Rows per fold")), len(text))
        shown = "\n".join(text[:rows_at]).strip().replace(f"]({name}", f"](results/{name}")
        notes = folder / f"{name}.notes.md"
        sections += [*_grid_heading(path, name), *_demoted(_demoted(shown)).splitlines(), "",
                     f"Rows per fold and setting: [results/{name}.csv](results/{name}.csv); per class: "
                     f"[results/{name}_per_class.csv](results/{name}_per_class.csv); the whole page: "
                     f"[results/{name}.md](results/{name}.md).", ""]
        if notes.is_file():
            sections += [_demoted(_demoted(notes.read_text().strip())), ""]
    pending = [path.name for path, grid in grids if grid.get("compare") and (path, grid) not in compared]
    sections += [f"Not made yet: `python -m fsslib.runs papermill_runs/{name}` (every method on the same episodes, the "
                 "trained ones from the toy model zoo, grid `zoo_toy`)." for name in pending]
    sections += [""] if pending else [] if compared else ["No comparison grid.", ""]
    sections += ["## The papers"]
    for path, grid in made:
        if not grid.get("paper"):
            continue
        summary = folder / f"{grid['name']}.summary.md"
        rows = read_table(results / f"{grid['name']}.csv")
        compared_rows = comparison_table(rows, beside_rows(grid, results))
        columns = (*COMPARISON_COLUMNS, *sorted(c for c in compared_rows[0] if c.startswith("fold ")), "mean")
        sections += ["", f"### {grid['paper']} (grid `{grid['name']}`)", "",
                     *([summary.read_text().strip(), ""] if summary.is_file() else []),
                     "mIoU on the same test episodes, the paper's table in shape (default variants; all rows in the "
                     "grid's section below):", "", *_markdown(columns, compared_rows)]
    sections += ["", "## Every grid"]
    for path, grid in made:
        if grid.get("compare"):
            continue
        name = grid["name"]
        sections += ["", *_grid_heading(path, name), (results / f"{name}.md").read_text().strip()]
        curves = results / f"{name}_curves.png"
        if curves.is_file():
            sections += ["", f"![validation learning curves of {name}](results/{curves.name})"]
        notes = folder / f"{name}.notes.md"
        if notes.is_file():
            sections += ["", _demoted(notes.read_text().strip())]
    page = folder / "RESULTS.md"
    page.write_text("\n".join(sections) + "\n")
    return page
