"""The base learner's budget control (benchmarks/base_learner_budget.py): which budget it chooses, and which runs
it trains."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "base_learner_budget.py"
spec = importlib.util.spec_from_file_location("base_learner_budget", SCRIPT)
base_learner_budget = importlib.util.module_from_spec(spec)
spec.loader.exec_module(base_learner_budget)


def fabricated(epochs: int, seed: int, test: float, lr: float = 0.01) -> dict:
    return {"epochs": epochs, "seed": seed, "precision": "fp32", "lr": lr, "test": test, "val": test - 1, "gain": 0.5,
            "error": 0.2, "verdict": "flat", "wall_min": 1.0, "cpu_min": 1.0,
            "curve": [{"epoch": e, "val_miou": test - 1 - 8 / e} for e in range(1, epochs + 1)]}


def test_the_budget_is_the_first_whose_doubling_moves_less_than_two_single_rows_need_to_differ():
    """Two seeds 1.0 apart: s = 1.0 / sqrt(2), and two single rows are resolved at 2 s sqrt(2) = 2.0 points, the
    threshold of docs/protocol.md (fsslib.compare.resolution_threshold)."""
    rows = [fabricated(24, 0, 57.6), fabricated(48, 0, 60.0), fabricated(96, 0, 61.9), fabricated(48, 1, 59.0)]
    lines, chosen = base_learner_budget.report(0, rows, seed_epochs=48)
    assert chosen == 48
    assert "| 24 -> 48 | +2.40 | no |" in lines and "| 48 -> 96 | +1.90 | yes |" in lines
    assert "| 0, 1 | 60.00, 59.00 | 0.71 | 2.00 |" in lines
    rows[1]["test"] = 59.5  # seeds 0.5 apart, so 1.00 resolves; doublings +1.9 and +2.4: no budget yet
    assert base_learner_budget.report(0, rows, seed_epochs=48)[1] is None


def test_only_the_runs_without_their_provenance_file_are_trained(tmp_path, monkeypatch):
    for name in ("fold0-e24-s0", "fold0-e48-s0", "fold0-e48-s1"):
        (tmp_path / f"{name}.json").write_text(json.dumps({}))
    trained = []
    monkeypatch.setattr(base_learner_budget.subprocess, "run", lambda command, **_: trained.append(command))
    base_learner_budget.train_missing(tmp_path, 0, [(24, 0, "fp32", 0.01), (48, 0, "fp32", 0.01), (96, 0, "fp32", 0.01),
                                                    (48, 1, "fp32", 0.01), (24, 0, "bf16", 0.01),
                                                    (24, 0, "fp32", 0.03)], jobs=1)
    assert [command[command.index("--out") + 1] for command in trained] == [str(tmp_path / "fold0-e96-s0.pt"),
                                                                              str(tmp_path / "fold0-e24-s0-bf16.pt"),
                                                                              str(tmp_path / "fold0-e24-s0-lr0.03.pt")]
    assert trained[1][trained[1].index("--precision") + 1] == "bf16"
    assert trained[2][trained[2].index("--lr") + 1] == "0.03"


def test_a_bf16_run_is_reported_beside_its_float32_pair_and_left_out_of_the_series():
    rows = [fabricated(24, 0, 57.6), fabricated(48, 0, 60.0), fabricated(48, 1, 59.0),
            {**fabricated(24, 0, 57.8), "precision": "bf16"}]
    lines, chosen = base_learner_budget.report(0, rows, seed_epochs=48)
    assert any(line.startswith("Precision control: at 24 epochs, seed 0, bf16 steps score +0.20") for line in lines)
    assert "| 24 -> 48 | +2.40 | no |" in lines and chosen is None


def test_the_figure_draws_each_float32_run_on_a_log2_epoch_axis():
    import matplotlib.pyplot as plt

    rows = [fabricated(24, 0, 57.6), fabricated(48, 0, 60.0), fabricated(48, 1, 59.0),
            {**fabricated(24, 0, 57.8), "precision": "bf16"}]
    figure = base_learner_budget.curves_figure(rows, fold=0)
    ax = figure.axes[0]
    assert [line.get_label() for line in ax.lines] == ["24 epochs, seed 0", "48 epochs, seed 0", "48 epochs, seed 1"]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()][-2:] == ["32", "64"]
    plt.close(figure)


def test_the_learning_rate_control_is_reported_beside_the_toy_rate_and_left_out_of_the_series():
    rows = [fabricated(24, 0, 57.6), fabricated(48, 0, 60.0), fabricated(48, 1, 59.0),
            fabricated(24, 0, 55.0, lr=0.03), fabricated(24, 0, 58.5, lr=0.003)]
    lines, chosen = base_learner_budget.report(0, rows, seed_epochs=48)
    assert "| 24 -> 48 | +2.40 | no |" in lines and chosen is None  # the other rates are not doublings
    at = lines.index("| lr | val mIoU | test mIoU | last-quarter gain (SE) | verdict |")
    assert lines[at + 2:at + 5] == ["| 0.003 | 57.50 | 58.50 | +0.50 (0.20) | flat |",
                                    "| 0.01 | 56.60 | 57.60 | +0.50 (0.20) | flat |",
                                    "| 0.03 | 54.00 | 55.00 | +0.50 (0.20) | flat |"]
    assert "the best validation mIoU is at 0.003" in lines[at - 2]
    assert not any(line.startswith("| 24 | 0 | fp32 | 55.00") for line in lines)  # not in the table of the series


def test_doublings_at_another_rate_are_set_beside_the_same_doublings_at_the_toy_rate():
    """The learning-rate control's run (24 epochs at 0.03) starts the faster rate's doublings; each move is judged by
    the same threshold as the series' (seeds 1.0 apart: 2.00 points)."""
    rows = [fabricated(24, 0, 57.6), fabricated(48, 0, 60.0), fabricated(96, 0, 63.4), fabricated(48, 1, 59.0),
            fabricated(24, 0, 58.9, lr=0.03), fabricated(48, 0, 62.0, lr=0.03), fabricated(96, 0, 63.5, lr=0.03),
            fabricated(24, 0, 55.7, lr=0.003)]
    lines, chosen = base_learner_budget.report(0, rows, seed_epochs=48)
    assert chosen is None and "| 48 -> 96 | +3.40 | no |" in lines  # the series is the toy rate's alone
    at = lines.index("| doubling | test mIoU at 0.03 | moves | at 0.01, moves | under the threshold at 0.03 |")
    assert lines[at + 2:at + 4] == ["| 24 -> 48 | 58.90 -> 62.00 | +3.10 | +2.40 | no |",
                                    "| 48 -> 96 | 62.00 -> 63.50 | +1.50 | +3.40 | yes |"]
    assert lines[at + 5] == ("Budget at 0.03: 48 epochs, the first whose doubling moves the test mIoU by less than "
                             "the threshold.")
    assert not any("at 0.003" in line for line in lines)  # one run at that rate: no doubling
    rows[6]["test"] = 64.5  # +2.5: over the threshold, and no longer budget at that rate
    assert base_learner_budget.report(0, rows, seed_epochs=48)[0][-1] == (
        "Budget at 0.03: not found up to 96 epochs; no doubling moves the test mIoU by less than the threshold.")


