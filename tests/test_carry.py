"""papermill_runs/in_training/carry.py: a grid's finished runs go to the carried folder in float16 and come back
as a folder that ``--resume`` keeps; unfinished runs stay behind."""
import importlib.util
import json

import pytest
import torch

from fsslib.tables import REPO

spec = importlib.util.spec_from_file_location("carry", REPO / "papermill_runs" / "in_training" / "carry.py")
carry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(carry)


def test_finished_runs_are_carried_in_float16_and_come_back(tmp_path):
    outputs, folder, back = tmp_path / "outputs", tmp_path / "carried", tmp_path / "back"
    weights = {"w": torch.randn(3, 2), "steps": torch.tensor([7])}
    finished, unfinished = outputs / "bam-fold0-1shot-seed0", outputs / "bam-fold1-1shot-seed0"
    for run in (finished, unfinished):
        run.mkdir(parents=True)
        torch.save({"method": "bam", "model": weights, "epoch": 3}, run / "best.pt")
        (run / "log.jsonl").write_text('{"epoch": 1}\n')
    (finished / "metrics.json").write_text(json.dumps({"rows": []}))

    assert carry.save(outputs, folder) == [finished.name]
    assert carry.save(outputs, folder) == []  # carried once
    state = torch.load(folder / finished.name / "best.pt", weights_only=True)
    assert state["model"]["w"].dtype == torch.float16 and state["model"]["steps"].dtype == torch.int64
    torch.testing.assert_close(state["model"]["w"].float(), weights["w"].half().float())
    assert (state["method"], state["epoch"]) == ("bam", 3)

    back.mkdir()
    assert carry.load(folder, back) == [finished.name]
    assert sorted(p.name for p in (back / finished.name).iterdir()) == ["best.pt", "log.jsonl", "metrics.json"]


def test_a_rung_keeps_the_rows_provenance_and_gains_of_its_runs_from_the_table_that_held_them(tmp_path):
    """``rung``: a grid naming some runs at the settings another grid ran them with gets those runs' 1-way rows,
    that table's provenance line and those runs' last-quarter gains; a run the table lacks is named."""
    from fsslib.errors import FsslibError
    from fsslib.tables import TABLE_COLUMNS, read_table, write_table

    results = tmp_path / "results"
    rows = [{"method": method, "variant": variant, "tier": "toy", "benchmark": "toy", "fold": 0, "ways": ways,
             "shots": 1, "train_shots": 1, "seed": 0, "episodes": 1000, "miou": miou, "fbiou": 80.0,
             "reference_miou": 9.0}
            for method, variant, ways, miou in (("a", "", 1, 61.25), ("a", "", 2, 50.0), ("a", "v", 1, 62.5),
                                                ("b", "", 1, 63.0))]
    write_table(rows, results / "src")
    page = (results / "src.md").read_text().replace("Produced with torch None; commit None; device None.",
                                                     "Produced with torch 2.x; commit abc; device cpu.")
    curves = ("Learning curves: `src_curves.png`. Per run: a-fold0-1shot-seed0 +1.2 ± 0.3 (rising), "
              "a-v-fold0-1shot-seed0 +0.4 ± 0.2 (flat), b-fold0-1shot-seed0 +0.1 ± 0.2 (flat).")
    (results / "src.md").write_text(f"{page}\n{curves}\n")
    grid = tmp_path / "old.yaml"
    grid.write_text("name: old\nnotebook: notebooks/90_train_eval.ipynb\nfixed: {preset: toy, seed: 0, shots: 1, "
                    "test_shots: [1], epochs: 80}\ngrid: {fold: [0], method: [a]}\n"
                    "extra:\n  - {method: a, variant: v, fold: 0}\n")

    assert carry.rung(grid, "src", results) == ["a-fold0-1shot-seed0", "a-v-fold0-1shot-seed0"]
    kept = read_table(results / "old.csv")
    assert [(r["method"], r["variant"], r["ways"], r["miou"]) for r in kept] == [("a", "", "1", 61.25),
                                                                                  ("a", "v", "1", 62.5)]
    assert list(kept[0]) == list(TABLE_COLUMNS)
    written = (results / "old.md").read_text()
    assert "Produced with torch 2.x; commit abc; device cpu." in written
    assert "a-fold0-1shot-seed0 +1.2 ± 0.3 (rising), a-v-fold0-1shot-seed0 +0.4 ± 0.2 (flat)." in written
    assert "b-fold0" not in written

    grid.write_text(grid.read_text().replace("method: [a]", "method: [a, c]"))
    with pytest.raises(FsslibError, match="missing: c-fold0-1shot-seed0"):
        carry.rung(grid, "src", results)
