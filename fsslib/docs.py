"""The pages that quote results, rendered from the committed results: ``make docs`` (``python -m fsslib.docs``).

A result number in a page's prose is computed when the page is rendered, never typed. Each rendered page has a
source under ``docs/src/``, at the page's own path with ``.j2`` added: ``docs/src/README.md.j2`` renders
``README.md``, ``docs/src/docs/protocol.md.j2`` renders ``docs/protocol.md``, and
``docs/src/papermill_runs/<grid>.answer.md.j2`` a grid's answer. A source is Markdown with Jinja2 expressions
that call the helpers of :func:`helpers`, e.g. ``{{ mean("compare_toy", "pfenet") }}`` for PFENet's 4-fold mean.
The helpers read ``papermill_runs/results/*.csv`` (:func:`fsslib.tables.read_table`, :func:`fsslib.tables.fold_means`),
the zoo's and the checkpoints' ``.json`` files, ``benchmarks/results/`` and :mod:`fsslib.papers`, and print a
number as the tables do (:func:`fsslib.tables.shown`). Values several pages quote are computed once, in a
``.jinja`` file under ``docs/src/`` that those sources import (``{% import "..." as name with context %}``); it
renders no page. The rendered pages are committed, so a repository browser shows them; edit the source, never
the page.

``python -m fsslib.docs`` renders every source; a grid's answer or notes feed its results page, so it then
completes the grid pages and ``RESULTS.md`` again (:func:`fsslib.tables.write_results_page`).
``python -m fsslib.docs --check`` renders into memory and exits 1 naming each page that differs from its
source, and the command that fixes it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from statistics import median as _median
from typing import TYPE_CHECKING, Any, Callable, Sequence

from fsslib.errors import FsslibError, unknown
from fsslib.provenance import cpu_kind, trained_on_processors
from fsslib.tables import fold_means, load_grid, markdown_tables, read_table, shown
from fsslib.zoo import at_plateau

if TYPE_CHECKING:
    import jinja2

REPO = Path(__file__).resolve().parent.parent

SOURCES = Path("docs") / "src"  # the sources, relative to the repository root

SUFFIX = ".j2"

COMMAND = "make docs"  # the command that renders every page (python -m fsslib.docs)

HEADER = "<!-- Rendered by `{command}` from `{source}`: edit that file, not this one. -->\n"

COMPARISON = "compare_toy"  # the comparison whose rows and seed grids give the spread of training seeds

CHECKPOINTS = Path("fsslib") / "checkpoints"
# where the zoo's grids trained before runs recorded their machine (their models' .json lack ``hardware``)
UNRECORDED_ZOO_MACHINES = {"zoo_toy": "an AMD EPYC virtual machine", "qgnet_toy": "an AMD EPYC virtual machine",
                           "piclip_baselines_toy": "an Intel Xeon virtual machine"}


class Number(float):
    """A number as a page prints it: :func:`fsslib.tables.shown` with ``decimals`` decimals, ``+`` before a
    positive one when ``signed``. Arithmetic on it gives plain floats: pass them to ``num`` to print them."""

    decimals: int
    signed: bool

    def __new__(cls, value: float, decimals: int = 1, signed: bool = False) -> "Number":
        number = super().__new__(cls, value)
        number.decimals, number.signed = decimals, signed
        return number

    def __str__(self) -> str:
        text = shown(float(self), self.decimals)
        if float(text) == 0:
            return text.lstrip("-")  # -0.0 prints as 0.0, without a sign
        return f"+{text}" if self.signed and not text.startswith("-") else text

    def __format__(self, spec: str) -> str:
        return str(self) if not spec else format(float(self), spec)


@dataclass(frozen=True)
class Span:
    """The lowest and highest of several numbers (training seeds), printed ``low-high`` as the tables do."""

    low: Number
    high: Number
    values: tuple[Number, ...]

    @property
    def mean(self) -> Number:
        return Number(fmean(self.values), self.low.decimals)

    @property
    def sd(self) -> Number:
        """The sample standard deviation of the values, as the comparison's seed table gives it."""
        from statistics import stdev

        return Number(stdev(self.values), self.low.decimals)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class Verdict:
    """Whether a difference counts as resolved (``docs/protocol.md``): true or false, printed as words."""

    difference: Number
    threshold: Number
    resolved: bool

    def __bool__(self) -> bool:
        return self.resolved

    def __str__(self) -> str:
        return "resolved" if self.resolved else "not resolved"


