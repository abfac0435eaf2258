"""Committed notebooks carry no outputs; the papermill grid runner works end to end (smoke)."""
import csv
import json
import os
from pathlib import Path

import nbformat
import pytest

from fsslib import runs
from fsslib.errors import FsslibError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(notebook.cells)
             if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; strip them (see README, 'Contributing')"


def test_train_eval_notebook_has_one_parameters_cell():
    notebook = nbformat.read(REPO / "notebooks" / "90_train_eval.ipynb", as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for name in ("method", "variant", "preset", "fold", "shots", "seed", "device", "smoke", "out_dir"):
        assert f"{name} = " in tagged[0].source


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(FsslibError, match="--jobs"):
        runs.execute(REPO / "papermill_runs" / "quickstart.yaml", smoke=True, outputs=tmp_path, jobs=0)


def test_grid_expansion():
    grid = runs.load_grid(REPO / "papermill_runs" / "quickstart.yaml")
    expanded = runs.expand(grid)
    assert len(expanded) == len(set(map(runs.run_name, expanded)))
    assert {(r["method"], r["fold"], r["shots"]) for r in expanded} >= {("prototype", f, k) for f in range(4) for k in (1, 5)}


def test_table_adds_means_over_folds(tmp_path):
    def row(method, fold, shots, miou):
        return {"method": method, "variant": "", "tier": "toy", "benchmark": "toy", "fold": fold, "shots": shots,
                "seed": 0, "episodes": 10, "miou": miou, "fbiou": 50.0, "reference_miou": 9.0}

    rows = [row("a", 0, 1, 20.0), row("a", 1, 1, 31.0), row("a", 0, 5, 40.0), row("b", 0, 1, 10.0)]
    assert runs.fold_means(rows + [row("b", 0, 1, 12.0)]) == runs.fold_means(rows)  # fold 0 twice: no mean
    means = runs.fold_means(rows)
    assert [(m["method"], m["shots"], m["folds"], m["miou"]) for m in means] == [("a", 1, 2, 25.5)]
    runs.write_table(rows, tmp_path / "t")
    text = (tmp_path / "t.md").read_text()
    assert "Mean over folds:" in text and "| a |  | toy | toy | 1 | 0 | 2 | 25.5 | 50.0 | 9.0 |" in text
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 5  # the CSV holds the runs only


@pytest.mark.slow
def test_papermill_smoke_run(tmp_path, toy_root):
    grid = tmp_path / "tiny.yaml"
    grid.write_text("name: tiny\nnotebook: notebooks/90_train_eval.ipynb\nfixed: {preset: toy, seed: 0}\n"
                    "grid: {method: [prototype, all-foreground], fold: [1], shots: [1]}\n")
    working_directory = os.getcwd()
    rows = runs.execute(grid, smoke=True, outputs=tmp_path / "outputs", results=tmp_path / "results", jobs=2)
    assert os.getcwd() == working_directory  # papermill's chdir stays inside each run's process
    assert [(r["method"], r["fold"]) for r in rows] == [("prototype", 1), ("all-foreground", 1)]  # grid order
    executed = tmp_path / "outputs" / "prototype-fold1-1shot-seed0"
    assert (executed / "90_train_eval.ipynb").is_file()
    assert json.loads((executed / "metrics.json").read_text())["episodes"] == 40
    with (tmp_path / "results" / "tiny_smoke.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert table[0]["method"] == "prototype" and table[0]["tier"] == "toy" and float(table[0]["miou"]) >= 0
    assert len(table) == 2 and float(table[1]["miou"]) == pytest.approx(float(table[1]["reference_miou"]))
    assert (tmp_path / "results" / "tiny_smoke.md").read_text().startswith("| method |")
