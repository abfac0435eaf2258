"""The toy model zoo: export of a trained run, ``ckpt="zoo"`` resolution, and checkpoints that refuse other
frozen weights than they were trained beside."""
from __future__ import annotations

import csv
import json
import re

import pytest
import torch

import fsslib.zoo as zoo
from fsslib import evaluate, provenance, train
from fsslib.config import make_config
from fsslib.errors import CheckpointError
from fsslib.runs import export_to_zoo

# a zoo model's check is a fingerprint on CHECK_EPISODES episodes, not a fold score: some classes draw no episode
pytestmark = pytest.mark.filterwarnings("ignore::fsslib.evaluate.FewEpisodesWarning")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A smoke-sized prototype run on fold 1 and its 1-shot test row."""
    out = tmp_path_factory.mktemp("run")
    train.run(make_config(method="prototype", fold=1, smoke=True, out=out, progress=False))
    row = evaluate.run(make_config(method="prototype", fold=1, smoke=True, ckpt=out / "best.pt", out=out / "eval",
                                   progress=False))
    return out, row


def test_an_exported_run_is_found_by_ckpt_zoo_and_repeats_its_recorded_check(trained_run, tmp_path, monkeypatch):
    run_dir, row = trained_run
    monkeypatch.setenv("FSSLIB_ZOO", str(tmp_path))
    path = export_to_zoo(run_dir, "python -m fsslib.runs papermill_runs/zoo_toy.yaml", [row])
    assert path == tmp_path / "prototype-fold1-1shot.pt" and zoo.zoo_entries() == ["prototype-fold1-1shot"]
    weights = torch.load(path, weights_only=True)["model"]
    assert all(t.dtype == torch.float16 for t in weights.values() if t.is_floating_point())
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["train_shots"] == 1 and info["validation_curve"] and info["test_rows"][0]["miou"] == row["miou"]
    assert info["git_commit"] == row["commit"] and info["checkpoint"]["bytes"] == path.stat().st_size
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert info["sittings"] == 1 and info["train_time_s"] == pytest.approx(summary["history"][-1]["elapsed_s"], abs=0.1)
    # the machine that trained it: a same-seed run repeats bitwise only on the same kind of CPU
    assert info["hardware"] == summary["hardware"] and info["hardware"]["processor"] == provenance.cpu_model()
    assert info["hardware"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["trained_on"] == [{"processor": provenance.cpu_model(), "epochs": [1, summary["epochs"]]}]
    check = evaluate.run(make_config(method="prototype", fold=1, ckpt="zoo", episodes=info["check"]["episodes"],
                                     out=tmp_path / "check", progress=False))
    assert check["miou"] == pytest.approx(info["check"]["miou"], abs=1e-9)
    assert info["check"]["processor"] == provenance.cpu_model()  # where it was measured: exact there, not elsewhere
    assert check["checkpoint"] == str(path)
    with pytest.raises(CheckpointError, match="It holds: prototype-fold1-1shot"):
        evaluate.load_model(make_config(method="prototype", fold=2, ckpt="zoo"), torch.device("cpu"))


def test_recheck_zoo_measures_the_check_again_and_changes_nothing_else(trained_run, tmp_path, monkeypatch, capsys):
    """After CHECK_EPISODES changes, ``python -m fsslib.runs GRID --recheck-zoo`` writes the check of each zoo
    model the grid exports anew; a grid that exports none is refused."""
    from fsslib.runs import main

    run_dir, row = trained_run
    monkeypatch.setenv("FSSLIB_ZOO", str(tmp_path))
    path = export_to_zoo(run_dir, "test", [row])
    exported = json.loads(path.with_suffix(".json").read_text())
    grid = tmp_path / "zoo_grid.yaml"
    grid.write_text("name: zoo_grid\nnotebook: notebooks/90_train_eval.ipynb\nzoo: true\n"
                    "fixed: {preset: toy, seed: 0}\ngrid: {method: [prototype], fold: [1]}\n")
    monkeypatch.setattr(zoo, "CHECK_EPISODES", 5)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the caller's count: the check runs at CHECK_THREADS and leaves the caller's as it was
    try:
        main([str(grid), "--recheck-zoo"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    rechecked = json.loads(path.with_suffix(".json").read_text())
    assert rechecked["check"]["episodes"] == 5 and rechecked["check"]["miou"] != exported["check"]["miou"]
    assert rechecked["check"]["threads"] == zoo.CHECK_THREADS == 1
    assert {k: v for k, v in rechecked.items() if k != "check"} == {k: v for k, v in exported.items() if k != "check"}
    check = evaluate.run(make_config(method="prototype", fold=1, ckpt="zoo", episodes=5, out=tmp_path / "check",
                                     progress=False))
    assert check["miou"] == pytest.approx(rechecked["check"]["miou"], abs=1e-9)
    assert "prototype-fold1-1shot" in capsys.readouterr().out
    grid.write_text(grid.read_text().replace("zoo: true\n", ""))
    with pytest.raises(SystemExit):
        main([str(grid), "--recheck-zoo"])
    assert "exports no zoo model" in capsys.readouterr().err


def test_ckpt_zoo_names_the_training_shots():
    assert zoo.training_shots("zoo", "prototype", "", 5) == 1  # the 1-shot model, evaluated at 5 shots
    assert zoo.training_shots("zoo", "piclip", "", 5) == 5  # PI-CLIP's weights fit their training shots
    assert zoo.training_shots("zoo:5shot", "pfenet", "", 1) == 5
    with pytest.raises(CheckpointError, match="zoo:5shot"):
        zoo.training_shots("zoo:five", "pfenet", "", 1)


def test_a_shot_bound_zoo_model_asked_for_other_shots_says_how_many_supports_it_wants(tmp_path, capsys):
    """BAM's 5-shot model evaluated at 1 shot names its 5 shots and the fix (not the weights' key list)."""
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--method", "bam", "--ckpt", "zoo:5shot", "--shots", "1", "--episodes", "4", "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "bam-fold0-5shot.pt was trained on 5-shot episodes" in error
    assert "give 5 support image(s) per class (--shots 5 to evaluate" in error and "Missing key" not in error


def test_an_empty_zoo_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSLIB_ZOO", str(tmp_path / "none"))
    with pytest.raises(CheckpointError, match="(?s)nothing yet.*zoo_toy.yaml"):
        zoo.zoo_checkpoint("pfenet", 0, 1)


def test_a_checkpoint_refuses_frozen_weights_it_was_not_trained_beside(trained_run, tmp_path):
    run_dir, _ = trained_run
    state = torch.load(run_dir / "best.pt", weights_only=True)
    assert set(state["frozen"]) == {"backbone"}
    state["frozen"]["backbone"] = "0" * 64
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other weights in backbone"):
        evaluate.load_model(make_config(method="prototype", fold=1, ckpt=tmp_path / "other.pt"), torch.device("cpu"))


def test_a_compare_grid_reads_trained_methods_from_the_zoo(trained_run, tmp_path, monkeypatch):
    """The zoo's model, evaluated by a compare grid's worker process, gives the row its check was made from."""
    from fsslib.runs import execute

    run_dir, row = trained_run
    monkeypatch.setenv("FSSLIB_ZOO", str(tmp_path / "zoo"))  # inherited by the grid's workers
    path = export_to_zoo(run_dir, "test", [row])
    check = json.loads(path.with_suffix(".json").read_text())["check"]
    grid = tmp_path / "compare_zoo.yaml"
    grid.write_text(f"name: compare_zoo\ncompare: true\nfixed: {{preset: toy, seed: 0, ckpt: zoo, episodes: {check['episodes']}}}"
                    "\ngrid:\n  method: [prototype]\n  fold: [1]\n")
    (compared,) = execute(grid, outputs=tmp_path / "out", results=tmp_path / "results")
    assert compared["miou"] == pytest.approx(check["miou"], abs=1e-9) and compared["checkpoint"] == str(path)
    assert compared["train_shots"] == 1


SHIPPED = zoo.zoo_entries(zoo.SHIPPED_ZOO)


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_zoo_model_repeats_its_recorded_check_and_row(name, tmp_path, one_torch_thread):
    """A shipped model evaluated on its check episodes gives the mIoU its .json recorded when it was exported;
    its file is the one the .json describes; its test rows are the committed rows of the grid that trained it
    (the grid writes its table before it exports its models); the frozen weight files it
    names are the ones it was trained beside."""
    from fsslib.pretrain.saving import file_sha256
    from fsslib.tables import REPO

    path = zoo.SHIPPED_ZOO / f"{name}.pt"
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["checkpoint"]["sha256"] == file_sha256(path) and info["name"] == name
    assert info["check"]["threads"] == torch.get_num_threads() == 1  # another count sums in another order
    check = evaluate.run(make_config(method=info["method"], variant=info["variant"], fold=info["fold"],
                                     shots=info["check"]["shots"], ckpt=str(path), episodes=info["check"]["episodes"],
                                     out=tmp_path, progress=False))
    # exact on the kind of CPU that recorded it; elsewhere (or where the record predates naming it) a pixel on a
    # decision boundary may flip (benchmarks/results/zoo_checks_*.md)
    here = info["check"].get("processor") == provenance.cpu_model()
    assert check["miou"] == pytest.approx(info["check"]["miou"], abs=1e-6 if here else zoo.CHECK_TOLERANCE_OTHER_CPU)
    grid = re.search(r"papermill_runs/(\w+)\.yaml", info["command"]).group(1)  # the grid that wrote it
    table = REPO / "papermill_runs" / "results" / f"{grid}.csv"
    assert table.is_file(), f"{name}: its grid's table {table.name} is not committed"  # written before the export
    with table.open(newline="") as handle:  # the CSV keeps the decimals its grid wrote (one in older tables)
        committed = [{k: row[k] for k in ("ways", "shots", "episodes", "miou")} for row in csv.DictReader(handle)
                     if (row["method"], row["variant"], row["fold"], row["train_shots"])
                     == (info["method"], info["variant"], str(info["fold"]), str(info["train_shots"]))]
    decimals = len(committed[0]["miou"].partition(".")[2])
    recorded = [{"ways": str(r["ways"]), "shots": str(r["shots"]), "episodes": str(r["episodes"]),
                 "miou": f"{r['miou']:.{decimals}f}"} for r in info["test_rows"]]
    assert recorded == committed
    for role, frozen in info.get("frozen_files", {}).items():
        assert file_sha256(REPO / frozen["file"]) == frozen["sha256"], role


def test_the_shipped_zoo_stays_small():
    """The zoo stores the trained weights only, in float16: under 64 MiB in all (60 models: 59.5 MiB; HDMNet's are the
    largest, 1.8 MB each; the base learners beside them are budgeted in tests/test_base_learner.py)."""
    assert sum((zoo.SHIPPED_ZOO / f"{name}.pt").stat().st_size for name in zoo.zoo_entries(zoo.SHIPPED_ZOO)) < 64 * 2**20


def test_a_zoo_grid_names_which_runs_go_into_the_zoo():
    """zoo: true exports every run, zoo: default_variant the runs without a variant (qgnet_toy's main rows); the
    grids that write zoo models are the ones fsslib.zoo names, and another setting is refused."""
    from fsslib.runs import expand
    from fsslib.tables import REPO, load_grid

    runs = [{"method": "qgnet", "fold": 0}, {"method": "qgnet", "variant": "felzenszwalb", "fold": 0}]
    assert zoo.zoo_runs({"name": "g", "zoo": True}, runs) == runs
    assert zoo.zoo_runs({"name": "g", "zoo": "default_variant"}, runs) == runs[:1]
    assert zoo.zoo_runs({"name": "g"}, runs) == []
    with pytest.raises(CheckpointError, match="default_variant"):
        zoo.zoo_runs({"name": "g", "zoo": "main"}, runs)
    exported = {zoo.zoo_name(p["method"], p["fold"], p.get("shots", 1), p.get("variant", ""))
                for path in zoo.ZOO_GRIDS for p in zoo.zoo_runs(load_grid(REPO / path), expand(load_grid(REPO / path)))}
    assert exported == set(zoo.zoo_entries(zoo.SHIPPED_ZOO))  # the shipped zoo is exactly what its grids write


def test_a_zoo_model_s_budget_record_reads_its_fold_zero_doubling_from_the_committed_tables():
    """budget_record: the fold-0 1-way 1-shot row at the grid's budget and at twice it (the grid named under
    budget_control), their move, and the threshold that resolves two single rows, as the protocol page renders it."""
    from fsslib.docs import Results
    from fsslib.errors import FsslibError
    from fsslib.runs import budget_record
    from fsslib.tables import REPO, read_table

    grid = {"name": "piclip_baselines_toy", "budget_control": "piclip_baselines_budget_doubled"}
    record = budget_record(grid, {"method": "hdmnet"})
    rows = {name: [r for r in read_table(REPO / "papermill_runs" / "results" / f"{name}.csv") if r["method"] == "hdmnet" and not r["variant"] and int(r["fold"]) == 0 and int(r["shots"]) == 1
                   and int(r["ways"]) == 1 and int(r["train_shots"]) == 1] for name in grid.values()}
    assert record["fold0_test_miou"] == [rows["piclip_baselines_toy"][0]["miou"],
                                         rows["piclip_baselines_budget_doubled"][0]["miou"]]
    assert record["move"] == pytest.approx(record["fold0_test_miou"][1] - record["fold0_test_miou"][0])
    assert f"{record['resolved_threshold']:.2f}" == str(Results().threshold(1))
    assert record["at_plateau"] == (abs(record["move"]) < record["resolved_threshold"])
    assert record["control_epochs"] == 160 and budget_record({"name": "zoo_toy"}, {"method": "pfenet"}) is None
    with pytest.raises(FsslibError, match="(?s)rows of pfenet, seed 0.*python -m fsslib.runs papermill_runs/piclip_baselines_toy"):
        budget_record(grid, {"method": "pfenet"})


def test_a_budget_record_reads_the_control_grid_that_holds_the_method_s_row():
    """budget_control may list one doubling grid per pair of methods: the record names the one holding the row, and a
    method that none or two of them hold is refused (a record must not pick a doubling silently)."""
    from fsslib.errors import FsslibError
    from fsslib.runs import budget_record

    grid = {"name": "piclip_baselines_toy", "budget_control": ["piclip_baselines_budget_320", "piclip_baselines_budget_doubled"]}
    with pytest.raises(FsslibError, match="2 of the budget controls"):  # BAM's pair has rows in both
        budget_record(grid, {"method": "bam"})
    record = budget_record(grid, {"method": "hdmnet"})  # only the doubled grid holds HDMNet's
    assert record["control"] == "piclip_baselines_budget_doubled" and record["control_epochs"] == 160
    only_bam = {**grid, "budget_control": ["piclip_baselines_budget_320", "lfss_budget_240"]}
    assert budget_record(only_bam, {"method": "bam"})["control"] == "piclip_baselines_budget_320"
    with pytest.raises(FsslibError, match="0 of the budget controls"):
        budget_record(only_bam, {"method": "pfenet"})


def test_a_zoo_record_gives_its_budget_and_whether_a_doubling_showed_the_plateau(tmp_path):
    """Lessons 05 and 08 print each BAM and HDMNet model's epochs and plateau from these records."""
    (tmp_path / "bam-fold0-1shot.pt").write_bytes(b"")
    (tmp_path / "bam-fold0-1shot.json").write_text(json.dumps({"epochs": 80}))
    record = zoo.zoo_record("bam", 0, 1, root=tmp_path)
    assert record["epochs"] == 80 and not zoo.at_plateau(record)  # no doubling recorded: not shown at the plateau
    assert zoo.at_plateau({"budget": {"at_plateau": True}}) and not zoo.at_plateau({"budget": {"at_plateau": False}})
    with pytest.raises(CheckpointError, match="holds no bam model for fold 1"):
        zoo.zoo_record("bam", 1, 1, root=tmp_path)


def test_the_resumed_pi_clip_models_the_zoo_card_names_were_trained_before_resumes_were_bit_for_bit():
    """The zoo card says its PI-CLIP models that were resumed (``sittings`` above 1) drifted in the last bits, because
    until commit d3329a1 PI-CLIP encoded its class prompts in groups: each such model's commit precedes d3329a1.
    A PI-CLIP model trained and resumed later resumes bit for bit, and the card's sentence must then leave it out."""
    import subprocess

    from fsslib.tables import REPO

    for name in SHIPPED:
        info = json.loads((zoo.SHIPPED_ZOO / f"{name}.json").read_text())
        if not info["method"].startswith("piclip") or info.get("sittings", 1) == 1:
            continue
        commit = info["git_commit"][:40]
        ancestry = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "d3329a1"], cwd=REPO,
                                  capture_output=True, text=True)
        assert ancestry.returncode != 128, f"git cannot compare {commit} with d3329a1: {ancestry.stderr.strip()}"
        assert ancestry.returncode == 0, f"{name} was resumed at {commit[:7]}, after d3329a1: reword the zoo card"