def test_the_noise_is_the_spread_of_every_seed_trained_at_the_seed_budget(tmp_path, monkeypatch):
    """--noise-seeds trains seed 0's budget with each seed; the spread (and so the threshold) is over all of them."""
    asked = []
    monkeypatch.setattr(base_learner_budget, "train_missing", lambda runs, fold, settings, jobs: asked.extend(settings))
    base_learner_budget.main(["--epochs", "24", "48", "--noise-seeds", "1", "2", "--lr-control", "--rate-doublings",
                              "--precision-control", "0", "--runs", str(tmp_path), "--out", str(tmp_path / "page.md")])
    assert asked == [(24, 0, "fp32", 0.01), (48, 0, "fp32", 0.01), (48, 1, "fp32", 0.01), (48, 2, "fp32", 0.01)]
    rows = [fabricated(24, 0, 57.6), fabricated(48, 0, 60.0), fabricated(48, 1, 59.0), fabricated(48, 2, 61.0)]
    assert "| 0, 1, 2 | 60.00, 59.00, 61.00 | 1.00 | 2.83 |" in base_learner_budget.report(0, rows, seed_epochs=48)[0]


def test_a_base_learner_s_budget_record_is_its_fold_0_doubling_or_the_doubling_into_it():
    """Seeds 1.0 apart resolve 2.0 points. A budget with a run at twice it is judged by that doubling; without one,
    by the doubling into it (under the threshold, half the budget is already at the plateau); neither is an error."""
    rows = [fabricated(24, 0, 57.6), fabricated(48, 0, 60.0), fabricated(96, 0, 61.9), fabricated(48, 1, 59.0)]
    record = base_learner_budget.budget_record(rows, 48, 0.01, seed_epochs=48)
    assert record["doubling_epochs"] == [48, 96] and record["at_plateau"]
    assert record["fold0_test_miou"] == [60.0, 61.9] and abs(record["resolved_threshold"] - 2.0) < 1e-9
    into = base_learner_budget.budget_record(rows, 96, 0.01, seed_epochs=48)
    assert into["doubling_epochs"] == [48, 96] and into["at_plateau"]
    assert not base_learner_budget.budget_record(rows, 24, 0.01, seed_epochs=48)["at_plateau"]  # +2.4 over 2.0
    with pytest.raises(SystemExit, match="--rate-doublings 0.03 12 24 48"):
        base_learner_budget.budget_record(rows, 24, 0.03, seed_epochs=48)


