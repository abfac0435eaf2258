"""LFSS's mask benchmark (benchmarks/lfss_pseudo_masks.py --trained): the zoo's four models always, then the grids'
trained variants, skipping a run folder that holds no weights."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "lfss_pseudo_masks.py"
spec = importlib.util.spec_from_file_location("lfss_pseudo_masks", SCRIPT)
lfss_pseudo_masks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lfss_pseudo_masks)


def test_the_trained_models_are_the_zoo_s_then_the_variants_with_weights(tmp_path, capsys):
    for name in ("lfss-fold0-1shot-seed0", "lfss-alpha0.1-fold0-1shot-seed0", "lfss-pfenet_augment-fold2-1shot-seed0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text("{}")  # run folders copied for their tables only
    zoo = [("", fold, "zoo") for fold in range(4)]
    assert lfss_pseudo_masks.trained_models([tmp_path]) == zoo
    assert "only the zoo's models are scored" in capsys.readouterr().out
    for name in ("lfss-fold0-1shot-seed0", "lfss-pfenet_augment-fold2-1shot-seed0"):
        (tmp_path / name / "best.pt").write_bytes(b"")
    assert lfss_pseudo_masks.trained_models([tmp_path]) == zoo + [  # the zoo's own run is not scored twice
        ("pfenet_augment", 2, str(tmp_path / "lfss-pfenet_augment-fold2-1shot-seed0" / "best.pt"))]


@pytest.mark.budget(60)
def test_trained_masks_score_the_zoo_s_models_as_percentages(tmp_path):
    rows = [row.strip("| ").split(" | ") for row in lfss_pseudo_masks.trained_masks(2, [tmp_path])]
    assert [row[:2] for row in rows] == [["(full model, the zoo)", str(fold)] for fold in range(4)]
    assert all(0.0 <= float(score) <= 100.0 for row in rows for score in row[2:])