class Results:
    """The committed results under ``root`` (the repository root), read once each: the helpers of a rendering."""

    def __init__(self, root: Path = REPO) -> None:
        self.root = Path(root)
        self.results = self.root / "papermill_runs" / "results"
        self._tables: dict[str, list[dict[str, Any]]] = {}
        self._json: dict[Path, Any] = {}

    # --- the rows of a grid -----------------------------------------------------------------------------------
    def table(self, grid: str) -> list[dict[str, Any]]:
        """The rows of ``papermill_runs/results/<grid>.csv`` (:func:`fsslib.tables.read_table`, a comparison's by
        :func:`fsslib.compare.read_comparison`); an error naming the grids that have one."""
        if grid not in self._tables:
            path = self.results / f"{grid}.csv"
            if not path.is_file():
                raise unknown("grid", grid, sorted(p.stem for p in self.results.glob("*.csv")))
            with path.open() as handle:
                columns = handle.readline().strip().split(",")
            if "reference_miou" in columns:  # a grid's table (fsslib.tables), else a comparison's (fsslib.compare)
                self._tables[grid] = read_table(path)
            else:
                from fsslib.compare import read_comparison

                self._tables[grid] = [{"reference_miou": float("nan"), **row} for row in read_comparison(grid, self.results)[0]]
        return self._tables[grid]

    def _rows(self, grid: str, method: str, shots: int, ways: int, variant: str, seed: int | None,
              train_shots: int | None = None) -> list[dict[str, Any]]:
        rows = self.table(grid)
        methods = sorted({row["method"] for row in rows})
        if method not in methods:
            raise unknown(f"method of grid {grid}", method, methods)
        chosen = [row for row in rows if row["method"] == method and (row.get("variant") or "") == variant
                  and int(row["shots"]) == shots and int(row["ways"]) == ways
                  and (seed is None or int(row["seed"]) == seed)
                  and (train_shots is None or str(row.get("train_shots") or "") == str(train_shots))]
        if not chosen:
            have = sorted({f"{r['ways']}-way {r['shots']}-shot variant {r.get('variant') or '(none)'} seed {r['seed']}"
                           for r in rows if r["method"] == method})
            raise unknown(f"setting of {method} in grid {grid}",
                          f"{ways}-way {shots}-shot variant {variant or '(none)'} seed {seed}", have)
        return chosen

    def mean(self, grid: str, method: str, shots: int = 1, ways: int = 1, variant: str = "", seed: int | None = None,
             column: str = "miou", folds: int = 4) -> Number:
        """The mean over the folds of ``method``'s rows in ``grid`` (:func:`fsslib.tables.fold_means`, of the
        unrounded rows), one decimal; an error unless exactly one setting ran on ``folds`` folds."""
        means = [m for m in fold_means(self._rows(grid, method, shots, ways, variant, seed)) if m["folds"] == folds]
        if len(means) != 1:
            raise FsslibError(f"Grid {grid} has {len(means)} means over {folds} folds of {method} "
                              f"({ways}-way {shots}-shot, variant {variant or '(none)'}, seed {seed}).",
                              "name the seed (seed=...) or the variant, or the number of folds (folds=...).")
        return Number(means[0][column])

    def row(self, grid: str, method: str, fold: int, shots: int = 1, ways: int = 1, variant: str = "",
            seed: int | None = None, column: str = "miou", train_shots: int | None = None) -> Number:
        """One fold's row of ``method`` in ``grid``, one decimal; an error unless exactly one row matches."""
        rows = [r for r in self._rows(grid, method, shots, ways, variant, seed, train_shots) if int(r["fold"]) == fold]
        if len(rows) != 1:
            folds = sorted({int(r["fold"]) for r in self._rows(grid, method, shots, ways, variant, seed, train_shots)})
            if not rows:
                raise unknown(f"fold of {method} in grid {grid}", fold, folds)
            raise FsslibError(f"Grid {grid} has {len(rows)} rows of {method} on fold {fold}.",
                              "name the seed (seed=...), the variant or the training shots (train_shots=...).")
        return Number(rows[0][column])

    def folds_ahead(self, grid: str, method: str, baseline: str, shots: int = 1, ways: int = 1, variant: str = "",
                    baseline_variant: str = "", folds: int = 4) -> int:
        """On how many of the folds ``method`` scores above ``baseline`` (seed 0's unrounded rows): a mean over the
        folds can hide a fold that reverses."""
        return sum(self.row(grid, method, fold, shots, ways, variant, seed=0)
                   > self.row(grid, baseline, fold, shots, ways, baseline_variant, seed=0) for fold in range(folds))

    def stratum(self, comparison: str, pair: str, grouping: str, stratum: str, column: str = "miou") -> Number:
        """A method's difference from its baseline in one stratum of a comparison (``<comparison>_strata_differences.csv``,
        :func:`fsslib.compare.read_comparison`): ``pair`` as the table names it (``"lfss - pfenet"``); ``column`` is
        ``miou``, ``low`` or ``high`` (the paired bootstrap's 95% interval), signed, one decimal; or ``episodes``,
        the stratum's episode count."""
        from fsslib.compare import read_comparison

        key = f"{comparison}_strata_differences"
        if key not in self._tables:
            if not (self.results / f"{key}.csv").is_file():
                raise unknown("comparison with strata differences", comparison,
                              sorted(p.stem.removesuffix("_strata_differences") for p in self.results.glob("*_strata_differences.csv")))
            self._tables[key] = read_comparison(comparison, self.results)[2]
        rows = [r for r in self._tables[key] if (r["method"], r["grouping"], str(r["stratum"])) == (pair, grouping, stratum)]
        if len(rows) != 1:
            raise unknown(f"stratum of {comparison}", f"{pair} / {grouping} / {stratum}",
                          sorted({f"{r['method']} / {r['grouping']} / {r['stratum']}" for r in self._tables[key]}))
        if column == "episodes":
            return Number(rows[0][column], 0)
        return Number(rows[0][column], signed=True)

    # --- the spread of training seeds ---------------------------------------------------------------------------
    def seed_rows(self, comparison: str = COMPARISON) -> list[dict[str, Any]]:
        """The rows of the seed grids the comparison names (``seeds``), a later grid replacing an earlier one's
        method (:func:`fsslib.runs.seed_rows`, which the comparison's page reads)."""
        from fsslib.runs import seed_rows

        return seed_rows(load_grid(self.root / "papermill_runs" / f"{comparison}.yaml"), self.results)

    def seeds(self, method: str, shots: int = 1, ways: int = 1, variant: str = "", fold: int = 0,
              comparison: str = COMPARISON, grids: Sequence[str] | None = None) -> Span:
        """The range of ``method``'s fold-0 mIoU over its training seeds: the comparison's row (seed 0) and the
        seed grids' (:meth:`seed_rows`), as the comparison's "spread of training seeds" lists them; or, with
        ``grids``, the rows of those grids' tables (e.g. models the zoo no longer ships: seed 0's grid, then the
        seeds' grid)."""
        def chosen(rows: list[dict[str, Any]]) -> dict[int, float]:
            return {int(r["seed"]): r["miou"] for r in rows if r["method"] == method and (r.get("variant") or "") == variant
                    and int(r["shots"]) == shots and int(r["ways"]) == ways and int(r["fold"]) == fold}

        if grids is not None:
            values = {seed: miou for grid in grids for seed, miou in chosen(self.table(grid)).items()}
        else:
            values = {**chosen(self.table(comparison)), **chosen(self.seed_rows(comparison))}
        if len(values) < 2:
            rows = [r for grid in grids for r in self.table(grid)] if grids is not None else self.seed_rows(comparison)
            where = f"in {', '.join(grids)}" if grids is not None else f"beside {comparison}"
            raise unknown(f"method with training seeds {where} ({ways}-way {shots}-shot, fold {fold})",
                          method, sorted({r["method"] for r in rows}))
        numbers = tuple(Number(values[s]) for s in sorted(values))
        return Span(Number(min(numbers)), Number(max(numbers)), numbers)

    def spread(self, setting: str = "1-way 1-shot", comparison: str = COMPARISON) -> Number:
        """The pooled standard deviation over training seeds (:func:`fsslib.compare.pooled_spread`), two decimals."""
        from fsslib.compare import pooled_spread, seed_spread

        pooled = pooled_spread(seed_spread(self.table(comparison), self.seed_rows(comparison)))
        if setting not in pooled:
            raise unknown("setting of the seed spread", setting, sorted(pooled))
        return Number(pooled[setting][0], 2)

    def threshold(self, n1: int, n2: int | None = None, setting: str = "1-way 1-shot",
                  s: float | None = None) -> Number:
        """The difference that counts as resolved between a number of ``n1`` and one of ``n2`` (default ``n1``)
        separately trained models (:func:`fsslib.compare.resolution_threshold`), two decimals: from the pooled seed
        spread of ``setting``, or from ``s`` (one method's own seed spread, e.g. the prototype's)."""
        from fsslib.compare import resolution_threshold

        spread = float(self.spread(setting)) if s is None else float(s)
        return Number(resolution_threshold(spread, n1, n1 if n2 is None else n2), 2)

    def resolved(self, a: float, b: float, n1: int, n2: int | None = None, setting: str = "1-way 1-shot") -> Verdict:
        """Whether ``a - b`` counts as resolved (:meth:`threshold`)."""
        threshold = self.threshold(n1, n2, setting)
        difference = diff(a, b)
        return Verdict(difference, threshold, abs(float(a) - float(b)) > float(threshold))

    # --- papers, presets and recorded fields ----------------------------------------------------------------------
    @staticmethod
    def paper(paper: str, method: str, shots: int = 1, ways: int = 1, benchmark: str = "pascal",
              fold: int | None = None) -> Number:
        """The number ``paper`` reports (:func:`fsslib.papers.reported`): its mean over the folds, or one fold."""
        from fsslib.papers import reported

        printed = reported(paper, method, shots, ways, benchmark)
        return Number(printed.mean if fold is None else printed.folds[fold])

    @staticmethod
    def preset(method: str, key: str, tier: str = "toy") -> Any:
        """A setting of ``method``'s preset for ``tier`` (the method's ``PRESETS``, :mod:`fsslib.methods`)."""
        from fsslib.methods import method_presets

        presets = method_presets(method)
        if tier not in presets:
            raise unknown(f"tier of {method}'s presets", tier, sorted(presets))
        if key not in presets[tier]:
            raise unknown(f"setting of {method}'s {tier} preset", key, sorted(presets[tier]))
        return presets[tier][key]

    def recorded(self, file: str, field: str, decimals: int | None = None, scale: float = 1.0) -> Any:
        """A field of a recorded ``.json``: ``file`` is a path from the repository root, or a checkpoint's name
        (``toy_found``; ``zoo/pfenet-fold0-1shot``). ``field`` is dotted (``held_out.foreground_iou.found_head``,
        ``test_rows.0.miou``). A number times ``scale`` is printed with ``decimals`` decimals if given."""
        path = self._recorded_path(file)
        value, parts = self._recorded_file(file), field.split(".")
        while parts:  # a key may hold a dot itself (recall_at_0.5): the longest key that matches is taken
            taken = next((n for n in range(len(parts), 0, -1) if isinstance(value, dict) and ".".join(parts[:n]) in value), 0)
            if taken:
                value, parts = value[".".join(parts[:taken])], parts[taken:]
            elif isinstance(value, list) and parts[0].isdigit() and int(parts[0]) < len(value):
                value, parts = value[int(parts[0])], parts[1:]
            else:
                raise unknown(f"field of {path.relative_to(self.root)} at {parts[0]!r}", field,
                              sorted(value) if isinstance(value, dict) else [str(i) for i in range(len(value))]
                              if isinstance(value, list) else [])
        if decimals is not None:
            return Number(float(value) * scale, decimals)
        return value

    def zoo(self, model: str, field: str, decimals: int | None = None, scale: float = 1.0) -> Any:
        """A field of a zoo model's ``.json`` (``fsslib/checkpoints/zoo/<model>.json``): :meth:`recorded`."""
        return self.recorded(f"zoo/{model}", field, decimals, scale)

    def zoo_models(self, grid: str) -> list[dict[str, Any]]:
        """The zoo models a grid trained (their ``.json``'s ``command`` names ``papermill_runs/<grid>.yaml``), sorted
        by name: ``name``, ``method``, ``commit`` (7 characters), ``sittings`` (how many times the run started: more
        than 1 when it was resumed) and ``machines`` (:func:`~fsslib.provenance.cpu_kind` of each CPU that trained
        it, in the order of its epochs: :func:`~fsslib.provenance.trained_on_processors`; empty when not recorded)."""
        models = []
        for path in sorted((self.root / CHECKPOINTS / "zoo").glob("*.json")):
            record = self._recorded_file(f"zoo/{path.stem}")
            if f"papermill_runs/{grid}.yaml" not in record.get("command", ""):
                continue
            kinds = list(dict.fromkeys(cpu_kind(processor) for processor in trained_on_processors(record)))
            models.append({"name": path.stem, "method": record["method"], "commit": record["git_commit"][:7],
                           "sittings": record.get("sittings", 1), "machines": kinds})
        if not models:
            commands = [self._recorded_file(f"zoo/{p.stem}").get("command", "")
                        for p in (self.root / CHECKPOINTS / "zoo").glob("*.json")]
            grids = {name for command in commands for name in re.findall(r"papermill_runs/(\w+)\.yaml", command)}
            raise unknown("grid that trained zoo models", grid, sorted(grids))
        return models

    def zoo_machine(self, grid: str) -> str:
        """Where a grid's zoo models were trained, as a page says it: the CPU kinds their records name ("an AMD EPYC
        (family 26 model 2)"), or, for models trained before runs recorded their machine, the project's note of it
        (:data:`UNRECORDED_ZOO_MACHINES`)."""
        kinds = sorted({kind for model in self.zoo_models(grid) for kind in model["machines"]})
        if kinds:
            return listed([f"an {kind}" for kind in kinds])
        if grid not in UNRECORDED_ZOO_MACHINES:
            raise FsslibError(f"The zoo models of {grid} record no machine, and none is noted for them.",
                              "retrain them (runs record their machine) or note it in UNRECORDED_ZOO_MACHINES.")
        return UNRECORDED_ZOO_MACHINES[grid]

    def zoo_training_minutes(self) -> tuple[Number, Number]:
        """The fastest and the slowest training of a zoo model, in minutes of wall time (``train_time_s`` of the
        records that hold it; BAM's base learners do not)."""
        seconds = [record["train_time_s"] for path in sorted((self.root / CHECKPOINTS / "zoo").glob("*.json"))
                   if "train_time_s" in (record := self._recorded_file(f"zoo/{path.stem}"))]
        if not seconds:
            raise FsslibError("No zoo model records its training time (train_time_s).",
                              "re-export the zoo: python -m fsslib.runs papermill_runs/zoo_toy.yaml --resume.")
        return Number(min(seconds) / 60, 0), Number(max(seconds) / 60, 0)

    def at_plateau(self, model: str) -> bool:
        """Whether a zoo model's ``.json`` records the fold-0 doubling of its budget, and that doubling moved test
        mIoU by less than the difference that resolves two rows (:func:`fsslib.runs.budget_record`): False for a
        model trained without that control."""
        return at_plateau(self._recorded_file(f"zoo/{model}"))

    def _recorded_path(self, file: str) -> Path:
        return self.root / file if file.endswith(".json") else self.root / CHECKPOINTS / f"{file}.json"

    def _recorded_file(self, file: str) -> dict[str, Any]:
        """A recorded ``.json`` (:meth:`recorded`'s ``file``), read once."""
        path = self._recorded_path(file)
        if path not in self._json:
            if not path.is_file():
                raise unknown("recorded file", file, sorted(p.stem for p in (self.root / CHECKPOINTS).glob("*.json")))
            self._json[path] = json.loads(path.read_text())
        return self._json[path]

    @staticmethod
    def constant(module: str, name: str) -> Any:
        """A constant of fsslib's code (``constant("fsslib.metrics", "PLATEAU_GAIN")``): a page quotes the value
        the code uses, never a copy of it."""
        import importlib

        value = getattr(importlib.import_module(module), name, None)
        if value is None or not name.isupper():
            constants = [n for n in dir(importlib.import_module(module)) if n.isupper()]
            raise unknown(f"constant of {module}", name, constants)
        return value

    def _grid_file(self, grid: str) -> Path:
        """The file of grid ``grid``, its path under ``papermill_runs/`` without ``.yaml`` (``"paper/piclip"``)."""
        path = self.root / "papermill_runs" / f"{grid}.yaml"
        if not path.is_file():
            raise unknown("grid", grid, sorted(p.relative_to(self.root / "papermill_runs").with_suffix("").as_posix()
                                               for p in (self.root / "papermill_runs").rglob("*.yaml")))
        return path

    def paper_grids(self) -> list[str]:
        """The paper tier's grids, as :meth:`gpu_hours` names them (``"paper/piclip"``), sorted."""
        return sorted(f"paper/{path.stem}" for path in (self.root / "papermill_runs" / "paper").glob("*.yaml"))

    def has_table(self, grid: str) -> bool:
        """Whether grid ``grid`` has a committed table (``papermill_runs/results/<grid>.csv``): a page may read one grid
        until another, which replaces it, is committed."""
        return (self.results / f"{grid}.csv").is_file()

    def runs(self, grid: str) -> int:
        """How many runs grid ``grid`` (its path under ``papermill_runs/`` without ``.yaml``) expands to."""
        from fsslib.runs import expand

        return len(expand(load_grid(self._grid_file(grid))))

    def gpu_hours(self, grid: str, method: str | None = None, part: str = "total", shots: int | None = None) -> Number:
        """The GPU-hours of a paper-tier grid (``grid`` is its path under ``papermill_runs/`` without ``.yaml``:
        ``"paper/piclip"``) as ``python -m fsslib.runs <grid> --plan`` estimates them from the measured rates
        (:func:`fsslib.plan.run_plans`, :mod:`fsslib.rates`): summed over its runs, or over ``method``'s runs (and
        those trained on ``shots`` shots); ``part`` is ``total``, ``train`` or ``eval``. One decimal."""
        if part not in ("total", "train", "eval"):
            raise unknown("part of the GPU-hours", part, ["eval", "total", "train"])
        key = f"plan:{grid}"
        if key not in self._tables:
            from fsslib.plan import run_plans
            from fsslib.runs import check_parameters, expand, run_folder

            spec = load_grid(self._grid_file(grid))
            runs = expand(spec)
            check_parameters(spec, runs)
            smoke = os.environ.pop("FSSLIB_SMOKE", None)  # the grid's own settings, never a smoke test's tiny ones
            try:
                plans = run_plans(runs, workdir=run_folder(spec))
            finally:
                if smoke is not None:
                    os.environ["FSSLIB_SMOKE"] = smoke
            self._tables[key] = [{"method": plan.cfg.method, "shots": plan.cfg.shots, "train": plan.hours.train_hours,
                                  "eval": plan.hours.eval_hours} for plan in plans if plan.hours is not None]
        rows = [r for r in self._tables[key] if (method is None or r["method"] == method)
                and (shots is None or r["shots"] == shots)]
        if not rows:
            raise unknown(f"method of grid {grid} with a measured rate", f"{method} ({shots} shots)",
                          sorted({r["method"] for r in self._tables[key]}))
        return Number(sum(r["train"] + r["eval"] if part == "total" else r[part] for r in rows))

    def bench(self, file: str, row: str | tuple[str, ...], column: str, table: str | int = 0,
              part: int | None = None, scale: float = 1.0, decimals: int | None = None) -> Number:
        """A cell of a table of ``benchmarks/results/<file>.md`` (a benchmark writes its tables there, no ``.csv``
        beside them). ``table`` is the table's index in the page, or words of the heading or line above it;
        ``row`` is the row's first cell, or its first cells as a tuple; ``column`` is a header cell. A cell
        holding several numbers (``3.49 / 0.72``) gives the one at ``part``; a ``%`` is dropped, and a number
        followed by its unit or an ``x`` (``215 episodes/s``, ``36.5 ms (5.5x the batched time)``, ``1.71x``) gives
        that number. The number, times ``scale``, is printed with the cell's own decimals unless ``decimals`` is
        given."""
        chosen = self._bench_table(file, table, column)
        key = (row,) if isinstance(row, str) else tuple(row)
        rows = [r for r in chosen["rows"] if tuple(r[:len(key)]) == key]
        if len(rows) != 1:
            raise unknown(f"row of a table of benchmarks/results/{file}.md", " | ".join(key),
                          [" | ".join(r[:len(key)]) for r in chosen["rows"]])
        cell = rows[0][chosen["header"].index(column)]
        return _cell_number(cell, f"{file}.md ({' | '.join(key)}, {column})", part, scale, decimals)

    def bench_column(self, file: str, column: str, table: str | int = 0, rows: Sequence[str] | None = None,
                     part: int | None = None) -> list[Number]:
        """The numbers of one column of a table of ``benchmarks/results/<file>.md`` (read as :meth:`bench` reads a
        cell), top to bottom; with ``rows``, only the rows whose first cell it names."""
        chosen = self._bench_table(file, table, column)
        index = chosen["header"].index(column)
        return [_cell_number(r[index], f"{file}.md ({r[0]}, {column})", part)
                for r in chosen["rows"] if rows is None or r[0] in rows]

    def bench_rows(self, file: str, table: str | int = 0) -> list[dict[str, str]]:
        """The rows of a table of ``benchmarks/results/<file>.md`` (``table`` as for :meth:`bench`), each as
        {header cell: its text}: a page shows the benchmark's own cells."""
        chosen = self._bench_table_any(file, table)
        return [dict(zip(chosen["header"], cells)) for cells in chosen["rows"]]

    def bench_machine(self, file: str) -> str:
        """The machine ``benchmarks/results/<file>.md`` was measured on, from its last provenance line (written by
        ``benchmarks/timing.py``): the GPU's name where it ran on one, else the CPU's kind
        (:func:`fsslib.provenance.cpu_kind`, e.g. "AMD EPYC (family 26 model 2)")."""
        self._bench(file)  # the file exists
        text = (self.root / "benchmarks" / "results" / f"{file}.md").read_text()
        found = re.findall(r"^Produced with torch [^;\n]+; commit [^;\n]+; device (\w+)[^,\n]*, (.+?)"
                           r"(?: \((?:timings|this project)[^\n]*\))?\.\s*$", text, flags=re.M)
        if not found:
            raise FsslibError(f"benchmarks/results/{file}.md has no provenance line naming its machine.",
                              "write the report with benchmarks/timing.py's write_report (run its script again).")
        device, machine = found[-1]
        if device == "cuda":
            return machine.split(" (")[0]
        return cpu_kind(re.sub(r", \d+ cores$", "", machine.removeprefix("CPU ")))

    def first_epoch_audit(self, file: str = "zoo_first_epoch_toy") -> dict[str, Any]:
        """What ``benchmarks/zoo_first_epoch.py``'s report says, for a page to state it: ``machine`` (the CPU kind it
        ran on: its provenance line, or its heading's "on <CPU>" in reports written before that line), ``families``
        (its rows), ``groups`` (by the machine that trained them: ``machine`` as :meth:`zoo_machine` words it,
        ``families``, ``repeat``: how many repeat their records bit for bit), ``checked`` and ``same_code`` (trained
        at their recorded commit, and of those, equal to today's), ``code_moved`` (the families whose first epochs
        today's code changed), ``machine_moved`` (those whose recorded commit trains other first epochs here than
        their records: the machine or the libraries moved them), ``differ`` (those unequal to their records),
        ``unrecorded`` (how many records name no machine), ``kernels`` (None without the instruction-set table;
        else its ``model``, ``moved``: some capped setting changes its first epochs, ``reaches_record``: some capped
        setting gives its record's), and
        ``cause`` (None without the table of a suspected commit; else its ``commit``, its ``subject``'s first
        clause and the families it ``moved``)."""
        rows = self.bench_rows(file)
        text = (self.root / "benchmarks" / "results" / f"{file}.md").read_text()
        heading = re.search(r"^# .*, on (.+)\)$", text, flags=re.M)
        if re.search(r"^Produced with torch", text, flags=re.M) or not heading:
            machine = self.bench_machine(file)
        else:
            machine = cpu_kind(heading[1])
        groups: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            trained_on = (f"an {cpu_kind(row['on'])}" if row["on"] != "not recorded"
                          else UNRECORDED_ZOO_MACHINES.get(row["grid"], "a machine not recorded"))
            groups.setdefault(trained_on, []).append(row)
        checked = [row for row in rows if row["equal to today's"] in ("yes", "no")]
        tables = {table["header"][1]: table["rows"] for table in self._bench(file)[1:]}
        kernels = cause = None
        capped = re.search(r"^## (\S+)'s first \d+ epochs? with", text, flags=re.M)
        if capped:
            values = [cells[-1] for cells in tables["environment"]]  # this CPU's own kernels first
            recorded = next(row["recorded validation mIoU"] for row in rows if row["model"] == capped[1])
            kernels = {"model": capped[1], "moved": any(value != values[0] for value in values[1:]),
                       "reaches_record": recorded in values[1:]}
        either_side = re.search(r"^## The families today's code moved, trained on either side of commit (\w+)$", text,
                                flags=re.M)
        if either_side:
            subject = re.search(r"^The commit's subject begins: (.+)\.$", text, flags=re.M)
            cause = {"commit": either_side[1], "subject": subject[1] if subject else "",
                     "moved": [cells[0] for cells in tables["at its parent"] if cells[3:5] == ["yes", "yes"]]}
        return {"machine": machine, "families": len(rows),
                "groups": [{"machine": trained_on, "families": len(members),
                            "repeat": sum(row["equal to the record"] == "yes" for row in members)}
                           for trained_on, members in groups.items()],
                "checked": len(checked), "same_code": sum(row["equal to today's"] == "yes" for row in checked),
                "code_moved": [row["model"] for row in checked if row["equal to today's"] == "no"],
                "machine_moved": [row["model"] for row in checked
                                  if row["at its commit, here"] != row["recorded validation mIoU"]],
                "differ": [row["model"] for row in rows if row["equal to the record"] == "no"],
                "unrecorded": sum(row["on"] == "not recorded" for row in rows), "kernels": kernels, "cause": cause}

    def _bench_table_any(self, file: str, table: str | int) -> dict[str, Any]:
        """The table of ``benchmarks/results/<file>.md`` that ``table`` names, whatever its columns."""
        tables = self._bench(file)
        chosen = _chosen_table(tables, table)
        if chosen is None:
            raise unknown(f"table of benchmarks/results/{file}.md", table,
                          [f"{i}: {t['above']}" for i, t in enumerate(tables)])
        return chosen

    def bench_count(self, file: str, column: str, value: str, table: str | int = 0,
                    among: Sequence[str] | None = None) -> int:
        """How many rows of a table of ``benchmarks/results/<file>.md`` hold ``value`` in ``column`` (``table`` as
        for :meth:`bench`); with ``among``, only the rows whose first cell it names (each must be in the table)."""
        chosen = self._bench_table(file, table, column)
        rows = chosen["rows"]
        if among is not None:
            missing = sorted(set(among) - {r[0] for r in rows})
            if missing:
                raise unknown(f"row of a table of benchmarks/results/{file}.md", ", ".join(missing),
                              [r[0] for r in rows])
            rows = [r for r in rows if r[0] in among]
        return sum(r[chosen["header"].index(column)] == value for r in rows)

    def _bench_table(self, file: str, table: str | int, column: str) -> dict[str, Any]:
        """The table of ``benchmarks/results/<file>.md`` that :meth:`bench` names, checked to have ``column``."""
        chosen = self._bench_table_any(file, table)
        if column not in chosen["header"]:
            raise unknown(f"column of a table of benchmarks/results/{file}.md", column, chosen["header"])
        return chosen

    def _bench(self, file: str) -> list[dict[str, Any]]:
        """The tables of ``benchmarks/results/<file>.md``: each its header cells, its rows' cells and the last
        line of text above it."""
        path = self.root / "benchmarks" / "results" / f"{file}.md"
        key = f"bench:{file}"
        if key not in self._tables:
            if not path.is_file():
                raise unknown("benchmark result", file, sorted(p.stem for p in path.parent.glob("*.md")))
            self._tables[key] = markdown_tables(path.read_text())
        return self._tables[key]

    def gain(self, grid: str, run: str, error: bool = False) -> Number:
        """A run's validation mIoU gained over the last quarter of training, as its grid's page gives it (the runs'
        curves are not kept: :func:`fsslib.tables.curve_lines` wrote the sentence when the grid ran). ``run`` is
        the run's name on the page (``pfenet-fold0-1shot-seed0``); ``error`` gives the gain's standard error.
        Signed (the error unsigned), with the page's decimals."""
        runs = self._curves(grid)
        if run not in runs:
            raise unknown(f"run with a gain and its error on the page of {grid}", run, sorted(runs))
        return runs[run][1] if error else runs[run][0]

    def seed_gains(self, verdict: str | None = None, comparison: str = COMPARISON) -> list[Number]:
        """:meth:`gains` of the seed runs behind a comparison's seed spread (:func:`fsslib.runs.seed_sources`: each
        method's runs in the last seed grid that holds it), of those with ``verdict`` if given."""
        from fsslib.runs import seed_sources

        found: list[Number] = []
        sources = seed_sources(load_grid(self.root / "papermill_runs" / f"{comparison}.yaml"), self.results)
        for grid, rows in sources.items():
            prefixes = tuple({"-".join(filter(None, (row["method"], row.get("variant")))) + "-fold" for row in rows})
            found += [gain for run, (gain, _, said) in self._curves(grid).items()
                      if run.startswith(prefixes) and (verdict is None or said == verdict)]
        return found

    def gains(self, grid: str, verdict: str | None = None) -> list[Number]:
        """The last-quarter gains of a grid's runs (:meth:`gain`), of those with ``verdict`` (``flat``, ``rising``,
        ``within noise``) if given, in the page's order: ``gains(g, "rising") | min`` is the smallest rising one."""
        return [gain for gain, _, said in self._curves(grid).values() if verdict is None or said == verdict]

    def curve_runs(self, grid: str, verdict: str | None = None) -> list[str]:
        """The names of a grid's runs with a last-quarter gain on its page (``pfenet-fold0-5shot-seed0``), of those
        with ``verdict`` if given, in the page's order: ``curve_runs(g, "flat")`` names the flat ones."""
        return [run for run, (_, _, said) in self._curves(grid).items() if verdict is None or said == verdict]

    def _curves(self, grid: str) -> dict[str, tuple[Number, Number, str]]:
        """{run: (gain, its standard error, verdict)} from the learning curves' paragraph of a grid's page
        (:func:`fsslib.tables.run_gains`)."""
        from fsslib.tables import run_gains

        key = f"curves:{grid}"
        if key not in self._tables:
            page = self.results / f"{grid}.md"
            if not page.is_file():
                raise unknown("grid", grid, sorted(p.stem for p in self.results.glob("*.csv")))
            found = run_gains(page.read_text())
            if not found:
                raise FsslibError(f"The page of grid {grid} gives no run's gain with its error.",
                                  "quote a grid whose page has per-run gains (its curves were kept).")
            # as printed: one decimal, more where one would hide the verdict
            self._tables[key] = {name: (Number(float(g), len(g.split(".")[1]), signed=True),  # type: ignore[misc]
                                        Number(float(e), len(e.split(".")[1])), said)
                                 for name, g, e, said in found}
        return self._tables[key]  # type: ignore[return-value]

    def files(self, folder: str, pattern: str = "*") -> "Files":
        """The files of ``folder`` (from the repository root) matching ``pattern``: their count and size."""
        paths = sorted(p for p in (self.root / folder).glob(pattern) if p.is_file())
        if not paths:
            raise FsslibError(f"No file {pattern} in {folder}.", "name a folder and pattern that hold files.")
        return Files(len(paths), sum(p.stat().st_size for p in paths))