def test_each_zoo_base_learner_records_the_fold_0_doubling_of_its_own_budget():
    """The `budget` field of every shipped base learner's .json is what the committed control runs say of its
    epochs and learning rate (python benchmarks/base_learner_budget.py --table-only --record-zoo writes it)."""
    runs = SCRIPT.parent / "results" / "base_learner_budget"
    rows = [base_learner_budget.row(path) for path in sorted(runs.glob("fold0-*.json"))]
    shipped = sorted(base_learner_budget.ZOO.glob("base-learner-fold*.json"))
    assert len(shipped) == 4
    for path in shipped:
        record = json.loads(path.read_text())
        epochs, lr = record["settings"]["epochs"], record["settings"]["lr"]
        assert record["budget"] == {**base_learner_budget.budget_record(rows, epochs, lr, seed_epochs=48),
                                    "downstream": base_learner_budget.downstream_record(runs, epochs, lr)}, path.name


def test_the_downstream_record_pairs_the_meta_models_on_both_base_learners_at_the_zoo_s_meta_budget(tmp_path,
                                                                                                      monkeypatch):
    """A base learner's doubling judged by what it does to the meta models: the grids reading the run of half the
    epochs and the run itself, at piclip_baselines_toy's meta budget (a grid at another budget, a variant row or a
    method on one side only is left out)."""
    runs, notebook = (Path("../benchmarks/results/base_learner_budget"),
                     "notebook: notebooks/90_train_eval.ipynb\ngrid: {fold: [0]}\n")
    (tmp_path / "results").mkdir()
    monkeypatch.setattr(base_learner_budget, "single_row_threshold", lambda results: 2.0)

    def grid(name: str, epochs: int, weights: str, rows: list[tuple[str, str, float]]) -> None:
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\n{notebook}fixed:\n  epochs: {epochs}\n  options: {{base_learner: {runs / weights}}}\n")
        lines = ["method,variant,fold,ways,shots,train_shots,seed,miou,fbiou,reference_miou"]
        lines += [f"{method},{variant},0,1,1,1,0,{miou},{miou},0" for method, variant, miou in rows]
        (tmp_path / "results" / f"{name}.csv").write_text("\n".join(lines) + "\n")

    zoo_grid = f"name: piclip_baselines_toy\n{notebook}fixed:\n  epochs: 160\n"
    (tmp_path / "piclip_baselines_toy.yaml").write_text(zoo_grid)
    grid("short", 160, "fold0-e48-s0.pt", [("bam", "", 60.0), ("hdmnet", "", 61.0), ("hdmnet", "vtp", 50.0)])
    grid("long", 160, "fold0-e96-s0.pt", [("bam", "", 62.5), ("hdmnet", "", 61.5), ("pfenet", "", 40.0)])
    grid("long_320", 320, "fold0-e96-s0.pt", [("bam", "", 70.0)])
    record = base_learner_budget.downstream_record(Path("runs"), 96, 0.01, grids=tmp_path)
    assert record["grids"] == [["short"], ["long"]] and record["doubling_epochs"] == [48, 96]
    assert record["fold0_test_miou"] == {"bam": [60.0, 62.5], "hdmnet": [61.0, 61.5]}
    assert record["move"] == {"bam": 2.5, "hdmnet": 0.5} and not record["within"]  # bam's +2.5 is over 2.0
    assert base_learner_budget.downstream_record(Path("runs"), 192, 0.01, grids=tmp_path) is None


def test_the_committed_downstream_record_of_the_384_epoch_base_learner_reads_its_two_control_grids():
    runs = SCRIPT.parent / "results" / "base_learner_budget"
    record = base_learner_budget.downstream_record(runs, 384, 0.01)
    assert record["grids"] == [["piclip_baselines_base_learner_control"], ["piclip_baselines_base_learner_control_384"]]
    assert sorted(record["move"]) == ["bam", "hdmnet", "piclip-bam", "piclip-hdmnet"]
    for method, (short, long) in record["fold0_test_miou"].items():
        assert record["move"][method] == long - short
    assert base_learner_budget.downstream_record(runs, 24, 0.01) is None  # no grid reads a 12-epoch run
