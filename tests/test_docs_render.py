"""The pages that quote results are rendered from their sources in docs/src/ (fsslib.docs, `make docs`): the
committed pages are what the sources render today, no source types a result number, and each helper reads the
committed tables as the tables print them."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from fsslib import docs
from fsslib.errors import FsslibError
from fsslib.tables import TABLE_COLUMNS, shown

REPO = Path(__file__).resolve().parent.parent

# Decimals in a source's prose that are not results. Each entry: a pattern around the number, and why it is allowed.
ALLOWED = [
    (r"Python 3\.\d+", "a Python version"),
    (r"torch \d+\.\d+(\.\d+)?", "a torch version"),
    (r"about 5 GB", "a download size"),
    (r"ViT-[BS]/\d+", "a model name"),
    (r"\b\d+(\.\d+)?e-\d+\b", "a learning rate"),
    (r"(area fraction|area-fraction)[^.]*?\b[01]\.\d\b|0\.5 by default", "the toy CLIP's area-fraction setting"),
    (r"\b\d+\.\d+\.\d+\b", "a three-part version (torch 2.15.0)"),
    (r"(>=|at) 0\.5( or above)?", "the prior region map's threshold, a setting"),
    (r"\b(lr|gamma =|temperature|student|centring|EMA) \d+\.\d+", "a training or evaluation setting"),
    (r"\balpha\b[^)]*?\bat 0\.\d\b", "LFSS's alpha, a setting of a Table 5 row"),
    (r"\balpha = 0\.\d(, 0\.\d)*|\balpha goes from 0\.\d to 0\.\d|\b0\.\d beats\s+0\.\d", "LFSS's alpha, Table 5's settings"),
    (r"within 0\.05", "the rounding bound of a mean of one-decimal values"),
    (r"arXiv:\d{4}\.\d{4,5}", "an arXiv identifier"),
    (r"(Eq|Eqs|Sec|Table|Fig)\.? \d+(\.\d+)?(-\d+(\.\d+)?)?", "a paper's equation, section, table or figure number"),
]



def quoting_pages() -> list[str]:
    """Every page the design renders: the README, docs/ (sources excluded), the grids' answers, notes and
    summaries, the checkpoints', the zoo's and the benchmarks' READMEs."""
    pages = ["README.md", "fsslib/checkpoints/README.md", "fsslib/checkpoints/zoo/README.md", "benchmarks/README.md"]
    pages += [p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md")
              if docs.SOURCES not in p.relative_to(REPO).parents]
    pages += [p.relative_to(REPO).as_posix() for kind in ("answer", "notes", "summary")
              for p in (REPO / "papermill_runs").rglob(f"*.{kind}.md")]
    return sorted(pages)


def test_every_page_that_quotes_results_is_rendered():
    rendered = {docs.target(source).relative_to(REPO).as_posix() for source in docs.sources()}
    missing = set(quoting_pages()) - rendered
    assert not missing, f"pages that quote results without a source in docs/src (write one): {sorted(missing)}"


def test_the_committed_pages_are_their_rendered_sources():
    stale = docs.stale()
    assert not stale, (f"stale rendered pages: {', '.join(str(p.relative_to(REPO)) for p in stale)}; "
                       f"run `{docs.COMMAND}` (python -m fsslib.docs) and commit them")


def prose_of_source(text: str) -> str:
    """A source's text without what may hold a number that is not typed prose: Jinja expressions, statements and
    comments, fenced and inline code, link targets, HTML comments."""
    for pattern in (r"\{\{.*?\}\}", r"\{%.*?%\}", r"\{#.*?#\}", r"```.*?```", r"<!--.*?-->", r"`[^`\n]*`", r"\]\([^)\s]*\)"):
        text = re.sub(pattern, " ", text, flags=re.S)
    return text


