"""Grid files and the tables they write: ``papermill_runs/results/<name>.csv`` and ``.md``, and ``RESULTS.md``.

:mod:`fsslib.runs` runs a grid and hands its rows and learning curves here. A table holds one row per
evaluation (:data:`TABLE_COLUMNS`, IoUs in %: to :data:`CSV_DECIMALS` decimals in the CSV, one in the Markdown),
the means over folds (:func:`fold_means`: of the per-fold values before rounding, :func:`means_basis`), the rows of
the grids it names under ``beside`` on the same test episodes (:func:`comparison_table`: a paper's Table 1 in
shape), the torch version, commit and device of its runs, and each trained run's last-quarter gain with its
standard error and verdict (:func:`plateau_verdicts`, ``docs/protocol.md``, "The plateau rule").
:func:`refresh_from_csv` writes the means and the comparison again from the committed CSV files alone;
:func:`write_results_page` completes each grid's page (:func:`finish_page`: its question, answer, curves and
notes) and writes ``RESULTS.md``, their index.
"""
from __future__ import annotations

import csv
import itertools
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from statistics import fmean
from typing import Any

import yaml

from fsslib.errors import DatasetNotFoundError, FsslibError
from fsslib.paths import atomic_path, save_figure, write_text
from fsslib.papers import PAPER_FILES
from fsslib.metrics import NOISE_MULTIPLE, PLATEAU_GAIN, plateau_verdicts, verdict_decimals

REPO = Path(__file__).resolve().parent.parent

TABLE_COLUMNS = ("method", "variant", "tier", "benchmark", "fold", "ways", "shots", "train_shots", "seed", "episodes",
                 "miou", "fbiou", "reference_miou")  # reference_miou: the all-foreground predictor on the same episodes


PROVENANCE_KEYS = ("torch", "commit", "device", "processor")  # a table names those its rows hold (older rows: no CPU)




PERCENT_COLUMNS = ("miou", "fbiou", "reference_miou")


CSV_DECIMALS = 4  # IoUs in a CSV: the means over folds are taken of these, not of the one decimal shown


MEAN_KEYS = ("method", "variant", "tier", "benchmark", "ways", "shots", "train_shots", "seed")


MEAN_COLUMNS = (*MEAN_KEYS, "folds", *PERCENT_COLUMNS)


# a grid file's entries (a misspelt one, e.g. ``fixd``, would be dropped without a word)
GRID_KEYS = ("name", "notebook", "runner", "grid", "fixed", "extra", "jobs", "threads", "gpus_per_run", "slurm",
             "compare", "seeds", "strata_pairs", "zoo", "beside", "budget_control", "paper")


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read a grid file; its runs are the product of ``grid`` lists over ``fixed`` values, plus ``extra``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"Grid file {path} does not exist.", "pass one of papermill_runs/*.yaml.")
    try:
        grid = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise FsslibError(f"Grid file {path} is not valid YAML: {error}".rstrip(),
                          "fix the line it names (a value holding braces, colons or '#' needs quotes).") from None
    if not isinstance(grid, dict):
        raise FsslibError(f"Grid file {path} holds {type(grid).__name__}, not a mapping of entries.",
                          "see papermill_runs/prototype_toy.yaml for a grid file's shape.")
    unknown_keys = sorted(set(grid) - set(GRID_KEYS))
    if unknown_keys:
        raise FsslibError(f"Grid file {path} has entries {unknown_keys}, which a grid file does not take.",
                          f"use {', '.join(GRID_KEYS)} (papermill_runs/prototype_toy.yaml shows the shape).")
    # a comparison needs a notebook only to train (ckpt: null); runner: python runs fsslib.launch, no notebook
    needs_notebook = not grid.get("compare") and grid.get("runner", "notebook") == "notebook"
    for key in ("name", "notebook", "grid") if needs_notebook else ("name", "grid"):
        if key not in grid:
            raise FsslibError(f"Grid file {path} has no {key!r} entry.",
                              "see papermill_runs/prototype_toy.yaml (notebook runs), compare_toy.yaml (a comparison) "
                              "or paper/piclip.yaml (runner: python).")
    if "paper" in grid and grid["paper"] not in PAPER_FILES:
        raise FsslibError(f"Grid file {path} names paper {grid['paper']!r}, which fsslib.papers does not know: its "
                          "table could not be set beside the paper's numbers.",
                          f"set paper to one of {', '.join(PAPER_FILES)} (a paper-tier grid), or leave it out.")
    return grid