@dataclass(frozen=True)
class Files:
    """A count of files and their size; ``mb`` in megabytes (10^6 bytes), one decimal."""

    count: int
    size: int

    @property
    def mb(self) -> Number:
        return Number(self.size / 1e6)


def _chosen_table(tables: list[dict[str, Any]], table: str | int) -> dict[str, Any] | None:
    """The table at index ``table``, or the first whose line above holds the words ``table``; None if none."""
    if isinstance(table, int):
        return tables[table] if -len(tables) <= table < len(tables) else None
    return next((t for t in tables if table in t["above"]), None)


def _cell_number(cell: str, where: str, part: int | None = None, scale: float = 1.0,
                 decimals: int | None = None) -> Number:
    """The number a benchmark table's ``cell`` holds (:meth:`Results.bench`'s rules); ``where`` names it in errors."""
    text = (cell.split(" / ")[part] if part is not None else cell).strip().rstrip("%").strip()
    text = re.sub(r"^([+-]?\d+(?:\.\d+)?)(?:x(?: .*)?| \D.*)$", r"\1", text)  # the number before its unit
    try:
        value = float(text)
    except ValueError:
        raise FsslibError(f"The cell {cell!r} of benchmarks/results/{where} is not a number.",
                          "name the part (part=...) of a cell holding several.") from None
    shown_decimals = len(text.split(".")[1]) if "." in text else 0
    return Number(value * scale, shown_decimals if decimals is None else decimals)