def typed_numbers(text: str) -> list[str]:
    """The decimals of a source's prose (:func:`prose_of_source`) that no :data:`ALLOWED` pattern covers."""
    prose = prose_of_source(text)
    allowed = [m.span() for pattern, _ in ALLOWED for m in re.finditer(pattern, prose)]
    found = []
    for match in re.finditer(r"(?<![\w.])[+-]?\d+\.\d+(?![\w])", prose):
        if not any(start <= match.start() and match.end() <= end for start, end in allowed):
            line = prose[:match.start()].count("\n") + 1
            found.append(f"line {line}: {match.group()}")
    return found


def test_the_scan_finds_typed_decimals_and_passes_rendered_ones():
    text = "PFENet scores 63.0 ({{ mean('g', 'pfenet') }}); `lr=0.9`; Python 3.10; Eq. 7.2; [x](a/b1.2.md)\n"
    assert typed_numbers(text) == ["line 1: 63.0"]
    assert typed_numbers("| a | {{ row('g', 'm', 0) }} | 4.4 |") == ["line 1: 4.4"]


@pytest.mark.parametrize("source", docs.sources(), ids=lambda p: p.relative_to(REPO / docs.SOURCES).as_posix())
def test_no_source_types_a_result_number(source):
    found = typed_numbers(source.read_text())
    assert not found, (f"{source.relative_to(REPO)} types numbers that a helper should compute "
                       f"(fsslib.docs.helpers), or that belong in ALLOWED with a reason: {found}")


# --- the helpers on fabricated results -----------------------------------------------------------------------------

def _write(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in columns} for row in rows)


def _row(method: str, fold: int, miou: float, seed: int = 0, shots: int = 1, ways: int = 1, variant: str = "") -> dict:
    return {"method": method, "variant": variant, "tier": "toy", "benchmark": "toy", "fold": fold, "ways": ways,
            "shots": shots, "train_shots": 1, "seed": seed, "episodes": 1000, "miou": miou, "fbiou": 70.0,
            "reference_miou": 9.0}


@pytest.fixture
def fabricated(tmp_path: Path) -> docs.Results:
    """A repository root with one grid (two methods on 4 folds), a comparison naming one seed grid, and a JSON."""
    results = tmp_path / "papermill_runs" / "results"
    _write(results / "g.csv", TABLE_COLUMNS,
           [_row("a", f, 60.0 + f + 0.05) for f in range(4)] + [_row("b", f, 61.0 + f) for f in range(4)])
    compare_columns = ("method", "variant", "support annotation", "model", "fold", "ways", "shots", "train_shots",
                       "seed", "episodes", "miou", "fbiou")
    _write(results / "cmp.csv", compare_columns, [_row(m, f, v + f) for m, v in (("a", 60.0), ("b", 62.0)) for f in range(4)])
    _write(results / "s.csv", TABLE_COLUMNS, [_row(m, 0, v + seed, seed=seed) for m, v in (("a", 61.0), ("b", 62.5))
                                               for seed in (1, 2)])
    (tmp_path / "papermill_runs" / "cmp.yaml").write_text("name: cmp\ncompare: true\nseeds: [s]\ngrid: {}\n")
    (tmp_path / "fsslib" / "checkpoints" / "zoo").mkdir(parents=True)
    (tmp_path / "fsslib" / "checkpoints" / "zoo" / "m.json").write_text(json.dumps({"test_rows": [{"miou": 62.44539}]}))
    (tmp_path / "fsslib" / "checkpoints" / "toy_x.json").write_text(json.dumps({"held_out": {"iou": 0.2141}}))
    return docs.Results(tmp_path)