def means_basis(rows: list[dict[str, Any]]) -> str:
    """What the means over folds of ``rows`` are taken of, for a table's heading: the unrounded per-fold values,
    unless a committed CSV written before the CSVs kept :data:`CSV_DECIMALS` decimals gave only one decimal."""
    if all(round(row["miou"], 1) != row["miou"] for row in rows):
        return "means of the unrounded per-fold values"
    return ("means of the per-fold values as committed: a CSV written before the CSVs kept more decimals holds "
            "one, which puts such a mean within 0.05 of the exact one")


def fold_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean IoUs over the folds (of the values as given, unrounded: :func:`means_basis`) of each (method, variant,
    tier, benchmark, shots, seed) run on several folds. A setting with a fold twice differs in a parameter the table does not show: it gets
    no mean."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = tuple(row.get(c, "") for c in MEAN_KEYS)
        groups.setdefault(key, []).append(row)
    return [{**dict(zip(MEAN_KEYS, key)), "folds": len(group),
             **{c: fmean(r[c] for r in group) for c in PERCENT_COLUMNS}}
            for key, group in groups.items() if len({r["fold"] for r in group}) == len(group) > 1]


def _markdown(columns: tuple[str, ...], table: list[dict[str, Any]]) -> list[str]:
    """The lines of a Markdown table of ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in table]


def shown(value: float, decimals: int = 1) -> str:
    """``value`` with ``decimals`` decimals, a tie rounded up whatever its binary form: a mean of one-decimal values
    (a CSV written before the CSVs kept more) often ends in 5, which a float holds just above or just below."""
    return str(Decimal(repr(round(value, 6))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))


def _formatted(row: dict[str, Any], columns: tuple[str, ...], decimals: int = 1) -> dict[str, Any]:
    """``row`` restricted to ``columns``, IoUs with ``decimals`` decimals (:func:`shown`), missing values (None) empty."""
    return {c: (shown(row[c], decimals) if c in PERCENT_COLUMNS else "" if row.get(c) is None else row[c])
            for c in columns}


def beside_rows(grid: dict[str, Any], results_dir: Path) -> list[dict[str, Any]]:
    """The committed rows (``results_dir/<other>.csv``) of the grids ``grid`` names under ``beside``."""
    return [row for other in grid.get("beside", []) for row in read_table(results_dir / f"{other}.csv")]


def read_table(path: Path) -> list[dict[str, Any]]:
    """The rows of a committed ``<name>.csv`` (IoUs as floats, as many decimals as written)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"No results table {path}.", f"run its grid first: python -m fsslib.runs papermill_runs/{path.stem}.yaml")
    with path.open(newline="") as handle:
        return [{**row, **{c: float(row[c]) for c in PERCENT_COLUMNS}} for row in csv.DictReader(handle)]


SAME_EPISODES = ("benchmark", "fold", "ways", "shots", "seed", "episodes")  # a test-episode set's identity


COMPARISON_COLUMNS = ("method", "support annotation", "ways", "shots", "train_shots")


