"""papermill_runs/in_training/carry.py: a grid's finished runs go to the carried folder in float16 and come back
as a folder that ``--resume`` keeps; unfinished runs stay behind."""
import importlib.util
import json

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