def diff(a: float, b: float, decimals: int = 1) -> Number:
    """``a - b`` with its sign (``+1.2``, ``-0.4``), of the unrounded numbers."""
    return Number(float(a) - float(b), decimals, signed=True)


def sd(values: list[float], decimals: int = 1) -> Number:
    """The sample standard deviation of several numbers (rows of training seeds), as a page prints it."""
    from statistics import stdev

    return Number(stdev(float(v) for v in values), decimals)


def median(values: Sequence[float], decimals: int = 1) -> Number:
    """The median of ``values``, printed with ``decimals`` decimals."""
    return Number(_median(values), decimals)


def num(value: float, decimals: int = 1) -> Number:
    """A computed number (e.g. a sum of helpers' numbers) as a page prints it."""
    return Number(float(value), decimals)


def listed(items: list[str]) -> str:
    """Items as a sentence lists them: ``a``, ``a and b``, ``a, b and c``."""
    items = [str(item) for item in items]
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def helpers(results: Results) -> dict[str, Callable[..., Any]]:
    """The names a source may call: ``mean`` (a grid's mean over the folds), ``row`` (one fold's row), ``folds_ahead``
    (on how many folds one method scores above another), ``seeds``
    (the range over training seeds on fold 0), ``stratum`` (a difference in one stratum), ``diff`` (a signed
    difference), ``resolved``, ``threshold`` and ``spread`` (the resolution rule), ``paper`` (a paper's number),
    ``preset`` (a method's setting), ``recorded`` and ``zoo`` (a field of a recorded ``.json``; ``at_plateau``:
    whether a zoo model was shown at its plateau; ``zoo_models``: the zoo models a grid trained; ``zoo_machine``:
    where; ``zoo_training_minutes``: the fastest and slowest), ``files`` (a count and size of files),
    ``gpu_hours`` (a paper-tier
    grid's estimated GPU-hours, as ``--plan`` prints them), ``paper_grids`` and ``runs`` (the paper tier's grids, a
    grid's number of runs), ``has_table`` (whether a grid's table is committed), ``constant`` (a constant of
    fsslib's code), ``bench`` (a cell of a benchmark's table under ``benchmarks/results/``; ``bench_count``: how many
    of its rows hold a value in a column; ``bench_column``: a column's numbers; ``bench_rows``: a table's rows as
    text; ``bench_machine``: the machine it was measured on; ``first_epoch_audit``: what the zoo's first-epoch
    audit found), ``median``, ``gain`` and ``gains``
    (runs' last-quarter gains, from their grid's page; ``seed_gains``: of the seed runs behind the comparison's seed
    spread; ``curve_runs``: the runs' names), ``minutes`` (a lesson's minutes to run, from its last execution,
    :func:`fsslib.lessons.minutes_to_run`), ``sd`` (a standard deviation of rows), ``num`` and ``listed`` (items
    joined as a sentence lists them)."""
    from fsslib.lessons import lesson_path, minutes_to_run

    return {"mean": results.mean, "row": results.row, "folds_ahead": results.folds_ahead,
            "seeds": results.seeds, "stratum": results.stratum, "diff": diff, "num": num, "sd": sd, "listed": listed,
            "resolved": results.resolved, "threshold": results.threshold, "spread": results.spread,
            "paper": results.paper, "preset": results.preset, "recorded": results.recorded, "zoo": results.zoo,
            "at_plateau": results.at_plateau, "zoo_models": results.zoo_models,
            "zoo_machine": results.zoo_machine, "zoo_training_minutes": results.zoo_training_minutes,
            "files": results.files, "gpu_hours": results.gpu_hours, "paper_grids": results.paper_grids,
            "runs": results.runs, "has_table": results.has_table, "constant": results.constant, "bench": results.bench,
            "bench_count": results.bench_count, "bench_column": results.bench_column,
            "bench_rows": results.bench_rows, "bench_machine": results.bench_machine,
            "first_epoch_audit": results.first_epoch_audit, "median": median,
            "gain": results.gain, "gains": results.gains, "seed_gains": results.seed_gains,
            "curve_runs": results.curve_runs,
            "minutes": lambda lesson: minutes_to_run(lesson_path(lesson))}


