"""The lessons are committed executed and the grids' template without outputs; the papermill grid runner works end
to end (smoke)."""
import csv
import json
import os
from pathlib import Path

import nbformat
import torch
import pytest

from fsslib import metrics, runs, tables
from fsslib.config import make_config
from fsslib.errors import FsslibError
from fsslib.lessons import lessons, solutions

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_MB = 15  # every lesson and solution together, executed


def test_the_grids_template_carries_no_outputs():
    notebook = nbformat.read(REPO / "notebooks" / "90_train_eval.ipynb", as_version=4)
    dirty = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))]
    assert not dirty, f"90_train_eval.ipynb: cells {dirty} have outputs; clear them (jupyter nbconvert --clear-output)"


@pytest.mark.parametrize("path", lessons() + solutions(), ids=lambda p: p.relative_to(REPO / "notebooks").as_posix())
def test_lessons_and_solutions_are_committed_executed_in_order(path):
    """Executed by ``python -m fsslib.lessons`` (``make notebooks``): every code cell ran, top to bottom, in one kernel."""
    notebook = nbformat.read(path, as_version=4)
    counts = [cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: run `python -m fsslib.lessons {path}`"
    assert notebook.metadata.get("fsslib", {}).get("executed_in_s", 0) > 0
    assert "widgets" not in notebook.metadata  # a widget's state does not travel; its static figure does


def test_every_lesson_ends_with_exercises_whose_solutions_are_tested():
    """Each lesson but the set-up check (00) has an Exercises section, and its solutions notebook (run by nbval)."""
    with_solutions = {path.name for path in solutions()}
    for lesson in lessons()[1:]:
        cells = nbformat.read(lesson, as_version=4).cells
        headings = [line for cell in cells if cell.cell_type == "markdown" for line in cell.source.splitlines()
                    if line.startswith("#")]
        assert any("Exercises" in heading for heading in headings), f"{lesson.name} has no Exercises section"
        assert lesson.name in with_solutions, f"{lesson.name}: its solutions belong in notebooks/solutions/{lesson.name}"
    assert with_solutions <= {lesson.name for lesson in lessons()}


def test_the_readme_lists_every_lesson_with_the_minutes_it_took():
    from fsslib.lessons import minutes_to_run

    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip() for line in (REPO / "README.md").read_text().splitlines()
            if line.startswith("| `") and line.split("|")[1].strip(" `")[:2].isdigit()}
    assert set(rows) == {lesson.stem for lesson in lessons()}
    for lesson in lessons():
        assert rows[lesson.stem] == str(minutes_to_run(lesson)), lesson.name


def test_the_executed_lessons_stay_small():
    size = sum(path.stat().st_size for path in lessons() + solutions())
    assert size < NOTEBOOKS_MB * 2**20, f"the executed notebooks take {size / 2**20:.1f} MB; shrink their figures (dpi, size)"