def comparison_table(rows: list[dict[str, Any]], beside: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This grid's default rows (no variant) with the ``beside`` rows on the same test episodes and the
    all-foreground reference: one row per (method, ways, shots, train_shots), mIoU per fold and
    their mean (of the values before rounding). One training seed per method: a grid that trains several seeds
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
    values: dict[tuple[str, ...], dict[str, float]] = {}  # per label, the unrounded mIoU per fold
    table: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in chosen:
        label = (row["method"], support_annotation(row["method"]), str(row["ways"]), str(row["shots"]),
                 "" if row.get("train_shots") is None else str(row["train_shots"]))
        values.setdefault(label, {})[str(row["fold"])] = float(row["miou"])
    for label, per_fold in values.items():
        entry = table.setdefault(label, dict(zip(COMPARISON_COLUMNS, label)))
        entry.update({f"fold {f}": shown(per_fold[f]) if f in per_fold else "" for f in folds})
        entry["mean"] = shown(fmean(per_fold.values())) if len(per_fold) == len(folds) else ""
    return sorted(table.values(), key=lambda e: (int(e["ways"]), int(e["shots"]), e["method"] != "all-foreground", e["method"]))


BESIDE_HEADING = "Beside the other methods on the same test episodes"


def _comparison_lines(rows: list[dict[str, Any]], beside: list[dict[str, Any]]) -> list[str]:
    """The Markdown section of :func:`comparison_table`: its heading line and its table."""
    compared = comparison_table(rows, beside)
    columns = (*COMPARISON_COLUMNS, *sorted(c for c in compared[0] if c.startswith("fold ")), "mean")
    return [f"{BESIDE_HEADING} (mIoU; rows of other grids from their committed tables; {means_basis([*rows, *beside])}):",
            "", *_markdown(columns, compared)]


PAPER_HEADING = "Beside the paper"


FOLDS = ("0", "1", "2", "3")  # the folds of PASCAL-5i and COCO-20i, as a paper's table prints them


def paper_comparison(rows: list[dict[str, Any]], paper: str) -> list[dict[str, Any]]:
    """Per setting of the grid's rows (method, variant, benchmark, ways, shots, training shots): the number
    ``paper`` reports for it (:func:`fsslib.papers.reported`; "not reported" where it has none), fsslib's (per fold the
    mean over the training seeds, and the mean over folds of those) and fsslib minus the paper, per fold and mean;
    a setting of several seeds adds their standard deviation per fold and that of each seed's mean over the folds.
    Cells are strings, one decimal."""
    from statistics import stdev

    from fsslib.papers import has_reported, reported

    settings: dict[tuple[str, ...], dict[str, list[float]]] = {}
    by_seed: dict[tuple[str, ...], dict[str, dict[str, float]]] = {}  # per setting and seed, its mIoU per fold
    for row in rows:
        key = tuple(str(row.get(c) or "") for c in ("method", "variant", "benchmark", "ways", "shots", "train_shots"))
        settings.setdefault(key, {}).setdefault(str(row["fold"]), []).append(float(row["miou"]))
        by_seed.setdefault(key, {}).setdefault(str(row["seed"]), {})[str(row["fold"])] = float(row["miou"])
    table = []
    for key, per_fold in settings.items():
        method, variant, benchmark, ways, shots, train_shots = key
        seed_means = [fmean(folds.values()) for folds in by_seed[key].values() if set(folds) == set(FOLDS)]
        label = " ".join([method + (f" ({variant})" if variant else ""), f"{ways}-way {shots}-shot",
                          *([f"(trained {train_shots}-shot)"] if train_shots and train_shots != shots else [])])
        ours = {fold: fmean(values) for fold, values in per_fold.items()}
        seeds = sorted({len(values) for values in per_fold.values()})
        ours_mean = fmean(ours.values()) if set(ours) == set(FOLDS) else None
        counted = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        fsslib_row = {"setting": label, "row": f"fsslib ({counted} seed{'s' if seeds[-1] > 1 else ''})",
                      **{f"fold {f}": shown(ours[f]) if f in ours else "" for f in FOLDS},
                      "mean": "" if ours_mean is None else shown(ours_mean)}
        found = has_reported(paper, method, int(shots), int(ways), benchmark)
        printed = reported(paper, method, int(shots), int(ways), benchmark) if found else None
        theirs = dict(zip(FOLDS, printed.folds)) if printed else {}
        paper_row = {"setting": label, "row": f"paper ({printed.where})" if printed else "paper: not reported",
                     **{f"fold {f}": "" if theirs.get(f) is None else shown(theirs[f]) for f in FOLDS},
                     "mean": shown(printed.mean) if printed else ""}
        table += [paper_row, fsslib_row]
        if seeds[-1] > 1:
            table.append({"setting": label, "row": "fsslib: sd over seeds",
                          **{f"fold {f}": shown(stdev(per_fold[f])) if len(per_fold.get(f, [])) > 1 else "" for f in FOLDS},
                          "mean": shown(stdev(seed_means)) if len(seed_means) > 1 else ""})
        if printed:
            differences = {f: ours[f] - theirs[f] for f in FOLDS if f in ours and theirs.get(f) is not None}
            table.append({"setting": label, "row": "difference (fsslib - paper)",
                          **{f"fold {f}": _signed(differences[f]) if f in differences else "" for f in FOLDS},
                          "mean": "" if ours_mean is None else _signed(ours_mean - printed.mean)})
    return table


def _signed(value: float) -> str:
    """A difference with its sign, one decimal: +1.2, -0.4, 0.0."""
    text = shown(value)
    return text if text.startswith("-") or text == "0.0" else f"+{text}"


def _paper_lines(rows: list[dict[str, Any]], paper: str) -> list[str]:
    """The Markdown section of :func:`paper_comparison`: its heading line and its table."""
    columns = ("setting", "row", *(f"fold {f}" for f in FOLDS), "mean")
    return [f"{PAPER_HEADING} (mIoU; the paper's numbers from fsslib.papers, as printed in "
            f"`shared/papers/{PAPER_FILES[paper]}`; fsslib's per fold the mean over its training seeds, its mean over "
            f"the folds of those):", "", *_markdown(columns, paper_comparison(rows, paper))]


def _means_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown section of the means over folds (:func:`fold_means`), none if no setting ran on several."""
    means = [_formatted(row, MEAN_COLUMNS) for row in fold_means(rows)]
    return ["", f"Mean over folds ({means_basis(rows)}):", "", *_markdown(MEAN_COLUMNS, means)] if means else []


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
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))  # the table of rows, after the page's head
    rows_end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    middle = _means_lines(rows)
    if grid.get("beside"):
        middle += ["", *_comparison_lines(rows, beside_rows(grid, results_dir))]
    if grid.get("paper"):
        middle += ["", *_paper_lines(rows, grid["paper"])]
    lines[rows_end:end] = [*middle, ""]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")
    if results is None:
        write_results_page(REPO / "papermill_runs")
    return rows


def write_table(rows: list[dict[str, Any]], stem: Path, curves: dict[str, list[dict]] | None = None,
                beside: list[dict[str, Any]] | None = None, paper: str | None = None) -> None:
    """Write ``stem.csv`` and ``stem.md`` with :data:`TABLE_COLUMNS` (IoUs in %: :data:`CSV_DECIMALS` decimals
    in the CSV, 1 in the Markdown); the Markdown file adds the means over folds (:func:`fold_means`) when a setting ran on several,
    the comparison with the ``beside`` rows of other grids (:func:`comparison_table`), the
    provenance of the rows (torch, commit, device) and, given the runs' learning ``curves``,
    their gains over the last quarter of training; the curves go to ``stem_curves.png``. A paper's grid (``paper``,
    e.g. ``"piclip"``) adds its rows beside the paper's numbers (:func:`paper_comparison`)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(stem.with_suffix(".csv")) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(_formatted(row, TABLE_COLUMNS, CSV_DECIMALS) for row in rows)
    table = [_formatted(row, TABLE_COLUMNS) for row in rows]
    lines = [*_markdown(TABLE_COLUMNS, table), *_means_lines(rows)]
    if beside:
        lines += ["", *_comparison_lines(rows, beside)]
    if paper:
        lines += ["", *_paper_lines(rows, paper)]
    lines += ["", provenance_line(rows)]
    if curves:
        lines += ["", curve_lines(curves, stem)]
    write_text(stem.with_suffix(".md"), "\n".join(lines) + "\n")