def sources(root: Path = REPO) -> list[Path]:
    """Every source under ``docs/src/`` (``*.j2``), sorted."""
    return sorted((root / SOURCES).rglob(f"*{SUFFIX}"))


def target(source: Path, root: Path = REPO) -> Path:
    """The page a source renders: its path under ``docs/src/`` from the repository root, ``.j2`` removed."""
    relative = source.relative_to(root / SOURCES)
    return root / relative.with_name(relative.name[:-len(SUFFIX)])


def header(source: Path, root: Path = REPO) -> str:
    """The comment a rendered page opens with, naming its source; none for a grid's answer or notes, which
    RESULTS.md quotes inline."""
    page = target(source, root).relative_to(root)
    if page.parts[0] == "papermill_runs":
        return ""
    return HEADER.format(command=COMMAND, source=source.relative_to(root).as_posix())


def environment(root: Path = REPO) -> jinja2.Environment:
    """The Jinja2 environment of the sources: undefined names fail, text kept as written."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(root / SOURCES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.globals.update(helpers(Results(root)))
    return env


def render(root: Path = REPO) -> dict[Path, str]:
    """Every page rendered from its source: {page path: text}."""
    env = environment(root)
    pages = {}
    for source in sources(root):
        name = source.relative_to(root / SOURCES).as_posix()
        try:
            text = env.get_template(name).render()
        except FsslibError as error:
            raise FsslibError(f"Rendering {source.relative_to(root)} failed: {error}",
                              "fix the helper call in the source (its arguments name the grid, method, fold...).") from error
        pages[target(source, root)] = header(source, root) + text
    return pages


def stale(root: Path = REPO) -> list[Path]:
    """The pages whose committed text differs from their rendered source."""
    return [page for page, text in render(root).items() if not page.is_file() or page.read_text() != text]


def write(root: Path = REPO) -> list[Path]:
    """Render every page and write those that changed; then complete the grid pages and ``RESULTS.md`` again if
    a grid's answer or notes is among them (:func:`fsslib.tables.write_results_page`). Returns the pages written."""
    written = []
    for page, text in render(root).items():
        if not page.is_file() or page.read_text() != text:
            page.write_text(text)
            written.append(page)
    if any(page.parent == root / "papermill_runs" for page in written):
        from fsslib.tables import write_results_page

        write_results_page(root / "papermill_runs")
    return written


def main(argv: list[str] | None = None, root: Path = REPO) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsslib.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="render into memory; exit 1 naming each committed page that differs from its source")
    args = parser.parse_args(argv)
    if args.check:
        old = stale(root)
        for page in old:
            print(f"stale: {page.relative_to(root)}", file=sys.stderr)
        if old:
            print(f"{len(old)} rendered page(s) differ from their sources under {SOURCES}: run `{COMMAND}` "
                  "(python -m fsslib.docs) and commit the pages.", file=sys.stderr)
            return 1
        print(f"All {len(sources(root))} rendered pages match their sources.")
        return 0
    for page in write(root):
        print(f"wrote {page.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
