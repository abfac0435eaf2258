"""The comparison on the same episodes (fsslib.compare), from fabricated runs: fold means, the support-mode
matrix's blanks, and strata whose counts and mIoUs follow from the episodes."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from fsslib.compare import (MODES, comparison_table, read_comparison, strata_table, support_mode_matrix,
                            write_comparison)
from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset
from fsslib.engine import open_source
from fsslib.errors import FsslibError

EPISODES = 24


def fabricated_runs(tmp_path, methods: dict[tuple[str, str], float], varied: bool = False) -> list[tuple[dict, object]]:
    """1-way 1-shot rows on the 4 folds whose episodes all have IoU ``value`` (I = value, U = 1), or with
    ``varied`` an IoU drawn per episode (I in 0..9, U = 10)."""
    runs = []
    generator = np.random.default_rng(0)
    for (method, variant), value in methods.items():
        for fold in range(4):
            dataset = EpisodeDataset(open_source(make_config(), "test"), fold, 1, 64, EPISODES, 0)
            class_ids = np.array([[dataset.sample_names(i)[2][0]] for i in range(EPISODES)])
            counts = np.zeros((EPISODES, 2, 2))
            counts[:, 1] = np.stack([generator.integers(0, 10, EPISODES), np.full(EPISODES, 10)], 1) if varied else [value, 1.0]
            folder = tmp_path / f"{method}-{variant}-{fold}"
            folder.mkdir()
            np.savez(folder / "episodes.npz", counts=counts, class_ids=class_ids, seed=0)
            row = {"method": method, "variant": variant, "fold": fold, "ways": 1, "shots": 1, "train_shots": None,
                   "seed": 0, "episodes": EPISODES, "miou": 100 * value + fold, "fbiou": 50.0,
                   "per_class_iou": {"solid circle": 100 * value}, "torch": "t", "commit": "c", "device": "cpu"}
            runs.append((row, folder))
    return runs


def test_the_comparison_averages_folds_and_leaves_what_a_method_cannot_read_blank(tmp_path):
    runs = fabricated_runs(tmp_path, {("lfss", ""): 0.5, ("clip-dinoiser-support", ""): 0.25,
                                      ("clip-dinoiser-support", "text_support"): 0.75})
    rows = [row for row, _ in runs]
    table = {row["method"]: row for row in comparison_table(rows)}
    assert table["lfss"]["1-way 1-shot mIoU"] == pytest.approx(50 + 1.5)  # folds add 0..3
    assert table["lfss"]["2-way 1-shot mIoU"] is None  # not run
    matrix = {row["method"]: row for row in support_mode_matrix(rows)}
    assert matrix["lfss"]["class name"] == pytest.approx(51.5)
    assert [m for m in MODES if matrix["lfss"][m] is not None] == ["class name"]
    assert matrix["clip-dinoiser-support"]["whole image"] == pytest.approx(26.5)
    assert matrix["clip-dinoiser-support"]["image + class name"] == pytest.approx(76.5)


def test_the_mean_over_folds_is_of_the_unrounded_values():
    from fsslib.compare import fold_mean

    rows = [{"fold": fold, "miou": miou} for fold, miou in enumerate([63.285164, 64.611507, 62.657194, 63.166436])]
    assert f"{fold_mean(rows, 'miou', [0, 1, 2, 3]):.1f}" == "63.4"  # shown per fold 63.3, 64.6, 62.7, 63.2: mean 63.45
    assert fold_mean(rows[:3], "miou", [0, 1, 2, 3]) is None


def test_strata_count_every_episode_once_and_score_each_stratum_as_the_meter_would(tmp_path):
    import torch

    from fsslib.data.strata import describe_episodes, episode_strata
    from fsslib.metrics import FewShotMeter

    runs = fabricated_runs(tmp_path, {("pfenet", ""): 0.0}, varied=True)
    strata = strata_table(runs)
    assert strata  # the checks below run per stratum: none would pass them vacuously
    groupings = {}
    for row, folder in runs:
        dataset = EpisodeDataset(open_source(make_config(), "test"), row["fold"], 1, 64, EPISODES, 0)
        groupings[row["fold"]] = (episode_strata(describe_episodes(dataset)), np.load(folder / "episodes.npz"))
    for entry in strata:
        assert sum(len(g[entry["grouping"]]) for g, _ in groupings.values()) == 4 * EPISODES
        expected = []
        for fold, (grouping, saved) in groupings.items():
            inside = grouping[entry["grouping"]] == entry["stratum"]
            if inside.any():  # the meter on the stratum's episodes, from their counts
                ids = saved["class_ids"][inside, 0]
                meter = FewShotMeter(sorted(set(saved["class_ids"][:, 0].tolist())))
                meter.per_class.index_add_(0, torch.tensor([meter.class_ids.index(int(c)) for c in ids]),
                                           torch.from_numpy(saved["counts"][inside, 1]))
                meter.seen[[meter.class_ids.index(int(c)) for c in ids]] = True
                expected.append(100 * meter.miou)
        assert entry["miou"] == pytest.approx(np.mean(expected))
        assert entry["low"] <= entry["miou"] <= entry["high"]
    assert {row["episodes"] for row in strata if row["grouping"] == "target size"} <= set(range(25, 40))


def test_strata_refuse_saved_episodes_that_are_not_the_folds(tmp_path):
    runs = fabricated_runs(tmp_path, {("pfenet", ""): 0.5})
    row, folder = runs[2]
    saved = dict(np.load(folder / "episodes.npz"))
    saved["class_ids"] = saved["class_ids"][::-1].copy()
    np.savez(folder / "episodes.npz", **saved)
    with pytest.raises(FsslibError, match="holds other episodes than fold 2"):
        strata_table(runs)


def test_write_comparison_writes_its_tables_and_figures(tmp_path):
    runs = fabricated_runs(tmp_path, {("pfenet", ""): 0.5, ("maskclip", ""): 0.2})
    write_comparison("compare_test", runs, tmp_path / "results")
    written = {path.name for path in (tmp_path / "results").iterdir()}
    assert written == {"compare_test.csv", "compare_test.md", "compare_test.png", "compare_test_per_class.csv",
                       "compare_test_support_modes.png", "compare_test_strata.png", "compare_test_strata.csv"}
    # no pair of compare.MECHANISMS ran (pfenet and maskclip only): no differences table
    with (tmp_path / "results" / "compare_test.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and rows[0]["support annotation"] == "pixel masks"
    text = (tmp_path / "results" / "compare_test.md").read_text()
    assert "## Support modes" in text and "## Where each method wins" in text
    read, strata, differences = read_comparison("compare_test", tmp_path / "results")  # typed again, e.g. for notebook 08
    assert comparison_table(read) == comparison_table([row for row, _ in runs])  # IoUs exact to four decimals here
    assert strata == [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in strata_table(runs)]
    assert differences == []  # pfenet and maskclip are no pair of compare.MECHANISMS


@pytest.mark.slow  # trains: scheduled first under -n, left out of make test-fast
def test_a_compare_grid_evaluates_without_notebooks_and_resumes(tmp_path, monkeypatch):
    import fsslib.compare
    from fsslib.runs import execute, rewrite_table

    grid = tmp_path / "compare_tiny.yaml"
    # one job and no run to train: the evaluations go in this process's thread, no worker process starts (the
    # spawned workers run in the notebook test below)
    monkeypatch.setattr(fsslib.compare, "ProcessPoolExecutor", lambda *args, **kwargs: pytest.fail("a process started"))
    grid.write_text("name: compare_tiny\ncompare: true\njobs: 1\nfixed: {preset: toy, seed: 0, episodes: 12, "
                    "test_ways: [1, 2]}\ngrid:\n  method: [all-foreground, maskclip]\n  fold: [1]\n")
    rows = execute(grid, outputs=tmp_path / "out", results=tmp_path / "results")
    assert sorted((r["method"], r["ways"]) for r in rows) == [("all-foreground", 1), ("all-foreground", 2),
                                                               ("maskclip", 1), ("maskclip", 2)]
    assert (tmp_path / "out" / "maskclip-fold1-1shot-seed0" / "eval_2way_1shot" / "episodes.npz").is_file()
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").rglob("metrics.json")}
    again = execute(grid, outputs=tmp_path / "out", results=tmp_path / "results", resume=True)  # nothing re-run
    assert [r["miou"] for r in again] == [r["miou"] for r in rows]
    assert all(path.stat().st_mtime_ns == time for path, time in written.items())
    assert [r["miou"] for r in rewrite_table(grid, tmp_path / "out", tmp_path / "results")] == [r["miou"] for r in rows]
    assert "| maskclip |" in (tmp_path / "results" / "compare_tiny.md").read_text()
    grid.write_text(grid.read_text().replace("episodes: 12", "episodes: 10"))
    fewer = execute(grid, outputs=tmp_path / "out", results=tmp_path / "results", resume=True)  # other settings: re-run
    assert {r["episodes"] for r in fewer} == {10}
    grid.write_text(grid.read_text().replace("episodes: 10", "episodes: 10, epochs: 3"))
    with pytest.raises(FsslibError, match="epochs"):
        execute(grid, outputs=tmp_path / "out", results=tmp_path / "results")


def test_side_by_side_draws_the_query_its_truth_and_each_methods_prediction():
    import matplotlib.pyplot as plt
    import torch

    from fsslib.viz import plot_side_by_side

    episode = EpisodeDataset(open_source(make_config(), "test"), 0, 1, 64, 1, 0, ways=2)[0]
    predictions = {"pfenet": episode.query_mask.clamp(max=2), "maskclip": torch.zeros(16, 16, dtype=torch.long)}
    figure = plot_side_by_side(episode, predictions, {"pfenet": "image + mask", "maskclip": "class name"})
    titles = [ax.get_title() for ax in figure.axes if ax.images]
    assert titles == [f"support: {name}\nmask outlined" for name in episode.class_names] + [
        "query, truth outlined", "pfenet\nmean IoU 100%\nsupports: image + mask",
        "maskclip\nmean IoU 0%\nsupports: class name"]
    assert all(len(ax.collections) == 2 for ax in figure.axes[:2])  # each support's mask: white edge, way's colour
    held = sum(bool((episode.query_mask == way).any()) for way in (1, 2))  # the ways the query holds
    assert held and all(len(ax.collections) == 2 * held for ax in figure.axes[2:])  # its truth outlined on each panel
    assert all(name in figure._suptitle.get_text() for name in episode.class_names) and "2-way 1-shot" in figure._suptitle.get_text()
    plt.close(figure)


def test_figures_fit_a_notebook_column():
    """No figure is wider than a notebook column, so JupyterLab does not scale its text down to a few pixels."""
    import matplotlib.pyplot as plt
    import torch

    from fsslib.viz import COLUMN_INCHES, plot_maps, plot_side_by_side, plot_superpixels

    image, mask = torch.rand(3, 64, 64), torch.zeros(64, 64, dtype=torch.long)
    episode = EpisodeDataset(open_source(make_config(), "test"), 0, 1, 64, 1, 0)[0]
    figures = [plot_maps(image, {f"map {i}": torch.rand(8, 8) for i in range(6)}, mask, title="7 panels", class_names=["a"]),
               plot_side_by_side(episode, {f"method {i}": episode.query_mask for i in range(9)}, {}),
               plot_superpixels(torch.rand(6, 3, 64, 64), {"SLIC": torch.zeros(6, 64, 64, dtype=torch.long)})]
    for figure in figures:
        assert figure.get_size_inches()[0] <= COLUMN_INCHES + 0.3, figure.get_suptitle()
        plt.close(figure)


def test_the_own_data_figure_outlines_the_ground_truth_where_there_is_one():
    import matplotlib.pyplot as plt
    import torch

    from fsslib.viz import plot_prediction

    image, truth = torch.rand(3, 64, 64), torch.zeros(64, 64, dtype=torch.long)
    truth[10:30, 10:30] = 1
    outlined = plot_prediction(image, truth, ["dotted star"], "pfenet", truth)
    assert [ax.get_title() for ax in outlined.axes] == ["query, truth outlined", "prediction, truth outlined"]
    assert all(ax.collections for ax in outlined.axes)  # the contour of the truth on both panels
    plain = plot_prediction(image, truth, ["dotted star"], "pfenet")
    assert [ax.get_title() for ax in plain.axes] == ["query", "prediction"] and not any(ax.collections for ax in plain.axes)
    plt.close(outlined)
    plt.close(plain)


def test_the_seed_spread_sets_other_seeds_beside_the_zoo_models():
    from fsslib.compare import seed_spread

    rows = [{"method": "pfenet", "variant": "", "fold": 0, "ways": 1, "shots": 1, "seed": 0, "miou": 63.0},
            {"method": "pfenet", "variant": "", "fold": 1, "ways": 1, "shots": 1, "seed": 0, "miou": 70.0},
            {"method": "lfss", "variant": "", "fold": 0, "ways": 1, "shots": 1, "seed": 0, "miou": 67.0}]
    seed_rows = [{"method": "pfenet", "variant": "", "fold": "0", "ways": "1", "shots": "1", "seed": "1", "miou": 64.0},
                 {"method": "pfenet", "variant": "", "fold": "0", "ways": "1", "shots": "1", "seed": "2", "miou": 65.0}]
    (spread,) = seed_spread(rows, seed_rows)  # lfss has no other seed: no row
    assert spread["method"] == "pfenet" and spread["seeds"] == "0, 1, 2" and spread["mIoU per seed"] == "63.0 / 64.0 / 65.0"
    assert spread["mean"] == pytest.approx(64.0) and spread["std"] == pytest.approx(1.0)


def test_resolution_thresholds_pool_the_trained_methods_seed_spread():
    """s = sqrt(mean variance) over the pooled methods (the prototype left out); resolved = 2 s sqrt(1/n1 + 1/n2)."""
    from fsslib.compare import resolution_thresholds

    spread = [{"method": "pfenet", "setting": "1-way 1-shot", "std": 0.3},
              {"method": "lfss", "setting": "1-way 1-shot", "std": 0.4},
              {"method": "prototype", "setting": "1-way 1-shot", "std": 2.5}]
    (row,) = resolution_thresholds(spread)
    s = math.sqrt((0.09 + 0.16) / 2)
    assert row["methods pooled"] == 2 and row["pooled s"] == f"{s:.2f}"
    assert row["two single rows"] == f"{2 * s * math.sqrt(2):.2f}" == "1.00"
    assert row["two means over 4 folds"] == "0.50" and row["two 3-seed means"] == f"{2 * s * math.sqrt(2 / 3):.2f}"


def test_a_later_seeds_grid_replaces_an_earlier_one_s_rows_of_a_method(tmp_path, monkeypatch):
    """``seeds: [a, a2, b]``: a later grid that holds a method replaces all of its earlier rows, in every setting
    (a2's 5-shot row of qgnet goes with a's: b retrained qgnet), so no spread mixes two versions of a method."""
    from fsslib import runs
    from fsslib.compare import seed_spread
    from fsslib.tables import write_table

    columns = {"variant": "", "tier": "toy", "benchmark": "toy", "fold": 0, "ways": 1, "shots": 1, "train_shots": 1,
               "episodes": 10, "fbiou": 50.0, "reference_miou": 9.0}
    results = tmp_path / "papermill_runs" / "results"
    write_table([{**columns, "method": "qgnet", "seed": 1, "miou": 60.0},
                 {**columns, "method": "pfenet", "seed": 1, "miou": 61.0}], results / "a")
    write_table([{**columns, "method": "qgnet", "seed": 1, "shots": 5, "miou": 60.5}], results / "a2")
    write_table([{**columns, "method": "qgnet", "seed": 1, "miou": 62.0}], results / "b")
    monkeypatch.setattr(runs, "REPO", tmp_path)
    seed_rows = runs.seed_rows({"seeds": ["a", "a2", "b", "not_run_yet"]})
    assert len(runs.seed_rows({"seeds": "a"})) == 2 and len(seed_rows) == 2  # b's qgnet replaces a's and a2's
    sources = runs.seed_sources({"seeds": ["a", "a2", "b", "not_run_yet"]})  # the same rows by the grid they come from
    assert {name: [(row["method"], row["miou"]) for row in rows] for name, rows in sources.items()} == {
        "a": [("pfenet", 61.0)], "a2": [], "b": [("qgnet", 62.0)]}
    zoo_rows = [{**columns, "method": method, "seed": 0, "shots": shots, "miou": 63.0}
                for method in ("qgnet", "pfenet") for shots in (1, 5)]
    spread = {(row["method"], row["setting"]): row["mIoU per seed"] for row in seed_spread(zoo_rows, seed_rows)}
    assert spread == {("qgnet", "1-way 1-shot"): "63.0 / 62.0", ("pfenet", "1-way 1-shot"): "63.0 / 61.0"}


def test_many_learning_curves_go_into_one_panel_per_method():
    import matplotlib.pyplot as plt

    from fsslib.viz import plot_learning_curves

    history = [{"epoch": e, "val_miou": float(e)} for e in range(1, 9)]
    grid = {f"{method}-fold{fold}-1shot-seed0": history for method in ("pfenet", "lfss", "qgnet") for fold in range(4)}
    figure = plot_learning_curves(grid, title="zoo")
    assert [ax.get_title() for ax in figure.axes if ax.lines] == ["pfenet", "lfss", "qgnet"]
    assert all(len(ax.lines) == 5 for ax in figure.axes if ax.lines)  # the 4 folds and their mean
    mean = next(line for line in figure.axes[0].lines if line.get_label() == "mean")
    assert list(mean.get_ydata()) == [float(e) for e in range(1, 9)] and figure.axes[0].collections  # and the range
    runs = {f"run{i}": history for i in range(12)}  # no shared group: one panel, as for few runs
    assert len([ax for ax in plot_learning_curves(runs).axes if ax.lines]) == 1
    plt.close("all")


@pytest.mark.slow  # trains: scheduled first under -n, left out of make test-fast
def test_a_compare_grid_trains_its_ckpt_null_runs_through_the_notebook_and_marks_their_model(tmp_path):
    from fsslib.runs import execute

    grid = tmp_path / "compare_live.yaml"
    grid.write_text("name: compare_live\ncompare: true\nnotebook: notebooks/90_train_eval.ipynb\njobs: 2\n"
                    "fixed: {preset: toy, seed: 0, fold: 1, episodes: 25, ckpt: zoo}\n"
                    "grid:\n  method: [all-foreground]\nextra:\n  - {method: prototype, ckpt: null}\n")
    rows = execute(grid, smoke=True, outputs=tmp_path / "out", results=tmp_path / "results")
    assert [(r["method"], r["model"]) for r in rows] == [("all-foreground", "none (training-free)"),
                                                         ("prototype", "trained by this grid")]
    trained = tmp_path / "out" / "prototype-fold1-1shot-seed0"
    assert rows[1]["checkpoint"] == str(trained / "best.pt") and (trained / "90_train_eval.ipynb").is_file()
    text = (tmp_path / "results" / "compare_live_smoke.md").read_text()
    assert "mIoU and FB-IoU in %, fold 1 " in text and "trained by this grid" in text and "2-way" not in text.split("## Support")[0]
    written = (trained / "metrics.json").stat().st_mtime_ns
    again = execute(grid, smoke=True, outputs=tmp_path / "out", results=tmp_path / "results", resume=True)
    assert [r["miou"] for r in again] == [r["miou"] for r in rows] and (trained / "metrics.json").stat().st_mtime_ns == written
    with pytest.raises(FsslibError, match="did not evaluate it with the grid's settings"):  # FSSLIB_SMOKE (conftest)
        execute(grid, smoke=False, outputs=tmp_path / "out", results=tmp_path / "results", resume=True)  # shrank it
    grid.write_text(grid.read_text().replace("notebook: notebooks/90_train_eval.ipynb\n", ""))
    with pytest.raises(FsslibError, match="names no notebook"):
        execute(grid, smoke=True, outputs=tmp_path / "out2", results=tmp_path / "results")


def test_a_mechanism_s_difference_per_stratum_is_paired_on_the_same_episodes(tmp_path):
    from fsslib.compare import strata_differences

    runs = fabricated_runs(tmp_path, {("piclip", ""): 0.0, ("pfenet", ""): 0.0}, varied=True)
    folders = {(row["method"], row["fold"]): folder for row, folder in runs}
    for fold in range(4):  # the same IoU per episode for both methods
        (folders["pfenet", fold] / "episodes.npz").write_bytes((folders["piclip", fold] / "episodes.npz").read_bytes())
    same = strata_differences(runs)  # the same draws for both methods: every difference and interval is exactly 0
    assert same and all(row["method"] == "piclip - pfenet" and row["miou"] == row["low"] == row["high"] == 0.0 for row in same)
    for row, folder in runs:  # piclip's every episode scores 0.1 more IoU (I + 1 of U = 10): +10 points wherever it ran
        if row["method"] == "piclip":
            saved = dict(np.load(folder / "episodes.npz"))
            saved["counts"][:, 1, 0] += 1
            np.savez(folder / "episodes.npz", **saved)
    shifted = strata_differences(runs)
    assert [(r["grouping"], r["stratum"], r["episodes"]) for r in shifted] == [(r["grouping"], r["stratum"], r["episodes"]) for r in same]
    assert all(row["miou"] == pytest.approx(10.0) and row["low"] == pytest.approx(10.0) == row["high"] for row in shifted)
    assert strata_differences(runs, pairs=(("qgnet", "pfenet"),)) == []  # a pair that did not run



def test_a_variant_can_be_compared_per_stratum_when_a_grid_names_it(tmp_path):
    """A control of one mechanism (e.g. PI-CLIP without PIR) is a variant: named in ``strata_pairs`` as
    ``method (variant)``, it enters the strata and their paired differences; unnamed, it stays out."""
    from fsslib.compare import strata_differences, variants_in
    from fsslib.runs import check_parameters

    runs = fabricated_runs(tmp_path, {("piclip", ""): 0.5, ("piclip", "no_pir"): 0.7}, varied=False)
    pairs = (("piclip (no_pir)", "piclip"),)
    assert variants_in(pairs) == ("piclip (no_pir)",)
    assert {row["method"] for row in strata_table(runs)} == {"piclip"}
    assert {row["method"] for row in strata_table(runs, variants=variants_in(pairs))} == {"piclip", "piclip (no_pir)"}
    differences = strata_differences(runs, pairs)
    assert differences and all(row["method"] == "piclip (no_pir) - piclip" and row["miou"] == pytest.approx(20.0)
                               for row in differences)
    grid = {"name": "control", "compare": True, "strata_pairs": [["piclip (no_pir)", "pfenet"]]}
    with pytest.raises(FsslibError, match=r"\['pfenet'\], which no run is"):
        check_parameters(grid, [{"method": "piclip", "variant": "no_pir", "fold": 0, "ckpt": None}])


def test_the_committed_comparison_scores_every_row_on_the_same_episodes_and_means_the_unrounded_rows():
    """compare_toy's rows share one episode count and test seed, and each mean over the 4 folds that notebook 08
    draws is the mean of the 4 rows' unrounded mIoUs; a setting some fold lacks (a model not yet trained on every fold) has
    no mean (a fraction of a second: CSVs only)."""
    from fsslib.compare import SETTINGS
    from fsslib.tables import REPO

    rows, _, _ = read_comparison("compare_toy", REPO / "papermill_runs" / "results")
    assert len({(row["episodes"], row["seed"]) for row in rows}) == 1, "rows made on different episodes"
    for entry in comparison_table(rows):
        for ways, shots in SETTINGS:
            mine = [row["miou"] for row in rows if row["method"] == entry["method"] and not row["variant"]
                    and (row["ways"], row["shots"]) == (ways, shots)]
            mean = entry[f"{ways}-way {shots}-shot mIoU"]
            assert mean == pytest.approx(sum(mine) / 4) if len(mine) == 4 else mean is None, (entry["method"], ways, shots)


def test_the_side_by_side_lesson_s_takeaways_hold_on_the_committed_comparison():
    """Notebook 08's takeaways, against the committed compare_toy (CSVs only): LFSS, reading class names and no
    mask, is among the highest 4-fold means at 1-way 1-shot (none above it by more than the resolved threshold for
    two means over the 4 folds), and leads its baseline PFENet by more than that threshold; PI-CLIP lifts none of
    its three baselines beyond it; whole support images, as CLIP-DINOiser's prompts, score below its text prompts at
    1 shot."""
    from fsslib.compare import resolution_thresholds, seed_spread
    from fsslib.runs import seed_rows
    from fsslib.tables import REPO, load_grid

    rows, _, _ = read_comparison("compare_toy", REPO / "papermill_runs" / "results")
    table = {entry["method"]: entry for entry in comparison_table(rows)}
    seeds = seed_rows(load_grid(REPO / "papermill_runs" / "compare_toy.yaml"))
    thresholds = {row["setting"]: row for row in resolution_thresholds(seed_spread(rows, seeds))}
    threshold = float(thresholds["1-way 1-shot"]["two means over 4 folds"])
    one_shot = {method: entry["1-way 1-shot mIoU"] for method, entry in table.items()}
    masks = [method for method, entry in table.items() if "pixel masks" in entry["support annotation"]]
    assert table["lfss"]["support annotation"] == "class names" and {"pfenet", "piclip", "qgnet"} <= set(masks)
    assert max(value for value in one_shot.values() if value is not None) - one_shot["lfss"] < threshold
    assert one_shot["lfss"] - one_shot["pfenet"] > threshold
    for baseline in ("pfenet", "bam", "hdmnet"):
        plugged = "piclip" if baseline == "pfenet" else f"piclip-{baseline}"
        assert one_shot[plugged] - one_shot[baseline] < threshold, baseline
    assert one_shot["clip-dinoiser-support"] < one_shot["clip-dinoiser"]