def provenance_line(rows: list[dict[str, Any]]) -> str:
    """The "Produced with ..." line of a table: each provenance value its rows hold (the CPU where any row
    recorded one; rows from before that record say "not recorded")."""
    provenance = {key: sorted({str(row.get(key, "not recorded" if key == "processor" else None)) for row in rows})
                  for key in PROVENANCE_KEYS if key != "processor" or any(key in row for row in rows)}
    return "Produced with " + "; ".join(f"{key} {', '.join(values)}" for key, values in provenance.items()) + "."


# one run's entry in the learning-curve sentence of pages written before the per-run table: name, gain, its
# standard error, verdict
RUN_GAIN = re.compile(r"([\w.+-]+) ([+-]\d+\.\d+) ± (\d+\.\d+) \((flat|rising|within noise)\)")
# one row of curve_lines' per-run table
RUN_GAIN_ROW = re.compile(r"^\| ([\w.+-]+) \| ([+-]\d+\.\d+) \| (\d+\.\d+) \| (flat|rising|within noise) \|$")
CURVES_LINE = "Learning curves:"  # how the learning-curve paragraph of a grid's page starts


def markdown_tables(text: str) -> list[dict[str, Any]]:
    """The Markdown tables of ``text``, in order: each its header cells, its rows' cells (the separator line left
    out) and the last line of text above it."""
    tables: list[dict[str, Any]] = []
    above, current = "", None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = {"above": above, "header": cells, "rows": []}
                tables.append(current)
            elif not set("".join(cells)) <= set("-: "):
                current["rows"].append(cells)
        else:
            current = None
            if line.strip():
                above = line.strip()
    return tables


