"""The zoo's first-epoch audit (benchmarks/zoo_first_epoch.py): it finds a zoo model's run in its grid file, trains
it again as the grid would and compares the first epochs with the record, bit for bit."""
from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from fsslib.provenance import cpu_model

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "zoo_first_epoch.py"
spec = importlib.util.spec_from_file_location("zoo_first_epoch", SCRIPT)
zoo_first_epoch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo_first_epoch)


def test_a_zoo_model_s_run_is_read_from_the_grid_its_record_names():
    record = {"command": "python -m fsslib.runs papermill_runs/zoo_toy.yaml  (run pfenet-fold2-1shot-seed0)"}
    params, threads, grid = zoo_first_epoch.run_parameters(record)
    assert params == {"method": "pfenet", "preset": "toy", "fold": 2, "shots": 1, "seed": 0}
    assert threads == 1 and grid == "zoo_toy"
    record["command"] = record["command"].replace("fold2", "fold7")
    with pytest.raises(SystemExit, match="has no run pfenet-fold7-1shot-seed0"):
        zoo_first_epoch.run_parameters(record)


@pytest.mark.slow
def test_a_run_trained_again_at_the_grid_s_thread_count_repeats_its_recorded_first_epochs(tmp_path, monkeypatch):
    grid = tmp_path / "tiny.yaml"
    grid.write_text("name: tiny\nnotebook: notebooks/90_train_eval.ipynb\nthreads: 1\n"
                    "fixed: {preset: toy, seed: 0, smoke: true, test_shots: [1]}\n"
                    "grid: {method: [prototype], fold: [1]}\n")
    params = {"method": "prototype", "preset": "toy", "fold": 1, "shots": 1, "seed": 0, "smoke": True}
    (tmp_path / "run").mkdir()
    curve = [[1, zoo_first_epoch.first_epochs(params, 1, tmp_path / "run", 1)[0]]]  # the run as its grid made it
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SCRIPT.parent, capture_output=True,
                          text=True).stdout.strip()
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "prototype-fold1-1shot.json").write_text(json.dumps({
        "command": f"python -m fsslib.runs {grid}  (run prototype-fold1-1shot-seed0)", "git_commit": head,
        "validation_curve": curve}))
    monkeypatch.setattr(zoo_first_epoch, "ZOO_DIR", zoo)
    table = tmp_path / "table.md"
    zoo_first_epoch.main(["--models", "prototype-fold1-1shot", "--out", str(table), "--kernels", "none"])
    row = next(line for line in table.read_text().splitlines() if line.startswith("| prototype-fold1-1shot"))
    # equal to the record, and trained again with the code of the commit it names (a worktree at HEAD): equal again
    assert f"| tiny | {head[:7]} | not recorded |" in row and row.endswith("| yes |") and row.count("| yes |") == 2
    assert f"device cpu, CPU {cpu_model()}" in table.read_text()  # the machine that trained them again, for the pages


def test_a_checkout_gets_the_recorded_frozen_file_where_it_lacks_it_or_holds_another_version(tmp_path):
    """At a record's commit the base learner may be missing or an older version (a file retrained since): today's
    copy takes its place when its digest is the recorded one; a checkout already holding it is left alone."""
    from fsslib.pretrain.saving import file_sha256

    repo, tree = tmp_path / "repo", tmp_path / "tree"
    for folder, name, content in ((repo, "new.pt", b"new"), (repo, "old.pt", b"new"), (tree, "old.pt", b"old"),
                                  (repo, "same.pt", b"same"), (tree, "same.pt", b"same")):
        (folder / "zoo").mkdir(parents=True, exist_ok=True)
        (folder / "zoo" / name).write_bytes(content)
    digest = file_sha256(repo / "zoo" / "new.pt")
    record = {"frozen_files": {name: {"file": f"zoo/{name}.pt", "sha256": file_sha256(repo / "zoo" / f"{name}.pt")}
                               for name in ("new", "old", "same")}}
    zoo_first_epoch.place_frozen_files(record, tree, repo)
    assert [(tree / "zoo" / f"{name}.pt").read_bytes() for name in ("new", "old", "same")] == [b"new", b"new", b"same"]
    assert file_sha256(tree / "zoo" / "old.pt") == digest


def test_a_run_whose_code_held_uncommitted_changes_is_not_checked_out():
    record = {"git_commit": "4172ab26959ef27743019c87dbc81ed1b817c832 + uncommitted changes in fsslib/"}
    assert zoo_first_epoch.at_commit(record, {}, 1, 1) is None


def test_a_named_cause_is_the_commit_whose_parent_gives_the_recorded_commit_s_epochs_and_it_today_s(monkeypatch):
    """--cause: each family today's code moved, at the commit's parent and at the commit; 'yes' only where each
    side equals its end (the recorded commit's first epochs before, today's after)."""
    trained = {"moved": {"parent": [1.0], "commit": [2.0]}, "elsewhere": {"parent": [1.0], "commit": [1.5]}}
    monkeypatch.setattr(zoo_first_epoch, "at_commit", lambda record, params, threads, epochs, commit:
                        trained[record["name"]]["parent" if commit.endswith("^") else "commit"])
    moved = [(name, {"name": name}, {}, 1, [1.0], [2.0]) for name in trained]
    table = zoo_first_epoch.cause_table("HEAD", moved).splitlines()
    assert table[0].startswith("## The families today's code moved, trained on either side of commit ")
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in table[6:])}
    assert rows == {"moved": ["1.0", "2.0", "yes", "yes"], "elsewhere": ["1.0", "1.5", "yes", "no"]}


def test_the_report_holds_the_named_cause_only_for_the_families_the_code_moved(tmp_path, monkeypatch):
    """main, its training stood in for: of two families, the one whose recorded commit trains other first epochs
    than today's code is trained either side of --cause; the other is not."""
    names = ["bam-fold0-1shot", "hdmnet-fold0-1shot"]
    monkeypatch.setattr(zoo_first_epoch, "first_epochs", lambda params, threads, out, epochs, kernels=None: [5.0])
    monkeypatch.setattr(zoo_first_epoch, "at_commit", lambda record, params, threads, epochs, commit=None:
                        [5.0] if commit or record["method"] == "bam" else [4.0])
    out = tmp_path / "audit.md"
    zoo_first_epoch.main(["--models", *names, "--cause", "HEAD", "--kernels", "none", "--out", str(out)])
    report = out.read_text()
    assert "| hdmnet-fold0-1shot | 5.0 | 5.0 | no | yes |" in report and "| bam-fold0-1shot | 5.0 |" not in report


def test_a_failed_run_is_named_by_its_exception_line():
    output = ("Traceback (most recent call last):\n  File x\nfsslib.errors.CheckpointError: no base learner\n"
              "  How to fix: y\n")
    assert zoo_first_epoch.error_line(output) == "fsslib.errors.CheckpointError: no base learner"
    assert zoo_first_epoch.error_line("") == "no error output"
