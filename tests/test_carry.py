"""papermill_runs/in_training/carry.py: a grid's finished runs go to the carried folder in float16 and come back
as a folder that ``--resume`` keeps; runs in flight go in full precision and come back to be continued."""
import importlib.util
import json
import subprocess
import sys
import time

import pytest
import torch

from fsslib.tables import REPO

spec = importlib.util.spec_from_file_location("carry", REPO / "papermill_runs" / "in_training" / "carry.py")
carry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(carry)


def _run(folder, epoch=None, finished=False, weights=None):
    """A run folder as training leaves it: ``best.pt`` and a log, ``last.pt`` after ``epoch`` epochs, and
    ``metrics.json`` once finished."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = weights if weights is not None else {"w": torch.randn(3, 2), "steps": torch.tensor([7])}
    torch.save({"method": "bam", "model": weights, "epoch": 3}, folder / "best.pt")
    (folder / "log.jsonl").write_text('{"epoch": 1}\n')
    if epoch is not None:
        torch.save({"model": weights, "epoch": epoch, "optimizer": {"momentum": torch.ones(2)}}, folder / "last.pt")
    if finished:
        (folder / "metrics.json").write_text(json.dumps({"rows": []}))
    return weights


def test_finished_runs_are_carried_in_float16_and_come_back(tmp_path):
    outputs, folder, back = tmp_path / "outputs", tmp_path / "carried", tmp_path / "back"
    finished, unstarted = outputs / "bam-fold0-1shot-seed0", outputs / "bam-fold1-1shot-seed0"
    weights = _run(finished, finished=True)
    _run(unstarted)  # a best.pt without last.pt or metrics: nothing to carry

    assert carry.save(outputs, folder) == [finished.name]
    assert carry.save(outputs, folder) == []  # carried once
    state = torch.load(folder / finished.name / "best.pt", weights_only=True)
    assert state["model"]["w"].dtype == torch.float16 and state["model"]["steps"].dtype == torch.int64
    torch.testing.assert_close(state["model"]["w"].float(), weights["w"].half().float())
    assert (state["method"], state["epoch"]) == ("bam", 3)

    back.mkdir()
    assert carry.load(folder, back) == [finished.name]
    assert sorted(p.name for p in (back / finished.name).iterdir()) == ["best.pt", "log.jsonl", "metrics.json"]


def test_a_run_in_flight_is_carried_whole_and_comes_back_unless_the_outputs_are_further_along(tmp_path):
    """A run with ``last.pt`` and no metrics is copied in full precision, again each time it moves on; it comes
    back where the outputs hold it at fewer epochs, and once finished its float16 copy replaces the carried one."""
    outputs, folder = tmp_path / "outputs", tmp_path / "carried"
    run = outputs / "hdmnet-fold0-1shot-seed0"
    weights = _run(run, epoch=5)
    assert carry.save(outputs, folder) == [run.name]
    assert carry.save(outputs, folder) == []  # the same epoch: nothing new
    carried = torch.load(folder / run.name / "last.pt", weights_only=True)
    assert carried["epoch"] == 5 and carried["model"]["w"].dtype == torch.float32
    torch.testing.assert_close(carried["model"]["w"], weights["w"], rtol=0, atol=0)

    _run(run, epoch=6, weights=weights)
    (run / "log.jsonl").write_text("".join(f'{{"epoch": {e}}}\n' for e in range(1, 8)))  # epoch 7 ended meanwhile
    assert carry.save(outputs, folder) == [run.name]
    assert torch.load(folder / run.name / "last.pt", weights_only=True)["epoch"] == 6
    assert len((folder / run.name / "log.jsonl").read_text().splitlines()) == 6  # as far as last.pt: not logged twice
    behind = tmp_path / "behind"
    _run(behind / run.name, epoch=2)
    assert carry.save(behind, folder) == []  # outputs behind the carried copy do not replace it

    fresh, ahead = tmp_path / "fresh", tmp_path / "ahead"
    assert carry.load(folder, fresh) == [run.name]
    assert sorted(p.name for p in (fresh / run.name).iterdir()) == ["best.pt", "last.pt", "log.jsonl"]
    _run(ahead / run.name, epoch=9)
    assert carry.load(folder, ahead) == []
    assert torch.load(ahead / run.name / "last.pt", weights_only=True)["epoch"] == 9

    _run(run, epoch=7, finished=True, weights=weights)
    assert carry.save(outputs, folder) == [run.name]
    assert sorted(p.name for p in (folder / run.name).iterdir()) == ["best.pt", "log.jsonl", "metrics.json"]
    assert torch.load(folder / run.name / "best.pt", weights_only=True)["model"]["w"].dtype == torch.float16
    assert carry.load(folder, ahead) == [run.name]  # a finished run replaces one in flight


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


@pytest.fixture
def schedule(monkeypatch):
    """papermill_runs/in_training/piclip_baselines_384.py as a module."""
    spec = importlib.util.spec_from_file_location("schedule", REPO / "papermill_runs" / "in_training" /
                                                  "piclip_baselines_384.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "schedule", module)  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_the_retraining_schedule_waits_for_each_fold_s_base_learner_and_carries_its_partial_file(schedule, tmp_path,
                                                                                                  monkeypatch):
    """piclip_baselines_384.py: a fold's grid runs start once its base learner is finished; a base learner in flight
    is carried as its partial file and comes back into a fresh clone, where ``--resume`` continues it."""
    here = tmp_path / "in_training"
    monkeypatch.setattr(schedule, "HERE", here)
    monkeypatch.setattr(schedule, "BASE_LEARNERS", here / "base_learner_384")
    checked = []
    monkeypatch.setattr(schedule, "check_commit", checked.append)  # the clones here are plain folders
    clone, fresh = tmp_path / "clone", tmp_path / "fresh"
    (clone / schedule.BUDGET_FOLDER).mkdir(parents=True)
    (fresh / schedule.BUDGET_FOLDER).mkdir(parents=True)
    (fresh / "papermill_runs").mkdir()
    here.mkdir()
    (here / "piclip_hdmnet_two_way_control.yaml").write_text("name: piclip_hdmnet_two_way_control\n")
    for fold, text in ((0, "fold 0"), (1, "fold 1")):
        schedule.base_learner(clone, fold).write_text(text)
        schedule.base_learner(clone, fold).with_suffix(".json").write_text("{}")
    schedule.partial(schedule.base_learner(clone, 2)).write_text("epoch 7 of fold 2")

    ready = {step.name: step.ready() for step in schedule.steps(clone)}
    done = {step.name: step.done() for step in schedule.steps(clone)}
    assert done["base-learner-fold1"] and not done["base-learner-fold2"] and not done["base-learner-fold3"]
    assert ready["piclip_baselines_toy-fold0"] and ready["piclip_baselines_toy-fold1"]
    assert not ready["piclip_baselines_toy-fold2"] and not ready["piclip_baselines_toy-fold3"]
    assert ready["piclip_baselines_seeds_toy"] and ready["piclip_hdmnet_two_way_control"]

    schedule.save(clone)
    assert sorted(p.name for p in (here / "base_learner_384").iterdir()) == [
        "fold1-e384-s0.json", "fold1-e384-s0.pt", "fold2-e384-s0.partial.pt"]
    schedule.clone_if_missing(fresh)
    schedule.prepare(fresh)
    assert schedule.base_learner(fresh, 1).read_text() == "fold 1"
    assert schedule.partial(schedule.base_learner(fresh, 2)).read_text() == "epoch 7 of fold 2"
    assert not schedule.base_learner(fresh, 2).exists()
    assert (fresh / "papermill_runs" / "piclip_hdmnet_two_way_control.yaml").is_file()  # the grid file as it lands
    assert checked == [fresh]
    assert not schedule.finished(schedule.base_learner(clone, 2))  # weights without their .json: not finished yet

    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "left by a schedule"])
    try:  # a step left running by a schedule that died is found, so that a new schedule does not run it twice
        found = False
        for _ in range(600):  # until the new process shows its command line (at most 30 s)
            found = schedule.already_running([sys.executable, "-c", "import time; time.sleep(60)", "left by a schedule"])
            if found:
                break
            time.sleep(0.05)
        assert found
        assert not schedule.already_running([sys.executable, "-c", "import time; time.sleep(60)", "another"])
    finally:
        left.kill()


def test_a_missing_clone_is_cloned_before_the_schedule_writes_into_it(schedule, tmp_path, monkeypatch):
    """``start`` on a folder that does not exist clones it (the schedule's logs must not make it exist first)."""
    seen = []
    monkeypatch.setattr(schedule, "clone_if_missing", lambda clone: seen.append(clone.exists()))
    monkeypatch.setattr(schedule, "prepare", lambda clone: (_ for _ in ()).throw(SystemExit("stop here")))
    with pytest.raises(SystemExit, match="stop here"):
        schedule.start(tmp_path / "new")
    assert seen == [False]


def test_each_sitting_s_cpu_and_start_tell_which_cpu_trained_which_epochs(schedule, tmp_path, monkeypatch):
    """A sitting records its CPU and where each step starts from (the clone's base learners and runs); a sitting
    trained the epochs up to the next one's start, so the spans follow even when a clone outlived its sitting;
    the landing writes them into the records as today's trainer does."""
    monkeypatch.setattr(schedule, "BASE_LEARNERS", tmp_path / "carried")
    clone = tmp_path / "clone"
    (clone / schedule.BUDGET_FOLDER).mkdir(parents=True)
    torch.save({"epoch": 82}, schedule.partial(schedule.base_learner(clone, 3)))
    outputs = clone / "papermill_runs" / "outputs" / schedule.GRIDS["piclip_baselines_toy"]
    _run(outputs / "bam-fold0-1shot-seed0", epoch=146)
    (outputs / "hdmnet-fold0-1shot-seed0").mkdir(parents=True)
    (outputs / "hdmnet-fold0-1shot-seed0" / "train_summary.json").write_text(json.dumps({"epochs": 160}))
    sittings = tmp_path / "sittings.jsonl"
    sittings.write_text(json.dumps({"started": "day 1", "processor": "AMD", "positions": {}}) + "\n")
    monkeypatch.setattr(schedule, "cpu_model", lambda: "Xeon")
    schedule.record_sitting(clone, sittings)
    written = json.loads(sittings.read_text().splitlines()[1])
    assert written["processor"] == "Xeon" and written["positions"] == {
        "base-learner-fold3": 82, "piclip_baselines_toy/bam-fold0-1shot-seed0": 146,
        "piclip_baselines_toy/hdmnet-fold0-1shot-seed0": 160}
    assert schedule.trained_on_spans("base-learner-fold3", 384, sittings) == [
        {"processor": "AMD", "epochs": [1, 82]}, {"processor": "Xeon", "epochs": [83, 384]}]
    assert schedule.trained_on_spans("piclip_baselines_toy/hdmnet-fold0-1shot-seed0", 160, sittings) == [
        {"processor": "AMD", "epochs": [1, 160]}]  # finished before the second sitting
    assert schedule.trained_on_spans("piclip_baselines_toy/piclip-bam-fold0-1shot-seed0", 160, sittings) == [
        {"processor": "Xeon", "epochs": [1, 160]}]  # not started before it

    sittings.write_text(sittings.read_text() + json.dumps({"processor": "AMD", "positions": {"base-learner-fold3": 90}})
                        + "\n")  # the next sitting carried on from epoch 90: epochs 83-90 were the second's
    assert schedule.trained_on_spans("base-learner-fold3", 384, sittings) == [
        {"processor": "AMD", "epochs": [1, 82]}, {"processor": "Xeon", "epochs": [83, 90]},
        {"processor": "AMD", "epochs": [91, 384]}]
    sittings.write_text(sittings.read_text() + json.dumps({"processor": "AMD", "positions": {"base-learner-fold3": 50}})
                        + "\n")
    with pytest.raises(SystemExit, match="lost carried epochs"):
        schedule.trained_on_spans("base-learner-fold3", 384, sittings)

    land = tmp_path / "land"
    zoo = land / "fsslib" / "checkpoints" / "zoo"
    zoo.mkdir(parents=True)
    for fold in schedule.FOLDS_TO_TRAIN:
        (zoo / f"base-learner-fold{fold}.json").write_text(json.dumps({"settings": {"epochs": 384}}))
    run = land / "papermill_runs" / "outputs" / "piclip_baselines_toy" / "hdmnet-fold0-1shot-seed0"
    run.mkdir(parents=True)
    (run / "train_summary.json").write_text(json.dumps({"epochs": 160, "hardware": {"processor": "Xeon"}}))
    sittings.write_text("".join(sittings.read_text().splitlines(keepends=True)[:2]))
    monkeypatch.setattr(schedule, "SITTINGS", sittings)
    schedule.write_trained_on(land)
    assert json.loads((zoo / "base-learner-fold3.json").read_text())["trained_on"][1] == {
        "processor": "Xeon", "epochs": [83, 384]}
    assert json.loads((zoo / "base-learner-fold1.json").read_text())["trained_on"] == [
        {"processor": "Xeon", "epochs": [1, 384]}]  # no position before the second sitting: all of it there
    assert json.loads((run / "train_summary.json").read_text())["trained_on"] == [
        {"processor": "AMD", "epochs": [1, 160]}]