def run_gain_row(label: str, gain: float, error: float | None, verdict: str) -> str:
    """One run's row in :func:`curve_lines`' table: one decimal, more where one would print a gain of 0.96
    (flat) and one of 1.04 (rising) alike (:func:`fsslib.metrics.verdict_decimals`)."""
    places = verdict_decimals(gain, error)
    shown_error = "not measured" if error is None else f"{error:.{places}f}"
    return f"| {label} | {gain:+.{places}f} | {shown_error} | {verdict} |"


def run_gains(page: str) -> list[tuple[str, str, str, str]]:
    """Each run's (name, gain, standard error, verdict) as a grid's page prints them: the rows of the table after
    its learning-curve line, or, on pages written before that table, the entries of that line itself. Runs whose
    error was not measured are left out."""
    lines = page.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(CURVES_LINE)), None)
    if start is None:
        return []
    found = RUN_GAIN.findall(lines[start])
    table = list(itertools.takewhile(lambda line: line.startswith("|"),
                                     itertools.dropwhile(lambda line: not line.strip(), lines[start + 1:])))
    return found + [row.groups() for row in map(RUN_GAIN_ROW.match, table) if row]


def curve_lines(curves: dict[str, list[dict]], stem: Path) -> str:
    """Draw the runs' validation learning ``curves`` into ``stem_curves.png``; the sentence counting the verdicts
    and the table of each run's gain over the last quarter of training, its standard error and verdict
    (:func:`plateau_verdicts`)."""
    from fsslib.viz import plot_learning_curves

    figure = plot_learning_curves(curves, title=stem.name)
    save_figure(figure, stem.parent / f"{stem.name}_curves.png")
    verdicts = plateau_verdicts(curves)
    if not verdicts:
        return ""
    counts = {kind: sum(v[2] == kind for v in verdicts.values()) for kind in ("flat", "within noise", "rising")}
    rows = [run_gain_row(label, *verdict) for label, verdict in verdicts.items()]
    return "\n".join([
        f"{CURVES_LINE} `{stem.name}_curves.png`. Validation mIoU gained over the last quarter of "
        f"training (mean of the last quarter minus mean of the quarter before, ± its standard error from the "
        f"curve's epoch-to-epoch noise): {counts['flat']} of {len(verdicts)} runs flat (under "
        f"{PLATEAU_GAIN:.0f} point), {counts['within noise']} within noise (under {NOISE_MULTIPLE:.0f} "
        f"standard errors), {counts['rising']} rising. Per run:",
        "", "| run | last-quarter gain | standard error | verdict |", "|---|---|---|---|", *rows])