def test_seed_gains_are_those_of_the_seed_runs_behind_a_comparison(fabricated):
    """The seed grid's page gives each run's last-quarter gain; a run of a method the comparison does not read from
    that grid (``c``) is not counted."""
    (fabricated.results / "s.md").write_text(
        "Learning curves: a-fold0-1shot-seed1 +1.2 ± 0.3 (rising), a-fold0-1shot-seed2 +0.1 ± 0.3 (within noise), "
        "b-fold0-1shot-seed1 +0.0 ± 0.2 (flat), c-fold0-1shot-seed1 +2.0 ± 0.2 (rising)\n")
    assert [str(gain) for gain in fabricated.seed_gains(comparison="cmp")] == ["+1.2", "+0.1", "0.0"]
    assert [str(gain) for gain in fabricated.seed_gains("rising", "cmp")] == ["+1.2"]
    assert fabricated.curve_runs("s", "rising") == ["a-fold0-1shot-seed1", "c-fold0-1shot-seed1"]
    assert len(fabricated.curve_runs("s")) == len(fabricated.gains("s")) == 4
    assert fabricated.has_table("s") and not fabricated.has_table("not_run_yet")


def test_mean_and_row_print_as_the_tables_do(fabricated):
    assert str(fabricated.mean("g", "a")) == shown(60.05 + 1.5) == "61.6"
    assert str(fabricated.row("g", "a", 2)) == "62.1"  # 62.05: a tie rounded up, as fsslib.tables.shown does
    assert str(fabricated.row("g", "b", 3, column="reference_miou")) == "9.0"


def test_folds_ahead_counts_the_folds_a_mean_would_hide(fabricated):
    """In grid g, b is above a on every fold (61 + f against 60.05 + f); one fold reversed is counted out."""
    assert fabricated.folds_ahead("g", "b", "a") == 4 and fabricated.folds_ahead("g", "a", "b") == 0
    _write(fabricated.results / "g.csv", TABLE_COLUMNS,
           [_row("a", f, 60.0 + f) for f in range(4)] + [_row("b", f, 61.0 + f - 2 * (f == 3)) for f in range(4)])
    assert docs.Results(fabricated.root).folds_ahead("g", "b", "a") == 3


def test_an_unknown_grid_method_or_fold_fails_naming_the_choices(fabricated):
    with pytest.raises(FsslibError, match=r"Unknown grid 'nope'(.|\n)*cmp, g, s"):
        fabricated.mean("nope", "a")
    with pytest.raises(FsslibError, match=r"Unknown method of grid g 'c'(.|\n)*a, b"):
        fabricated.row("g", "c", 0)
    with pytest.raises(FsslibError, match=r"Unknown fold of a in grid g 7(.|\n)*0, 1, 2, 3"):
        fabricated.row("g", "a", 7)
    with pytest.raises(FsslibError, match="setting of a in grid g"):
        fabricated.mean("g", "a", shots=5)


def test_seeds_span_the_comparisons_row_and_the_seed_grids(fabricated):
    span = fabricated.seeds("a", comparison="cmp")
    assert (str(span), str(span.mean)) == ("60.0-63.0", "61.7")  # seeds 0, 1, 2: 60.0, 62.0, 63.0
    with pytest.raises(FsslibError, match="Unknown method with training seeds"):
        fabricated.seeds("c", comparison="cmp")


def test_seeds_of_named_grids_read_only_those_tables(fabricated):
    """Models the comparison no longer reads (seed 0 in one grid, seeds 1 and 2 in another): their span comes from
    those grids alone, and a method they lack is named with the grids."""
    span = fabricated.seeds("b", grids=["g", "s"])
    assert span.values == (61.0, 63.5, 64.5)  # g's fold-0 row (seed 0), then s's seeds 1 and 2
    with pytest.raises(FsslibError, match="Unknown method with training seeds in g, s"):
        fabricated.seeds("c", grids=["g", "s"])