def test_train_eval_notebook_has_one_parameters_cell():
    notebook = nbformat.read(REPO / "notebooks" / "90_train_eval.ipynb", as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("method", "variant", "preset", "fold", "shots", "test_shots", "ways", "test_ways", "seed", "device", "smoke", "out_dir",
                 "lr", "resume"):
        assert f"{name} = " in tagged[0].source


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(FsslibError, match="--jobs and --threads"):
        runs.execute(REPO / "papermill_runs" / "quickstart.yaml", smoke=True, outputs=tmp_path, jobs=0)


@pytest.mark.budget(30)
def test_every_grid_file_plans_and_an_unknown_paper_is_named(tmp_path, capsys):
    """``--plan`` runs nothing and reads every committed grid file as a run would: a toy grid reads only files the
    checkout holds (a relative path in its options is read from the notebook's folder, where its runs execute); a
    ``paper`` entry that fsslib.papers does not know is refused before anything runs, naming the papers it knows."""
    toy = sorted((REPO / "papermill_runs").glob("*.yaml"))
    for grid in toy + sorted((REPO / "papermill_runs" / "paper").glob("*.yaml")):
        runs.main([str(grid), "--plan"])
        printed = capsys.readouterr().out
        assert printed.startswith("Grid ") and (grid not in toy or "MISSING" not in printed), (grid.name, printed)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text((REPO / "papermill_runs" / "prototype_toy.yaml").read_text() + "paper: PI-CLIP\n")
    with pytest.raises(SystemExit):
        runs.main([str(wrong), "--plan"])
    said = capsys.readouterr().err
    assert "names paper 'PI-CLIP'" in said and "one of piclip, lfss" in said and "Traceback" not in said
    wrong.write_text("name: x\nfixed:\n  options: {base_learner: fold{fold}.pt}\n")  # braces unquoted
    with pytest.raises(SystemExit):
        runs.main([str(wrong), "--plan"])
    said = capsys.readouterr().err
    assert "is not valid YAML" in said and "needs quotes" in said and "Traceback" not in said
    wrong.write_text((REPO / "papermill_runs" / "prototype_toy.yaml").read_text() + "fixd: {shots: 5}\n")  # a typo
    with pytest.raises(SystemExit):
        runs.main([str(wrong), "--plan"])
    said = capsys.readouterr().err
    assert "has entries ['fixd']" in said and "fixed" in said and "Traceback" not in said


def test_grid_expansion():
    grid = tables.load_grid(REPO / "papermill_runs" / "prototype_toy.yaml")
    expanded = runs.expand(grid)
    assert len(expanded) == len(set(map(runs.run_name, expanded)))
    # one model per fold, trained on 1-shot episodes, evaluated at 1 and 5 shots
    assert [(r["method"], r["fold"], r["shots"], r["test_shots"]) for r in expanded] == [
        ("prototype", f, 1, [1, 5]) for f in range(4)]
    assert (grid["jobs"], grid["threads"]) == (2, 1)


def test_the_main_job_trains_one_model_live_and_sets_every_method_beside_it_on_the_same_episodes():
    from fsslib.compare import trains_live

    grid = tables.load_grid(REPO / "papermill_runs" / "quickstart.yaml")
    expanded = runs.expand(grid)
    runs.check_parameters(grid, expanded)
    assert grid["compare"] and [r["method"] for r in expanded if trains_live(r)] == ["prototype"]
    assert {r["method"] for r in expanded} == {"all-foreground", "maskclip", "pfenet", "piclip", "lfss", "qgnet",
                                             "clip-dinoiser", "clip-dinoiser-support", "prototype", "bam", "piclip-bam",
                                             "hdmnet", "piclip-hdmnet"}
    assert {(r["fold"], r.get("episodes", 1000), tuple(r["test_ways"]), tuple(r["test_shots"])) for r in expanded} == {(0, 1000, (1,), (1,))}
    assert (grid["jobs"], grid["threads"]) == (2, 1)


def test_table_adds_means_over_folds(tmp_path):
    def row(method, fold, shots, miou):
        return {"method": method, "variant": "", "tier": "toy", "benchmark": "toy", "fold": fold, "ways": 1, "shots": shots,
                "train_shots": shots, "seed": 0, "episodes": 10, "miou": miou, "fbiou": 50.0, "reference_miou": 9.0,
                "torch": "2.x", "commit": "abc", "device": "cpu"}

    rows = [row("a", 0, 1, 20.0), row("a", 1, 1, 31.0), row("a", 0, 5, 40.0), row("b", 0, 1, 10.0)]
    assert tables.fold_means(rows + [row("b", 0, 1, 12.0)]) == tables.fold_means(rows)  # fold 0 twice: no mean
    means = tables.fold_means(rows)
    assert [(m["method"], m["shots"], m["folds"], m["miou"]) for m in means] == [("a", 1, 2, 25.5)]
    curves = {"a-fold0": [{"epoch": e, "val_miou": v} for e, v in enumerate([10, 20, 30, 31, 30, 31, 31, 30], 1)],
              "a-fold1": [{"epoch": e, "val_miou": v} for e, v in enumerate([10, 20, 30, 32, 34, 36, 38, 40], 1)]}
    tables.write_table(rows, tmp_path / "t", curves)
    text = (tmp_path / "t.md").read_text()
    assert "Mean over folds (means of the per-fold values as committed" in text  # 20.0 and 31.0: one decimal only
    assert "| a |  | toy | toy | 1 | 1 | 1 | 0 | 2 | 25.5 | 50.0 | 9.0 |" in text
    assert "Produced with torch 2.x; commit abc; device cpu." in text  # rows that name no CPU: none named
    tables.write_table([{**r, "processor": "AMD EPYC"} for r in rows[:2]] + rows[2:], tmp_path / "cpu")
    named = "Produced with torch 2.x; commit abc; device cpu; processor AMD EPYC, not recorded."
    assert named in (tmp_path / "cpu.md").read_text()
    assert "1 of 2 runs flat (under 1 point), 0 within noise (under 2 standard errors), 1 rising. Per run:\n\n" \
           "| run | last-quarter gain | standard error | verdict |\n|---|---|---|---|\n" \
           "| a-fold0 | +0.0 | 0.7 | flat |\n| a-fold1 | +4.0 | 0.0 | rising |\n" in text
    assert tables.run_gains(text) == [("a-fold0", "+0.0", "0.7", "flat"), ("a-fold1", "+4.0", "0.0", "rising")]
    assert (tmp_path / "t_curves.png").stat().st_size > 0
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 5  # the CSV holds the runs only


def test_means_over_folds_are_taken_of_the_unrounded_values(tmp_path):
    """PFENet's zoo models score 63.285, 64.612, 62.657 and 63.166 (shown 63.3, 64.6, 62.7, 63.2): their mean is 63.43,
    shown 63.4; the mean of the values shown, 63.45, would have printed 63.5."""
    def row(fold, miou):
        return {"method": "pfenet", "variant": "", "tier": "toy", "benchmark": "toy", "fold": fold, "ways": 1,
                "shots": 1, "train_shots": 1, "seed": 0, "episodes": 1000, "miou": miou, "fbiou": 80.0 + fold / 8,
                "reference_miou": 9.0, "torch": "t", "commit": "c", "device": "cpu"}

    exact = [63.285164, 64.611507, 62.657194, 63.166436]
    rows = [row(fold, miou) for fold, miou in enumerate(exact)]
    shown = [float(f"{miou:.1f}") for miou in exact]
    assert f"{sum(shown) / 4:.1f}" == "63.5" and f"{tables.fold_means(rows)[0]['miou']:.1f}" == "63.4"
    tables.write_table(rows, tmp_path / "t")
    text = (tmp_path / "t.md").read_text()
    assert "Mean over folds (means of the unrounded per-fold values):" in text and "| 4 | 63.4 |" in text
    assert [r["miou"] for r in tables.read_table(tmp_path / "t.csv")] == [63.2852, 64.6115, 62.6572, 63.1664]
    assert tables.comparison_table(tables.read_table(tmp_path / "t.csv"), [])[1]["mean"] == "63.4"  # beside: the CSV's
    (tmp_path / "g.yaml").write_text("name: t\nnotebook: n.ipynb\ngrid: {}\n")
    tables.refresh_from_csv(tmp_path / "g.yaml", results=tmp_path)  # from the committed CSV: the same mean
    assert (tmp_path / "t.md").read_text() == text


def test_comparison_sets_other_grids_rows_beside_on_the_same_episodes(tmp_path):
    def row(method, fold, shots, miou, variant="", seed=0, train_shots=1):
        return {"method": method, "variant": variant, "tier": "toy", "benchmark": "toy", "fold": fold, "ways": 1,
                "shots": shots, "train_shots": train_shots, "seed": seed, "episodes": 10, "miou": miou, "fbiou": 50.0,
                "reference_miou": 9.0 + fold, "torch": "2.x", "commit": "abc", "device": "cpu"}

    ours = [row("lfss", 0, 1, 40.0), row("lfss", 1, 1, 42.0), row("lfss", 0, 1, 30.0, variant="baseline"),
            row("lfss", 0, 1, 45.0, seed=1)]  # a second training seed on seed 0's episodes (test_seed 0)
    tables.write_table([row("pfenet", 0, 1, 50.0), row("pfenet", 1, 1, 53.0), row("pfenet", 0, 1, 99.0, seed=7)],
                     tmp_path / "other")
    beside = tables.read_table(tmp_path / "other.csv")  # strings and floats, as committed
    table = tables.comparison_table(ours, beside)
    assert [(r["method"], r["support annotation"], r["fold 0"], r["fold 1"], r["mean"]) for r in table] == [
        ("all-foreground", "none", "9.0", "10.0", "9.5"),
        ("lfss", "class names", "40.0", "42.0", "41.0"),  # the variant is an ablation, seed 1 a spread: not beside
        ("pfenet", "pixel masks", "50.0", "53.0", "51.5"),  # seed 7 ran other episodes: left out
    ]
    tables.write_table(ours, tmp_path / "t", beside=beside)
    assert "| pfenet | pixel masks | 1 | 1 | 1 | 50.0 | 53.0 | 51.5 |" in (tmp_path / "t.md").read_text()
    with pytest.raises(FsslibError, match="run its grid first"):
        tables.read_table(tmp_path / "missing.csv")


def test_results_page_is_an_index_and_each_grid_s_page_holds_its_answer_curves_and_notes(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "a.yaml").write_text("# Does x win? Grid a trains it (Sec. 4.1).\n# Run: python -m fsslib.runs a.yaml  (one\n"
                                     "# notebook, 2 minutes)\n"
                                     "name: a\nnotebook: n.ipynb\ngrid: {}\n")
    (tmp_path / "b.yaml").write_text("name: b\nnotebook: n.ipynb\ngrid: {}\n")  # no table yet: not run
    (tmp_path / "c.yaml").write_text("# All side by side.\nname: c\ncompare: true\ngrid: {}\n")
    row = {"method": "pfenet", "variant": "", "tier": "toy", "benchmark": "toy", "fold": 0, "ways": 1, "shots": 1,
           "train_shots": 1, "seed": 0, "episodes": 1000, "miou": 61.0, "fbiou": 70.0, "reference_miou": 9.0}
    tables.write_table([row], tmp_path / "results" / "a")
    with (tmp_path / "results" / "a.md").open("a") as page:
        page.write("\nLearning curves: 1 of 2 runs under 1 point (plateau); largest 1.2.\n")  # the older form
    (tmp_path / "results" / "a_curves.png").write_bytes(b"")
    (tmp_path / "a.answer.md").write_text("Yes, by 2 points.\n")
    (tmp_path / "a.summary.md").write_text("Against the paper's claim.\n")
    (tmp_path / "a.notes.md").write_text("## Why\n\nWhy x wins.")
    page = tables.write_results_page(tmp_path).read_text()
    assert page.index("## Contents") < page.index("## The methods side by side") < page.index("## Every grid")
    assert "No comparison made yet." in page and "`python -m fsslib.runs papermill_runs/c.yaml`" in page
    assert "`python -m fsslib.runs papermill_runs/b.yaml`" in page and "[Every grid](#every-grid): [a](#a)" in page
    assert ("### a\n\n**Question.** Does x win? **Answer.** Yes, by 2 points. [Full page](results/a.md) (plateau: "
            "1 of 2 runs flat, the others not settled).") in page
    assert "Why x wins" not in page and "| pfenet |" not in page  # the notes and the table stay on the page
    full = (tmp_path / "results" / "a.md").read_text()
    assert full.startswith("# a\n") and ("Does x win? Grid a trains it (Sec. 4.1).\n\n**Answer.** Yes, by 2 points.\n\n"
                                          "**Summary.** Against the paper's claim.") in full
    assert full.index("**Answer.**") < full.index("| pfenet |") < full.index("![validation learning curves of a](a_curves.png)")
    assert "from the older sentence above: 1 of 2 runs flat" in full
    assert tables.SHIPPED_ROWS not in full  # a grid that writes no zoo model: its rows are the only ones
    assert tables.older_verdict("Learning curves: 4 of 11 runs under 1 point (plateau); largest 2.0.") == (4, 11)
    assert tables.older_verdict("8 of 24 runs flat (under 1 point), 2 within noise") is None
    assert [tables.older_verdict_words(*counts) for counts in ((3, 3), (1, 1))] == ["all 3 runs flat", "its one run flat"]
    assert "the grid must run again" in full and full.rstrip().endswith("### Why\n\nWhy x wins.")
    assert tables.write_results_page(tmp_path).read_text() == page and (tmp_path / "results" / "a.md").read_text() == full
    tables.refresh_from_csv(tmp_path / "a.yaml", results=tmp_path / "results")  # a finished page refreshes as before
    assert (tmp_path / "results" / "a.md").read_text() == full
    (tmp_path / "results" / "c.md").write_text("# c: the methods side by side\n\nThe table:\n\n| m | 1-way |\n|---|---|\n"
                                              "| x | 61.0 |\n\n## Rows per fold\n\n| 192 rows |\n")
    page = tables.write_results_page(tmp_path).read_text()
    assert "### c\n\n**Question.** All side by side. **Answer.** Not written yet (`papermill_runs/c.answer.md`). " in page
    assert "(results/c.md).\n\n| m | 1-way |\n|---|---|\n| x | 61.0 |\n\n## Every grid" in page  # its first table
    assert (tmp_path / "results" / "c.md").read_text().startswith("# c: the methods side by side\n\n<!--")
    (tmp_path / "z.yaml").write_text("name: z\nnotebook: n.ipynb\nzoo: true\ngrid: {}\n")  # its runs go into the zoo
    tables.write_table([row], tmp_path / "results" / "z")
    tables.write_results_page(tmp_path)
    shipped = (tmp_path / "results" / "z.md").read_text()
    assert shipped.index("Made by") < shipped.index(tables.SHIPPED_ROWS) < shipped.index("| pfenet |")


def test_plateau_gain_compares_the_last_two_quarters():
    flat = [{"val_miou": v} for v in (0, 10, 20, 50, 51, 49, 50, 50)]  # quarters of 2: (50 + 50) / 2 - (51 + 49) / 2
    rising = [{"val_miou": v} for v in range(8)]
    assert metrics.plateau_gains({"flat": flat, "rising": rising}) == {"flat": 0.0, "rising": 2.0}


def test_plateau_verdicts_weigh_the_gain_against_the_curve_s_own_noise():
    steady = [{"val_miou": 50 + 0.25 * e} for e in range(40)]  # +2.5 per quarter, no noise at all
    swinging = [{"val_miou": 50 + (3 if e % 2 else -3) + 0.2 * e} for e in range(40)]  # +2 per quarter, +-3 swings
    verdicts = tables.plateau_verdicts({"steady": steady, "swinging": swinging, "flat": steady[:5] + [{"val_miou": 60}] * 35})
    assert verdicts["steady"] == (2.5, 0.0, "rising") and verdicts["flat"][2] == "flat"
    gain, error, verdict = verdicts["swinging"]
    # first differences alternate +6.2 / -5.8: their variance over 20 steps is 36.0 * 20 / 19, half of it the
    # noise of one validation, and a difference of two means of 10 has twice that over 10
    assert gain == pytest.approx(2.0) and error == pytest.approx((36.0 * 20 / 19 / 2 * 2 / 10) ** 0.5)
    assert verdict == "within noise" and metrics.gain_standard_error(steady[:6]) is None  # quarters of 1: no spread



def test_a_run_s_printed_gain_shows_its_verdict_and_reads_back():
    # 0.96 (flat) and 1.04 (rising) both round to +1.0, and a printed +1.0 is not under 1 point: 0.96 needs two
    # decimals, 1.04 not; 1.45 against 2 x 0.74 is within noise, but 1.4 < 2 x 0.7 is not
    rows = [tables.run_gain_row(label, gain, error, metrics.plateau_verdict(gain, error))
            for label, gain, error in (("a", 0.96, 0.2), ("b", 1.04, 0.2), ("c", 1.45, 0.74), ("d", 2.5, 0.1),
                                       ("e", 3.0, None))]
    assert rows == ["| a | +0.96 | 0.20 | flat |", "| b | +1.0 | 0.2 | rising |", "| c | +1.45 | 0.74 | within noise |",
                    "| d | +2.5 | 0.1 | rising |", "| e | +3.0 | not measured | rising |"]
    page = "\n".join(["Learning curves: `g_curves.png`. Per run:", "", "| run | gain | error | verdict |",
                       "|---|---|---|---|", *rows, "", "| another | +9.9 | 0.1 | flat |"])
    assert tables.run_gains(page) == [("a", "+0.96", "0.20", "flat"), ("b", "+1.0", "0.2", "rising"),
                                      ("c", "+1.45", "0.74", "within noise"), ("d", "+2.5", "0.1", "rising")]
    older = "Learning curves: per run: a +0.5 ± 0.1 (flat), b +1.2 ± 0.3 (rising)."  # pages before the table
    assert tables.run_gains(older) == [("a", "+0.5", "0.1", "flat"), ("b", "+1.2", "0.3", "rising")]
    assert tables.run_gains("No curves here.") == []
    for gain, error in ((0.96, 0.2), (1.04, None), (1.45, 0.74), (1.4999, 0.75), (3.0, 0.2)):
        places = metrics.verdict_decimals(gain, error)
        printed = float(f"{gain:.{places}f}"), None if error is None else float(f"{error:.{places}f}")
        assert metrics.plateau_verdict(*printed) == metrics.plateau_verdict(gain, error)


@pytest.mark.slow
def test_papermill_smoke_run(tmp_path, toy_root):
    grid = tmp_path / "tiny.yaml"
    # 24 test episodes: their 1-way episodes draw every class of fold 1 (16 and 20 do not), and the notebook checks that
    # each class is scored
    grid.write_text("name: tiny\nnotebook: notebooks/90_train_eval.ipynb\n"
                    "fixed: {preset: toy, seed: 0, episodes: 24, test_shots: [1, 2], test_ways: [1, 2]}\n"
                    "grid: {method: [prototype, all-foreground], fold: [1], shots: [1]}\n")
    working_directory = os.getcwd()
    rows = runs.execute(grid, smoke=True, outputs=tmp_path / "outputs", results=tmp_path / "results", jobs=2)
    assert os.getcwd() == working_directory  # papermill's chdir stays inside each run's process
    # grid order; one trained model evaluated at 1 and 2 ways, each at 1 and 2 shots
    settings = [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert [(r["method"], r["ways"], r["shots"]) for r in rows] == [
        (method, ways, shots) for method in ("prototype", "all-foreground") for ways, shots in settings]
    executed = tmp_path / "outputs" / "prototype-fold1-1shot-seed0"
    assert (executed / "90_train_eval.ipynb").is_file()
    record = json.loads((executed / "metrics.json").read_text())
    assert [r["episodes"] for r in record["rows"]] == [24] * 4 and len(record["history"]) == 1
    assert len({r["train"]["checkpoint"] for r in record["rows"]}) == 1  # the same model at every ways and shots
    with (tmp_path / "results" / "tiny_smoke.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert table[0]["method"] == "prototype" and table[0]["tier"] == "toy" and table[0]["train_shots"] == "1"
    assert table[1]["shots"] == "2" and table[1]["train_shots"] == "1" and table[4]["train_shots"] == ""
    assert len(table) == 8 and float(table[4]["miou"]) == pytest.approx(float(table[4]["reference_miou"]))
    assert float(table[6]["miou"]) < float(table[4]["miou"])  # 2-way: way 2's pixels are all wrong
    assert (tmp_path / "results" / "tiny_smoke.md").read_text().startswith("| method |")
    # --resume: a finished run is read back, an interrupted one continues from its last.pt (nothing to retrain)
    kept = tmp_path / "outputs" / "all-foreground-fold1-1shot-seed0" / "metrics.json"
    before = kept.stat().st_mtime_ns
    (executed / "metrics.json").unlink()
    again = runs.execute(grid, smoke=True, outputs=tmp_path / "outputs", results=tmp_path / "results", jobs=2, resume=True)
    assert kept.stat().st_mtime_ns == before and [r["miou"] for r in again] == [r["miou"] for r in rows]
    assert len(json.loads((executed / "metrics.json").read_text())["history"]) == 1  # resumed, not trained again


def test_a_grid_sets_method_options_through_the_notebook(tmp_path, toy_root):
    """`options` in a grid reach the run's Config (over the variant's) and are recorded in its rows."""
    grid = tmp_path / "options.yaml"
    grid.write_text("name: options\nnotebook: notebooks/90_train_eval.ipynb\n"
                    "fixed: {preset: toy, seed: 0, options: {feature_dim: 16}}\ngrid: {method: [prototype], fold: [1]}\n")
    rows = runs.execute(grid, smoke=True, outputs=tmp_path / "outputs", results=tmp_path / "results", jobs=1)
    record = json.loads((tmp_path / "outputs" / "prototype-fold1-1shot-seed0" / "metrics.json").read_text())
    assert len(rows) == 1 and record["rows"][0]["options"]["feature_dim"] == 16
    weights = torch.load(record["rows"][0]["train"]["checkpoint"], map_location="cpu", weights_only=False)
    assert any(tensor.shape[0] == 16 for tensor in weights["model"].values() if tensor.ndim == 4)  # built with it


@pytest.mark.slow
def test_a_committed_row_is_reproduced(tmp_path, toy_root, monkeypatch):
    """MaskCLIP, fold 0 (training-free): re-executed through the papermill notebook, it gives the committed mIoU."""
    monkeypatch.delenv("FSSLIB_SMOKE")  # the full 1000 episodes, as the committed run
    grid = tmp_path / "row.yaml"
    grid.write_text("name: row\nnotebook: notebooks/90_train_eval.ipynb\nfixed: {preset: toy, seed: 0, shots: 1}\n"
                    "grid: {method: [maskclip], fold: [0]}\n")
    (row,) = runs.execute(grid, outputs=tmp_path / "outputs", results=tmp_path / "results")
    with (REPO / "papermill_runs" / "results" / "clip_toy.csv").open() as handle:
        committed = next(r for r in csv.DictReader(handle) if r["fold"] == "0" and r["ways"] == "1")
    assert row["episodes"] == int(committed["episodes"]) == 1000
    # the CSV keeps four decimals; a training-free run repeats them (a CPU of another kind may round the last)
    assert row["miou"] == pytest.approx(float(committed["miou"]), abs=1e-3)
    assert row["fbiou"] == pytest.approx(float(committed["fbiou"]), abs=1e-3)


def test_table_only_rewrites_a_grid_s_table_from_its_outputs(tmp_path):
    from fsslib.errors import DatasetNotFoundError

    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nnotebook: notebooks/90_train_eval.ipynb\nfixed: {preset: toy}\n"
                    "grid: {method: [prototype], fold: [0, 1], shots: [1]}\n")
    outputs = tmp_path / "outputs"
    with pytest.raises(DatasetNotFoundError, match="run the grid itself"):
        runs.rewrite_table(grid, outputs, results=tmp_path / "results")
    for fold, miou in ((0, 40.0), (1, 50.0)):
        run = outputs / runs.run_name({"method": "prototype", "fold": fold, "shots": 1})
        run.mkdir(parents=True)
        row = {"method": "prototype", "variant": "", "tier": "toy", "benchmark": "toy", "fold": fold, "ways": 1,
               "shots": 1, "train_shots": 1, "seed": 0, "episodes": 10, "miou": miou, "fbiou": 60.0,
               "reference_miou": 9.0, "torch": "t", "commit": "c", "device": "cpu"}
        history = [{"epoch": e, "val_miou": 30.0 + e} for e in range(1, 9)]
        (run / "metrics.json").write_text(json.dumps({"rows": [row], "history": history}))
    rows = runs.rewrite_table(grid, outputs, results=tmp_path / "results")
    assert [r["miou"] for r in rows] == [40.0, 50.0]
    table = (tmp_path / "results" / "g.md").read_text()
    assert "| prototype |  | toy | toy | 1 | 1 | 1 | 0 | 2 | 45.0 |" in table and "0 of 2 runs flat" in table
    # after `--set fold=1`, --table-only reads that run's own outputs and writes the <name>_set table
    set_run = tmp_path / "outputs_set" / runs.run_name({"method": "prototype", "fold": 1, "shots": 1})
    set_run.mkdir(parents=True)
    (set_run / "metrics.json").write_text((outputs / set_run.name / "metrics.json").read_text().replace("50.0", "55.0"))
    rows = runs.rewrite_table(grid, tmp_path / "outputs_set", results=tmp_path / "results", settings=["fold=1"])
    assert [r["miou"] for r in rows] == [55.0] and (tmp_path / "results" / "g_set.md").is_file()


def test_from_csv_writes_the_means_and_the_comparison_again_from_committed_tables(tmp_path):
    def row(method, fold, miou):
        return {"method": method, "variant": "", "tier": "toy", "benchmark": "toy", "fold": fold, "ways": 1, "shots": 1,
                "train_shots": 1, "seed": 0, "episodes": 10, "miou": miou, "fbiou": 60.0, "reference_miou": 9.0,
                "torch": "t", "commit": "c", "device": "cpu"}

    results = tmp_path / "results"
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nnotebook: notebooks/90_train_eval.ipynb\nbeside: [other]\n"
                    "fixed: {preset: toy}\ngrid: {method: [prototype], fold: [0, 1], shots: [1]}\n")
    with pytest.raises(FsslibError, match="no committed table"):
        tables.refresh_from_csv(grid, results=results)
    tables.write_table([row("pfenet", 0, 30.0), row("pfenet", 1, 40.0)], results / "other")
    curves = {"g-fold0": [{"epoch": e, "val_miou": 30.0 + e} for e in range(1, 9)]}
    tables.write_table([row("prototype", 0, 20.0), row("prototype", 1, 24.0)], results / "g", curves,
                     tables.read_table(results / "other.csv"))
    before = (results / "g.md").read_text()
    assert "| pfenet | pixel masks | 1 | 1 | 1 | 30.0 | 40.0 | 35.0 |" in before
    tables.write_table([row("pfenet", 0, 50.0), row("pfenet", 1, 60.0)], results / "other")  # 'other' is re-run
    assert [r["miou"] for r in tables.refresh_from_csv(grid, results=results)] == [20.0, 24.0]
    after = (results / "g.md").read_text()
    assert "| pfenet | pixel masks | 1 | 1 | 1 | 50.0 | 60.0 | 55.0 |" in after and "30.0 | 40.0" not in after
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(after.splitlines()) == len(before.splitlines()) and len(changed) == 1  # only that row; the rest kept
    (tmp_path / "plain.yaml").write_text("name: other\nnotebook: notebooks/90_train_eval.ipynb\ngrid: {method: [pfenet]}\n")
    mean_line = "| pfenet |  | toy | toy | 1 | 1 | 1 | 0 | 2 | 55.0 | 60.0 | 9.0 |"
    other = (results / "other.md").read_text()
    (results / "other.md").write_text(other.replace(mean_line, mean_line.replace("55.0", "54.9")))  # an older mean rule
    tables.refresh_from_csv(tmp_path / "plain.yaml", results=results)  # no 'beside': the means alone
    assert (results / "other.md").read_text() == other


def test_grids_may_set_only_the_notebook_s_parameters(tmp_path):
    accepted = runs.notebook_parameters(runs.REPO / "notebooks" / "90_train_eval.ipynb")
    assert {"method", "variant", "fold", "shots", "epochs", "lr", "smoke", "out_dir"} <= accepted
    grid = {"name": "g", "notebook": "notebooks/90_train_eval.ipynb"}
    run = {"method": "prototype", "fold": 0, "shots": 1}
    runs.check_parameters(grid, [{**run, "lr": 0.003}])
    with pytest.raises(FsslibError, match="learning_rate"):
        runs.check_parameters(grid, [{**run, "learning_rate": 0.003}])
    with pytest.raises(FsslibError, match="several runs named prototype-fold0-1shot-seed0"):
        runs.check_parameters(grid, [run, {**run, "test_ways": [1, 2]}])
    with pytest.raises(FsslibError, match=r"piclip-fold0-1shot-seed0 trains on 1-shot episodes and is evaluated at shots \[1, 5\]"):
        runs.check_parameters(grid, [{**run, "method": "piclip", "test_shots": [1, 5]}])
    runs.check_parameters(grid, [{**run, "method": "piclip", "variant": "vtp", "test_shots": [1, 5]},  # no VVP: any shots
                                 {**run, "method": "pfenet", "test_shots": [1, 5]}])
    refused = r"(?s)Grid g, run prototype-fold9-1shot-seed0: --fold 9 is not a fold of benchmark 'toy', which has 4\."
    with pytest.raises(FsslibError, match=refused + r".*--fold 0, 1, 2 or 3.*--set some_name=VALUE"):
        runs.check_parameters(grid, [run, {**run, "fold": 9}])  # refused before any run trains
    for path in sorted((runs.REPO / "papermill_runs").glob("*.yaml")):  # every committed grid runs what it says
        grid = tables.load_grid(path)
        runs.check_parameters(grid, runs.expand(grid))
        for run in runs.expand(grid):  # methods and variants exist
            make_config(method=run["method"], variant=run.get("variant", ""), preset=run.get("preset", "toy"))


def _pinned_versions() -> dict[str, str]:
    """Package name (lower case, '-' for '_') -> version pinned in constraints.txt."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_the_constraints_pin_every_dependency_and_the_tables_torch():
    """``make install`` installs under constraints.txt: it pins every dependency of pyproject.toml, and the
    torch version every committed table records (``Produced with torch ...``) is the pinned one."""
    import re
    import tomllib

    pins = _pinned_versions()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(d for group in project["optional-dependencies"].values() for d in group)]
    names = {re.split(r"[<>=\[ ]", d)[0].lower().replace("_", "-") for d in wanted if not d.startswith("fsslib")}
    assert not names - set(pins), f"constraints.txt pins no version of {sorted(names - set(pins))}"
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
    recorded = {}
    for table in sorted((REPO / "papermill_runs" / "results").glob("*.md")):
        for version in re.findall(r"Produced with torch ([^;,\s]+)", table.read_text()):
            recorded[table.name] = version.split("+")[0]
    assert recorded, "no committed table records its torch version"
    other = {name: version for name, version in recorded.items() if version != pins["torch"]}
    assert not other, f"tables made with another torch than constraints.txt's {pins['torch']}: {other}"


ANSWERS = {  # the README's answer table: paper -> (its paper file, method, baseline, baseline's label in the row)
    "PI-CLIP": ("piclip_prior_information_with_clip.md", "piclip", "pfenet", "PFENet"),
    "PI-CLIP on BAM": ("piclip_prior_information_with_clip.md", "piclip-bam", "bam", "BAM"),
    "PI-CLIP on HDMNet": ("piclip_prior_information_with_clip.md", "piclip-hdmnet", "hdmnet", "HDMNet"),
    "LFSS": ("lfss_language_guided_fss.md", "lfss", "pfenet", "PFENet"),
    "CLIP-DINOiser with support images": ("clip_dinoiser_support_images.md", "clip-dinoiser-support", "clip-dinoiser",
                                          "text CLIP-DINOiser"),
    "QGNet": ("qgnet_global_local_contrastive.md", "qgnet", "pfenet", "PFENet"),
}
SEED_GRIDS = ("zoo_seeds_toy", "qgnet_seeds_toy", "family_seeds_toy", "piclip_baselines_seeds_toy")  # compare_toy.yaml's seeds, a later grid's rows replacing an earlier's
PAPERS = REPO.parent / "shared" / "papers"  # the papers' texts, beside the repository (CI has them)


def _answer_rows() -> dict[str, list[str]]:
    lines = (REPO / "README.md").read_text().split("## What the four papers do on the toy tier")[1].splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    return {row[0]: row for row in cells[1:]}


def _fold0_seed_range(method: str, compared: list[dict]) -> str:
    """min-max over the training seeds of fold 0, 1-way 1-shot: seed 0 from the comparison, others from SEED_GRIDS."""
    by_seed = {0: next(r["miou"] for r in compared if (r["method"], r["variant"], r["fold"], r["ways"], r["shots"])
                       == (method, "", 0, 1, 1))}
    for grid in SEED_GRIDS:
        for r in tables.read_table(REPO / "papermill_runs" / "results" / f"{grid}.csv"):
            if (r["method"], r["variant"], r["fold"], r["ways"], r["shots"], r["train_shots"]) == (method, "", "0", "1", "1", "1"):
                by_seed[int(r["seed"])] = r["miou"]
    assert sorted(by_seed) == [0, 1, 2], (method, by_seed)
    return f"{tables.shown(min(by_seed.values()))}-{tables.shown(max(by_seed.values()))}"


@pytest.mark.parametrize("paper", sorted(ANSWERS))
def test_the_readme_answers_are_the_committed_numbers(paper):
    """Each toy number of the README's answer table is compare_toy's mean over the 4 folds (1-way 1-shot) of the method
    or its baseline, each bracket the fold-0 range of its three training seeds, and each paper number stands in the
    paper's own text."""
    import re

    from fsslib.compare import comparison_table, read_comparison

    row = _answer_rows()[paper]
    paper_file, method, baseline, label = ANSWERS[paper]
    compared = read_comparison("compare_toy", REPO / "papermill_runs" / "results")[0]
    means = {entry["method"]: entry["1-way 1-shot mIoU"] for entry in comparison_table(compared)}
    toy = row[2]
    assert toy.startswith(f"{tables.shown(means[method])} / {label} {tables.shown(means[baseline])}"), toy
    if baseline == "clip-dinoiser":  # the trained adapter and text MaskCLIP beside the strata's pair
        from statistics import fmean

        adapter = fmean(r["miou"] for r in compared if (r["method"], r["variant"], r["ways"], r["shots"])
                        == ("clip-dinoiser-support", "trained_adapter", 1, 1))
        beside = f"; trained adapter {tables.shown(adapter)}; text MaskCLIP {tables.shown(means['maskclip'])}"
        assert toy.endswith(beside), toy
    if "training-free" not in toy:
        ranges = f"(fold-0 seeds: {_fold0_seed_range(method, compared)} / {_fold0_seed_range(baseline, compared)})"
        assert toy.endswith(ranges), (toy, ranges)
    if (PAPERS / paper_file).is_file():  # a clone without shared/ beside it cannot check the papers' numbers
        text = (PAPERS / paper_file).read_text()
        for number in re.findall(r"\d+\.\d", row[1]):  # 4.8 stands as 0.0483 in its paper
            assert number in text or f"0.0{number.replace('.', '')}" in text, (paper, number)


def test_the_committed_results_pages_are_what_the_tables_answers_and_notes_write(tmp_path):
    """RESULTS.md and the grids' pages are written, never edited: assembled again from the committed grids, tables,
    answers and notes, they are the committed pages (run ``python -m fsslib.runs GRID --from-csv`` after editing a
    note or an answer); the index stays short: tables for the comparisons only, every other grid its question and
    answer in one line under its heading."""
    import shutil

    source = REPO / "papermill_runs"
    shutil.copytree(source, tmp_path / "papermill_runs", ignore=shutil.ignore_patterns("outputs"))
    written = tables.write_results_page(tmp_path / "papermill_runs").read_text()
    assert written == (source / "RESULTS.md").read_text()
    side_by_side, every_grid = written.split("\n## Every grid\n")
    blocks = every_grid.split("\n\nThe paper tier's reproduction grids")[0].split("\n### ")[1:]
    assert len(blocks) == len(list(source.glob("*.yaml"))) - side_by_side.count("\n### ")
    assert all(len([line for line in block.splitlines() if line.strip()]) == 2 for block in blocks)
    assert side_by_side.count("\n### ") == 2 and not any(line.startswith("| ") for line in every_grid.splitlines())
    for page in sorted((source / "results").glob("*.md")):
        assert (tmp_path / "papermill_runs" / "results" / page.name).read_text() == page.read_text(), page.name


def test_papermill_reads_every_parameter_of_the_train_eval_notebook():
    """papermill parses a parameters cell line by line and reads a trailing comment as a type hint; a line it cannot
    parse is left out of its parameters (and warned about on every run), so each one must parse."""
    import papermill

    notebook = REPO / "notebooks" / "90_train_eval.ipynb"
    assert set(papermill.inspect_notebook(str(notebook))) == runs.notebook_parameters(notebook)


def test_the_readme_docs_and_results_pages_link_to_files_and_sections_that_exist():
    """Every relative link of the README, docs/, the READMEs of benchmarks/ and the checkpoints, RESULTS.md and the
    grids' pages names a file that exists, and every section of a markdown file that a link names is a heading
    there (code blocks left out)."""
    import re

    def headings(file: Path) -> set[str]:
        return {re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in file.read_text().splitlines() if line.startswith("#")}

    pages = [REPO / "README.md", REPO / "papermill_runs" / "RESULTS.md", *sorted((REPO / "docs").rglob("*.md")),
             REPO / "benchmarks" / "README.md", *sorted((REPO / "fsslib" / "checkpoints").rglob("README.md")),
             *sorted((REPO / "papermill_runs" / "results").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", page.read_text(), flags=re.S)):
            path, _, anchor = target.partition("#")
            if target.startswith("http"):
                continue
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), (page.name, target)
            if anchor and file.suffix == ".md":
                assert anchor in headings(file), (page.name, target)