def grid_description(path: Path) -> str:
    """The comment block at the top of a grid file, without the '#' marks and its 'Run:' paragraph (the line
    starting 'Run:' and the comment lines that continue it: it ends the block)."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or line[1:].strip().startswith("Run:"):
            break
        lines.append(line[1:].strip())
    return " ".join(lines)


def grid_question(path: Path) -> str:
    """A grid's question: the first sentence of its file's comment block (:func:`grid_description`), up to the first
    '.', '?' or '!' followed by a space and a capital letter, a backquote or a parenthesis."""
    return re.split(r"(?<=[.?!])\s+(?=[A-Z`(])", grid_description(path), maxsplit=1)[0]


def grid_answer(folder: Path, name: str) -> str:
    """A grid's answer in one line: its hand-written ``<name>.answer.md`` beside the grid file, or that it has none."""
    answer = folder / f"{name}.answer.md"
    shown_folder = "papermill_runs/paper" if folder.name == PAPER_GRIDS else "papermill_runs"
    return " ".join(answer.read_text().split()) if answer.is_file() else f"Not written yet (`{shown_folder}/{name}.answer.md`)."


PAPER_GRIDS = "paper"  # papermill_runs/paper/: the paper tier's reproduction grids, one per paper and benchmark


def grid_files(folder: Path) -> list[Path]:
    """The grid files of ``folder`` (``papermill_runs``): the toy tier's, then the paper tier's in ``paper/``."""
    return [*sorted(folder.glob("*.yaml")), *sorted((folder / PAPER_GRIDS).glob("*.yaml"))]


def grid_command(path: Path, folder: Path) -> str:
    """The command that runs the grid file ``path`` of ``folder`` (``papermill_runs``), from the repository root."""
    return f"python -m fsslib.runs papermill_runs/{path.relative_to(folder).as_posix()}"


OLDER_VERDICT = "runs under 1 point (plateau)"  # the learning-curve sentence of tables written before plateau_verdicts


PAGE_HEAD = ("<!-- The grid's question, answer and command: written by fsslib.tables.finish_page. -->",
             "<!-- The grid's table: written by python -m fsslib.runs. -->")


# on the page of a grid that writes zoo models
SHIPPED_ROWS = ("**Which model a row is.** This table's rows are the runs' float32 checkpoints. The zoo ships them in "
                "float16 ([the zoo card](../../fsslib/checkpoints/zoo/README.md)), measured again in "
                "[compare_toy](compare_toy.md), whose rows may differ from these in the last digit. Comparisons "
                "between methods read the shipped models' rows; ablations and controls read this table's.")


PAGE_TAIL = "<!-- The grid's curves and notes: written by fsslib.tables.finish_page from papermill_runs/<name>.notes.md. -->"


def _demoted(markdown: str) -> str:
    """Markdown with every heading one level down (a grid's notes under its page's "Notes" heading)."""
    return "\n".join(f"#{line}" if line.startswith("#") else line for line in markdown.splitlines())


def _page_parts(text: str) -> tuple[list[str], list[str]]:
    """A grid's page as ``python -m fsslib.runs`` wrote it, without what :func:`finish_page` added: its title line
    (none if it has none) and the lines after it."""
    lines = text.splitlines()
    if PAGE_HEAD[0] in lines:
        del lines[lines.index(PAGE_HEAD[0]):lines.index(PAGE_HEAD[1]) + 1]
    if PAGE_TAIL in lines:
        del lines[lines.index(PAGE_TAIL):]
    lines = "\n".join(lines).strip().splitlines()
    title = lines[:1] if lines and lines[0].startswith("# ") else []
    return title, "\n".join(lines[len(title):]).strip().splitlines()