def test_diff_threshold_and_resolved_follow_the_protocols_rule(fabricated, monkeypatch):
    """The threshold is twice the standard error of a difference, 2 s sqrt(1/n1 + 1/n2), from the pooled seed
    spread s; a difference counts as resolved only above it, printed as words."""
    import math

    assert (str(docs.diff(62.44, 61.0)), str(docs.diff(61.0, 62.44)), str(docs.diff(61.02, 61.0))) == ("+1.4", "-1.4", "0.0")
    monkeypatch.setattr(fabricated, "spread", lambda setting="1-way 1-shot": docs.Number(1.5, 2))  # s = 1.5 points
    assert math.isclose(fabricated.threshold(4), 2 * 1.5 * math.sqrt(1 / 4 + 1 / 4))
    assert math.isclose(fabricated.threshold(1, 3), 2 * 1.5 * math.sqrt(1 + 1 / 3))
    assert str(fabricated.threshold(4)) == "2.12"  # two decimals
    above, below = fabricated.resolved(62.2, 60.0, 4), fabricated.resolved(62.0, 60.0, 4)  # 2.2 and 2.0 against 2.12
    assert bool(above) and str(above) == "resolved" and str(above.difference) == "+2.2"
    assert not below and str(below) == "not resolved"
    assert fabricated.resolved(60.0, 62.2, 4)  # either sign
    assert math.isclose(fabricated.threshold(1, s=2.5), 2 * 2.5 * math.sqrt(2))  # one method's own seed spread