def _rebased(text: str) -> str:
    """Markdown written beside the grid files (``papermill_runs/``), its relative links made to work one folder
    down, on the grid's page in ``results/``."""
    return re.sub(r"\]\((?!https?:|#|/)([^)\s]+)\)", r"](../\1)", text)


def finish_page(path: Path, results: Path) -> Path:
    """Complete the page ``results/<name>.md`` of the grid file ``path`` around what the grid wrote, again on every
    call: after its title (or ``# <name>``) the grid's description, its answer (:func:`grid_answer`), its
    hand-written ``<name>.summary.md`` if it has one (a paper's grid: the paper's claims against its rows) and the
    command that makes it; after its table the learning-curves figure, a word on a plateau verdict in the older
    form (the runs' curves were not kept, so today's verdict cannot be computed) and the grid's ``<name>.notes.md``."""
    name = load_grid(path)["name"]
    page = results / f"{name}.md"
    title, body = _page_parts(page.read_text())
    summary = path.parent / f"{name}.summary.md"
    head = [PAGE_HEAD[0], "", grid_description(path), "", f"**Answer.** {_rebased(grid_answer(path.parent, name))}", "",
            *([f"**Summary.** {_rebased(summary.read_text().strip())}", ""] if summary.is_file() else []),
            f"Made by `{grid_command(path, results.parent)}`. Every grid: [RESULTS.md](../RESULTS.md); the "
            "protocol and its terms: [docs/protocol.md](../../docs/protocol.md).", "",
            *([SHIPPED_ROWS, ""] if load_grid(path).get("zoo") else []), PAGE_HEAD[1]]
    tail = [PAGE_TAIL]
    curves = results / f"{name}_curves.png"
    if curves.is_file() and f"]({curves.name})" not in "\n".join(body):
        tail += ["", f"![validation learning curves of {name}]({curves.name})"]
    older = older_verdict("\n".join(body))
    if older:
        flat, runs = older
        rest = (", so this grid's budget is its plateau." if flat == runs else
                f"; the other {runs - flat} are within noise or rising. Telling those apart needs each curve's standard "
                "error, and these runs' curves were not kept: the grid must run again.")
        tail += ["", "Today's verdict ([the plateau rule](../../docs/protocol.md#the-plateau-rule)) from the older sentence "
                 f"above: {_flat_runs(flat, runs)} (a gain under 1 point is flat under both rules){rest}"]
    notes = path.parent / f"{name}.notes.md"
    if notes.is_file():
        tail += ["", "## Notes", "", _demoted(_rebased(notes.read_text().strip()))]
    write_text(page, "\n".join([*(title or [f"# {name}"]), "", *head, "", *body, "", *tail]) + "\n")
    return page


def older_verdict(text: str) -> tuple[int, int] | None:
    """(flat runs, runs) from a learning-curve sentence of the older form ("k of M runs under 1 point"), else None.
    Its "under 1 point" is :func:`plateau_verdicts`' "flat"; its other runs are within noise or rising."""
    found = re.search(r"(\d+) of (\d+) " + re.escape(OLDER_VERDICT), text)
    return (int(found.group(1)), int(found.group(2))) if found else None


def _flat_runs(flat: int, runs: int) -> str:
    """How many of ``runs`` runs are flat: "all 3 runs flat", "its one run flat", "1 of 3 runs flat"."""
    if flat == runs:
        return f"all {runs} runs flat" if runs > 1 else "its one run flat"
    return f"{flat} of {runs} runs flat"