def test_resolved_on_the_committed_comparison_reads_its_thresholds():
    results = docs.Results()
    page = (REPO / "papermill_runs" / "results" / "compare_toy.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith("| 1-way 1-shot | 4 |"))
    assert row.strip(" |").split(" | ")[3:6] == [str(results.threshold(1)), str(results.threshold(4)), str(results.threshold(3))]
    assert not results.resolved(62.0, 61.0, 4) and results.resolved(62.0, 60.0, 4)


def test_paper_preset_recorded_and_files(fabricated, tmp_path):
    assert str(fabricated.paper("piclip", "piclip")) == "71.2" and str(fabricated.paper("piclip", "pfenet", fold=0)) == "61.7"
    assert fabricated.preset("hdmnet", "batch_size", tier="paper") == 4
    with pytest.raises(FsslibError, match="setting of hdmnet's paper preset"):
        fabricated.preset("hdmnet", "nope", tier="paper")
    assert str(fabricated.zoo("m", "test_rows.0.miou", 2)) == "62.45"
    assert str(fabricated.recorded("toy_x", "held_out.iou", 3)) == "0.214"
    with pytest.raises(FsslibError, match=r"field of .*toy_x.json at 'nope'(.|\n)*iou"):
        fabricated.recorded("toy_x", "held_out.nope")
    counted = fabricated.files("fsslib/checkpoints", "*.json")
    assert counted.count == 1 and counted.size == (tmp_path / "fsslib" / "checkpoints" / "toy_x.json").stat().st_size


def test_at_plateau_reads_the_budget_record_a_zoo_model_s_json_holds(fabricated, tmp_path):
    """A model trained without the doubling control (no ``budget``) is not shown at its plateau; one whose record
    says the doubling moved it by less than the resolving difference is; a missing model names the choices."""
    zoo = tmp_path / "fsslib" / "checkpoints" / "zoo"
    for name, moved in (("flat", 0.4), ("rising", 2.6)):
        record = {"control": "g2", "move": moved, "resolved_threshold": 2.2, "at_plateau": moved < 2.2}
        (zoo / f"{name}.json").write_text(json.dumps({"epochs": 160, "budget": record}))
    assert fabricated.at_plateau("flat") and not fabricated.at_plateau("rising") and not fabricated.at_plateau("m")
    with pytest.raises(FsslibError, match="recorded file"):
        fabricated.at_plateau("nope")


def test_zoo_models_lists_a_grid_s_models_with_their_starts_and_machines(fabricated, tmp_path, monkeypatch):
    """A grid's zoo models are those whose command names its file; a record without ``hardware`` or ``sittings``
    predates them (one start, machine not recorded); one resumed on another machine names each CPU of its
    ``trained_on`` in order; an unknown grid names the grids that trained models."""
    zoo = tmp_path / "fsslib" / "checkpoints" / "zoo"
    command = "python -m fsslib.runs papermill_runs/{}.yaml  (run {})"
    (zoo / "a-fold0.json").write_text(json.dumps({
        "command": command.format("g", "a-fold0"), "method": "a", "git_commit": "0123456789abcdef", "sittings": 2,
        "hardware": {"processor": "AMD EPYC 9B45 (AuthenticAMD cpu family 26 model 2)"}}))
    (zoo / "b-fold0.json").write_text(json.dumps({"command": command.format("g", "b-fold0"), "method": "b",
                                                   "git_commit": "fedcba9876543210"}))
    (zoo / "c-fold0.json").write_text(json.dumps({"command": command.format("h", "c-fold0"), "method": "c",
                                                   "git_commit": "fedcba9876543210"}))
    (zoo / "d-fold0.json").write_text(json.dumps({
        "command": command.format("g", "d-fold0"), "method": "d", "git_commit": "0123456789abcdef", "sittings": 2,
        "hardware": {"processor": "Intel(R) Xeon(R) Processor (GenuineIntel cpu family 6 model 167)"},
        "trained_on": [{"processor": "AMD EPYC 9R14 (AuthenticAMD cpu family 25 model 17)", "epochs": [1, 5]},
                       {"processor": "Intel(R) Xeon(R) Processor (GenuineIntel cpu family 6 model 167)",
                        "epochs": [6, 8]}]}))
    assert fabricated.zoo_models("g") == [
        {"name": "a-fold0", "method": "a", "commit": "0123456", "sittings": 2,
         "machines": ["AMD EPYC (family 26 model 2)"]},
        {"name": "b-fold0", "method": "b", "commit": "fedcba9", "sittings": 1, "machines": []},
        {"name": "d-fold0", "method": "d", "commit": "0123456", "sittings": 2,
         "machines": ["AMD EPYC (family 25 model 17)", "Intel Xeon (family 6 model 167)"]}]
    with pytest.raises(FsslibError, match="use one of: g, h"):
        fabricated.zoo_models("nope")
    assert fabricated.zoo_machine("g") == ("an AMD EPYC (family 25 model 17), an AMD EPYC (family 26 model 2) and an "
                                           "Intel Xeon (family 6 model 167)")  # the recorded kinds, not the note
    with pytest.raises(FsslibError, match="UNRECORDED_ZOO_MACHINES"):
        fabricated.zoo_machine("h")  # no record, no note
    monkeypatch.setitem(docs.UNRECORDED_ZOO_MACHINES, "h", "an Intel Xeon virtual machine")
    assert fabricated.zoo_machine("h") == "an Intel Xeon virtual machine"


def test_zoo_training_minutes_are_the_records_fastest_and_slowest(fabricated, tmp_path):
    zoo = tmp_path / "fsslib" / "checkpoints" / "zoo"
    with pytest.raises(FsslibError, match="records its training time"):
        fabricated.zoo_training_minutes()
    for name, seconds in (("a", 75.0), ("b", 9711.9), ("c", 600.0)):
        (zoo / f"{name}.json").write_text(json.dumps({"train_time_s": seconds}))
    (zoo / "base-learner-fold0.json").write_text(json.dumps({"cpu_time_s": 3.0}))  # no training time: left out
    fastest, slowest = fabricated.zoo_training_minutes()
    assert (str(fastest), str(slowest)) == ("1", "162")


def test_listed_joins_items_as_a_sentence_does():
    assert [docs.listed(items) for items in ([], ["BAM"], ["BAM", "HDMNet"], ["BAM", "HDMNet", "the base learners"])] == [
        "", "BAM", "BAM and HDMNet", "BAM, HDMNet and the base learners"]


def test_a_stale_page_fails_the_check_naming_it_and_the_command(tmp_path, capsys):
    source = tmp_path / docs.SOURCES / "docs" / "page.md.j2"
    source.parent.mkdir(parents=True)
    source.write_text("Sum {{ num(1.25 + 1) }}.\n")
    (tmp_path / "docs" / "page.md").write_text("Sum 2.2.\n")
    assert docs.stale(tmp_path) == [tmp_path / "docs" / "page.md"]
    docs.write(tmp_path)
    assert (tmp_path / "docs" / "page.md").read_text().endswith("Sum 2.3.\n") and docs.stale(tmp_path) == []
    (tmp_path / "docs" / "page.md").write_text("edited by hand\n")
    assert docs.main(["--check"], root=tmp_path) == 1
    err = capsys.readouterr().err
    assert "stale: docs/page.md" in err and "make docs" in err
    assert docs.main([], root=tmp_path) == 0 and docs.main(["--check"], root=tmp_path) == 0


def test_gpu_hours_are_what_the_plan_prints(monkeypatch):
    from fsslib import metrics
    from fsslib.runs import plan

    results = docs.Results()
    assert float(results.gpu_hours("paper/lfss")) > 1  # the grid's settings, although the tests set FSSLIB_SMOKE
    monkeypatch.delenv("FSSLIB_SMOKE", raising=False)  # the plan of the grid as written, as `--plan` prints it
    for grid in ("lfss", "clip_dinoiser"):
        text = plan(REPO / "papermill_runs" / "paper" / f"{grid}.yaml")
        total, train, evaluation = re.search(
            r"GPU time, estimated: ([\d.]+) GPU-hours for \d+ runs? \(training ([\d.]+), evaluation ([\d.]+)\)", text).groups()
        assert str(results.gpu_hours(f"paper/{grid}")) == total
        assert shown(float(train), 1) == str(results.gpu_hours(f"paper/{grid}", part="train"))
        assert shown(float(evaluation), 1) == str(results.gpu_hours(f"paper/{grid}", part="eval"))
    per_run = re.search(r"  lfss trained on 1-shot.*?: ([\d.]+) GPU-hours per run.*?(\d+) runs",
                        plan(REPO / "papermill_runs" / "paper" / "lfss.yaml"))
    runs = int(per_run.group(2))  # the per-run hours are printed to 0.005: the sum agrees within runs x 0.005
    assert abs(results.gpu_hours("paper/lfss", "lfss", shots=1) - float(per_run.group(1)) * runs) <= 0.005 * runs + 0.05
    with pytest.raises(FsslibError, match=r"Unknown grid 'paper/nope'(.|\n)*paper/piclip"):
        results.gpu_hours("paper/nope")
    with pytest.raises(FsslibError, match="Unknown part"):
        results.gpu_hours("paper/lfss", part="wall")
    assert results.constant("fsslib.metrics", "PLATEAU_GAIN") == metrics.PLATEAU_GAIN
    with pytest.raises(FsslibError, match="Unknown constant of fsslib.metrics(.|\n)*PLATEAU_GAIN"):
        results.constant("fsslib.metrics", "plateau_gains")
    grids = results.paper_grids()
    assert "paper/piclip" in grids and "paper/lfss" in grids and grids == sorted(grids)
    assert all(f"for {results.runs(grid)} run" in plan(REPO / "papermill_runs" / f"{grid}.yaml") for grid in grids[:2])
    with pytest.raises(FsslibError, match=r"Unknown grid 'paper/nope'(.|\n)*quickstart"):
        results.runs("paper/nope")


def bench_page(root: Path, name: str, text: str) -> docs.Results:
    """The results of a repository root whose ``benchmarks/results/<name>.md`` is ``text``."""
    page = root / "benchmarks" / "results" / f"{name}.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return docs.Results(root)


def test_bench_count_counts_the_rows_holding_a_value(tmp_path):
    results = bench_page(tmp_path, "audit", "# audit\n\n| model | equal |\n|---|---|\n| a | yes |\n| b | no |\n"
                         "| c | yes |\n\nSecond\n\n| model | equal |\n|---|---|\n| a | no |\n")
    assert results.bench_count("audit", "equal", "yes") == 2 and results.bench_count("audit", "equal", "no") == 1
    assert results.bench_count("audit", "equal", "yes", table="Second") == 0
    assert results.bench_count("audit", "equal", "yes", among=["a", "b"]) == 1
    with pytest.raises(FsslibError, match="row of a table"):
        results.bench_count("audit", "equal", "yes", among=["d"])
    with pytest.raises(FsslibError, match="column of a table"):
        results.bench_count("audit", "same", "yes")


def test_bench_reads_a_number_before_its_unit_and_a_column_of_numbers(tmp_path):
    results = bench_page(tmp_path, "speed", "| measurement | value |\n|---|---|\n| eval | 215 episodes/s |\n"
                         "| loop | 36.5 ms (5.5x the batched time) |\n| ratio | 1.71x |\n| share | 12.5% |\n"
                         "| pair | 3.49 / 0.72 |\n| word | fast |\n| other | 2 3 |\n")
    read = [str(results.bench("speed", r, "value")) for r in ("eval", "loop", "ratio", "share")]
    assert read == ["215", "36.5", "1.71", "12.5"]
    assert str(results.bench("speed", "pair", "value", part=1)) == "0.72"
    for row in ("word", "other"):  # no number first, or two numbers with no unit between: refused, not guessed
        with pytest.raises(FsslibError, match="is not a number"):
            results.bench("speed", row, "value")
    assert [str(v) for v in results.bench_column("speed", "value", rows=["eval", "ratio"])] == ["215", "1.71"]
    assert results.bench_rows("speed")[1] == {"measurement": "loop", "value": "36.5 ms (5.5x the batched time)"}
    ratio = bench_page(tmp_path, "speed", "| what | x |\n|---|---|\n| step | 0.93x (IQR 0.93-0.94) |\n")
    assert str(ratio.bench("speed", "step", "x")) == "0.93"


def test_bench_gain_and_sd_read_what_the_pages_print():
    results = docs.Results()
    page = (REPO / "benchmarks" / "results" / "two_way_errors_toy.md").read_text()
    assert f"| HDMNet | {results.bench('two_way_errors_toy', 'HDMNet', '2-way mIoU')} |" in page
    assert str(results.bench("two_way_errors_toy", "VVP, last block", "AUC", table="VVP alone, raw**")) in page
    with pytest.raises(FsslibError, match="row of a table"):
        results.bench("two_way_errors_toy", "nope", "found")
    curves = next(l for l in (REPO / "papermill_runs" / "results" / "fem_path_control.md").read_text().splitlines()
                  if l.startswith("Learning curves:"))
    run = "pfenet-fold0-1shot-seed0"
    assert f"{run} {results.gain('fem_path_control', run)} ± {results.gain('fem_path_control', run, error=True)}" in curves
    assert len(results.gains("fem_path_control")) == 2
    assert str(docs.sd([1.0, 2.0, 3.0])) == "1.0"


def test_a_stratum_s_episode_count_prints_as_an_integer_and_the_strata_add_up():
    results = docs.Results()
    grid, pair, grouping = "piclip_hdmnet_fill_control", "piclip-hdmnet - hdmnet", "fill distractor in the query"
    counts = [results.stratum(grid, pair, grouping, stratum, "episodes") for stratum in ("yes", "no")]
    assert all(str(count) == str(int(count)) for count in counts)  # "182", not "+182.0"
    assert sum(counts) == 1000  # every test episode of the grid in one of the two strata


def test_the_first_epoch_audit_is_read_by_training_machine_code_and_kernels(tmp_path):
    """``first_epoch_audit``: the report's machine (its provenance line), the families grouped by the machine
    that trained them (a record's CPU, else the grid's noted machine), which ones today's code moved, and whether
    capping the kernels reaches a record; the protocol's paragraph renders from it."""
    header = ("| model | grid | trained at commit | on | epochs | recorded validation mIoU | today's | equal to the "
              "record | at its commit, here | equal to today's |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = ("| bam-fold0-1shot | piclip_baselines_toy | abc1234 | AMD EPYC 9R45 (AuthenticAMD cpu family 26 model 2) "
            "| 1 | 24.5 | 24.5 | yes | 24.5 | yes |\n"
            "| piclip-bam-fold0-1shot | piclip_baselines_toy | abc1234 | AMD EPYC 9R45 (AuthenticAMD cpu family 26 "
            "model 2) | 1 | 38.5 | 38.1 | no | 38.5 | no |\n"
            "| pfenet-fold0-1shot | zoo_toy | def5678 | not recorded | 2 | 0.0, 0.1 | 0.0, 1.4 | no | 0.0, 1.4 | yes |\n"
            "| qgnet-fold0-1shot | qgnet_toy | 123abcd + | not recorded | 1 | 0.6 | 0.6 | yes | not checked |  |\n")
    cause = ("\n## The families today's code moved, trained on either side of commit 0a1b2c3\n\n"
             "The commit's subject begins: Prompts encoded alone.\n\n| model | at its parent | at the commit | the "
             "parent gives the recorded commit's | the commit gives today's |\n|---|---|---|---|---|\n"
             "| piclip-bam-fold0-1shot | 38.5 | 38.1 | yes | yes |\n")
    kernels = ("\n## pfenet-fold0-1shot's first 2 epochs with the math libraries' instruction sets capped\n\nText.\n\n"
               "| kernels | environment | validation mIoU |\n|---|---|---|\n| this CPU's own | none | 0.0, 1.4 |\n"
               "| MKL at AVX2 | `MKL_ENABLE_INSTRUCTIONS=AVX2` | 0.0, 0.1 |\n")
    provenance = ("\nProduced with torch 2.x; commit abc; device cpu, CPU Intel(R) Xeon(R) Processor (GenuineIntel cpu "
                  "family 6 model 167), 2 cores.\n")
    results = bench_page(tmp_path, "zoo_first_epoch_toy", "# audit\n\n" + header + rows + cause + kernels + provenance)
    audit = results.first_epoch_audit()
    assert audit["machine"] == "Intel Xeon (family 6 model 167)" and audit["families"] == 4
    assert docs.UNRECORDED_ZOO_MACHINES["zoo_toy"] == docs.UNRECORDED_ZOO_MACHINES["qgnet_toy"]  # one group
    assert audit["groups"] == [{"machine": "an AMD EPYC (family 26 model 2)", "families": 2, "repeat": 1},
                               {"machine": docs.UNRECORDED_ZOO_MACHINES["zoo_toy"], "families": 2, "repeat": 1}]
    assert (audit["checked"], audit["same_code"], audit["code_moved"]) == (3, 2, ["piclip-bam-fold0-1shot"])
    assert audit["machine_moved"] == ["pfenet-fold0-1shot"]  # its recorded commit's code trains other epochs here
    assert audit["differ"] == ["piclip-bam-fold0-1shot", "pfenet-fold0-1shot"] and audit["unrecorded"] == 2
    assert audit["kernels"] == {"model": "pfenet-fold0-1shot", "moved": True, "reaches_record": True}
    assert audit["cause"] == {"commit": "0a1b2c3", "subject": "Prompts encoded alone",
                              "moved": ["piclip-bam-fold0-1shot"]}

    heading_only = bench_page(tmp_path, "zoo_first_epoch_toy", "# audit (toy tier, commit abc, on Intel(R) Xeon(R) "
                              "Processor (GenuineIntel cpu family 6 model 167))\n\n" + header + rows)
    assert heading_only.first_epoch_audit()["machine"] == "Intel Xeon (family 6 model 167)"
    assert heading_only.first_epoch_audit()["kernels"] is None and heading_only.first_epoch_audit()["cause"] is None

    rendered = docs.render()[REPO / "docs" / "protocol.md"]
    shown = docs.Results().first_epoch_audit()
    assert f"On an {shown['machine']}, each family's fold-0" in rendered
    assert ("Today's code moved the first epochs of" in rendered) == bool(shown["code_moved"])
    assert ("not the code." in rendered) == bool(shown["machine_moved"])
    assert ("Trained on either side of commit" in rendered) == bool(shown["code_moved"] and shown["cause"])