def older_verdict_words(flat: int, runs: int) -> str:
    """Today's verdict as far as an older sentence of ``flat`` runs under 1 point out of ``runs`` tells it."""
    return _flat_runs(flat, runs) + ("" if flat == runs else ", the others not settled")


def _headline(page: Path) -> list[str]:
    """A comparison page's first table (the methods side by side), as its page shows it."""
    body = _page_parts(page.read_text())[1]
    start = next((i for i, line in enumerate(body) if line.startswith("|")), len(body))
    return list(itertools.takewhile(lambda line: line.startswith("|"), body[start:]))


def _entry(path: Path, name: str) -> list[str]:
    """A grid's entry in RESULTS.md: its heading, question and answer, and a link to its page."""
    older = older_verdict((path.parent / "results" / f"{name}.md").read_text())
    verdict = "." if not older else f" (plateau: {older_verdict_words(*older)})."
    return [f"### {name}", "", f"**Question.** {grid_question(path)} **Answer.** {grid_answer(path.parent, name)} "
            f"[Full page](results/{name}.md)" + verdict, ""]


def write_results_page(folder: Path) -> Path:
    """``folder/RESULTS.md``, the index of the results, after completing each grid's page (:func:`finish_page`):
    a table of contents; the comparisons (grids with ``compare: true`` and no ``strata_pairs`` of their own:
    question, answer, a link and the page's first table); then per grid, controls included, its question
    (:func:`grid_question`), its answer (:func:`grid_answer`) and a link to its page, which holds its table, curves
    and notes. The notes stay on the pages."""
    results = folder / "results"
    grids = [(path, load_grid(path)) for path in grid_files(folder)]
    made = [(path, grid["name"]) for path, grid in grids if (results / f"{grid['name']}.md").is_file()]
    for path, _ in made:
        finish_page(path, results)
    compared = [(path, grid["name"]) for path, grid in grids  # a compare grid naming its own pairs is a control
                if (path, grid["name"]) in made and grid.get("compare") and not grid.get("strata_pairs")]
    others = [(path, name) for path, name in made if (path, name) not in compared]
    pending = [path for path, grid in grids if (path, grid["name"]) not in made]
    contents = ["- [The methods side by side](#the-methods-side-by-side): "
                + ", ".join(f"[{name}](#{name})" for _, name in compared),
                "- [Every grid](#every-grid): " + ", ".join(f"[{name}](#{name})" for _, name in others)]
    lines = ["# Results", "",
             "Written by `python -m fsslib.runs` after each grid; do not edit it. A grid's question is the first "
             "sentence of its file's comment; its answer is its `<name>.answer.md`; its page holds its table, curves "
             "and `<name>.notes.md`.", "",
             "mIoU and FB-IoU in %, 1000 test episodes per row, toy tier unless a row says otherwise. Means over folds "
             "are of the unrounded per-fold values; a table whose CSV kept one decimal only says so. The protocol, the "
             "plateau rule, when a difference counts as resolved, and every term: "
             "[docs/protocol.md](../docs/protocol.md).", "",
             "## Contents", "", *contents, "", "## The methods side by side", ""]
    for path, name in compared:
        lines += [*_entry(path, name), *_headline(results / f"{name}.md"), ""]
    if not compared:
        lines += ["No comparison made yet.", ""]
    lines += ["## Every grid", ""]
    for path, name in others:
        lines += _entry(path, name)
    toy_pending = [path for path in pending if path.parent == folder]
    if toy_pending:
        lines += ["Not run yet: " + ", ".join(f"`{grid_command(path, folder)}`" for path in toy_pending) + ".", ""]
    if len(toy_pending) < len(pending):
        lines += ["The paper tier's reproduction grids ([docs/paper_tier.md](../docs/paper_tier.md#reproducing-a-papers-table)), "
                  "not run yet: " + ", ".join(f"`{grid_command(path, folder)}`" for path in pending
                                             if path not in toy_pending) + ".", ""]
    page = folder / "RESULTS.md"
    write_text(page, "\n".join(lines).rstrip() + "\n")
    return page
