"""The paper tier's reproduction grids (``papermill_runs/paper/``): their plan, their refusal to start while a file is
missing, and a rehearsal of each through its own grid file on fabricated PASCAL-5i with random weights at a reduced
size (``--set``), down to the table that sets fsslib's fold beside the paper's."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fsslib import runs, tables
from fsslib.config import make_config
from fsslib.papers import has_reported, reported
from fsslib.plan import run_plans

pytestmark = pytest.mark.budget(10)  # the rehearsals have their own

REPO = Path(__file__).resolve().parent.parent
GRIDS = REPO / "papermill_runs" / "paper"
PAPER_GRIDS = {  # grid file -> (paper, benchmark, methods, settings of the paper's table it holds: (ways, shots))
    "piclip.yaml": ("piclip", "pascal", {"piclip", "piclip-bam", "piclip-hdmnet", "bam", "hdmnet"}, {(1, 1), (1, 5)}),
    "piclip_coco.yaml": ("piclip", "coco", {"piclip"}, {(1, 1), (1, 5)}),
    "lfss.yaml": ("lfss", "pascal", {"lfss"}, {(1, 1)}),
    "lfss_coco.yaml": ("lfss", "coco", {"lfss"}, {(1, 1)}),
    "qgnet.yaml": ("qgnet", "pascal", {"qgnet"}, {(1, 1), (1, 5)}),
    "qgnet_coco.yaml": ("qgnet", "coco", {"qgnet"}, {(1, 1), (1, 5)}),
    "clip_dinoiser.yaml": ("clip-dinoiser-support", "pascal", {"clip-dinoiser-support"}, {(1, 1), (2, 1)}),
}
REDUCED = ["fold=0", "image_size=65", "epochs=1", "episodes_per_epoch=2", "batch_size=2", "episodes=2",
           "num_workers=0", "backbone_weights=random"]  # the CPU's size; the code path is the paper's
REHEARSED = {  # grid -> what else it sets: one run of fold 0, random CLIPs, one prompt template, windows for 65
    "piclip.yaml": ["shots=1", "method=[piclip, piclip-hdmnet]", "options.clip_pretrained=null"],  # + the base learner
    "lfss.yaml": ["options.clip_pretrained=null", "options.templates=single"],
    "qgnet.yaml": ["shots=1", "options.prior_extractor=random"],
    "clip_dinoiser.yaml": ["variant=''", "test_shots=[1]", "options.clip_pretrained=null", "options.templates=single",
                           "options.window=64", "options.stride=32"],  # training-free, 1- and 2-way
}


def test_the_set_of_paper_grids_is_each_papers_main_table(monkeypatch):
    """One grid per paper's PASCAL-5i table and per COCO-20i table it has, 4 folds, the shots the paper reports, the
    paper preset, the paper's rows in fsslib.papers; each run's config builds; nothing else in the folder."""
    monkeypatch.delenv("FSSLIB_SMOKE", raising=False)  # the grids' own settings, not the test suite's tiny ones
    assert {path.name for path in GRIDS.glob("*.yaml")} == set(PAPER_GRIDS)
    for name, (paper, benchmark, methods, settings) in PAPER_GRIDS.items():
        grid = tables.load_grid(GRIDS / name)
        expanded = runs.expand(grid)
        runs.check_parameters(grid, expanded)
        assert grid["paper"] == paper and runs.runner_of(grid) == "python" and grid["name"] == f"paper_{Path(name).stem}"
        plans = run_plans(expanded)
        assert {p.cfg.method for p in plans} == methods and {p.cfg.benchmark for p in plans} == {benchmark}
        assert {p.cfg.preset for p in plans} == {"paper"} and {p.cfg.fold for p in plans} == {0, 1, 2, 3}
        evaluated = {setting for p in plans for setting in p.evaluations}
        assert settings <= evaluated, name
        for method in methods:
            for ways, shots in settings:
                assert has_reported(paper, method, shots, ways, benchmark), (name, method, ways, shots)
        trained = {p.cfg.shots for p in plans if p.trains}
        assert trained <= {shots for _, shots in settings}, name  # a model per number of shots the paper trains
    recipes: dict[str, set] = {}
    for plan in run_plans(runs.expand(tables.load_grid(GRIDS / "piclip.yaml"))):
        recipes.setdefault(plan.cfg.method, set()).add((plan.cfg.shots, plan.cfg.batch_size, plan.cfg.epochs))
    for method in ("piclip", "piclip-bam", "piclip-hdmnet"):
        assert recipes[method] == {(1, 4, 30), (5, 2, 30)}, method  # PI-CLIP's Sec. 4.1 on every baseline
    assert recipes["bam"] == {(1, 8, 200), (5, 8, 200)} and recipes["hdmnet"] == {(1, 4, 200), (5, 4, 200)}
    dinoiser = run_plans(runs.expand(tables.load_grid(GRIDS / "clip_dinoiser.yaml")))
    assert {p.cfg.score_resize for p in dinoiser} == {"probabilities"}  # the official evaluation's resize
    assert {p.trains for p in dinoiser} == {True, False}  # training-free, and the trained adapter


def test_the_paper_tier_page_states_each_grids_runs_and_estimated_hours(monkeypatch):
    """docs/paper_tier.md's table of grids holds each grid's number of runs and its plan's GPU-hours as the plan
    computes them (one decimal under 10 hours, whole hours above)."""
    monkeypatch.delenv("FSSLIB_SMOKE", raising=False)
    page = (REPO / "docs" / "paper_tier.md").read_text()
    for name in PAPER_GRIDS:
        row = next(line for line in page.splitlines() if line.startswith(f"| `paper/{name}` |"))
        runs_cell, hours_cell = [cell.strip() for cell in row.strip("|").split("|")][2:4]
        plans = run_plans(runs.expand(tables.load_grid(GRIDS / name)))
        total = sum(plan.hours.hours for plan in plans)
        assert (runs_cell, hours_cell) == (str(len(plans)), f"{total:.1f}" if total < 10 else f"{total:.0f}"), name


def test_the_plan_names_what_is_missing_with_its_fetch_command_and_the_gpu_hours(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FSSLIB_SMOKE", raising=False)
    monkeypatch.setenv("FSSLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    runs.main([str(GRIDS / "piclip.yaml"), "--plan"])
    plan = capsys.readouterr().out
    assert ("40 runs of bam, hdmnet, piclip, piclip-bam, piclip-hdmnet on PASCAL-5i; folds 0, 1, 2, 3; trained on 1-shot, "
            "5-shot episodes; 1 seed (0)") in plan
    base_learner = tmp_path / "weights" / "base-learner-pascal-fold2.pt"
    assert f"MISSING  base learner of fold 2 (8 runs, e.g. piclip-bam-fold2-1shot-seed0): {base_learner}" in plan
    assert "`python -m fsslib.pretrain base-learner --fold 2 --tier paper`" in plan
    assert f"MISSING  pascal (every run): {tmp_path / 'data' / 'VOCdevkit' / 'VOC2012' / 'fsslib_prepared.json'}" in plan
    for command in ("python -m fsslib.fetch pascal", "python -m fsslib.fetch weights ViT-B-16/openai",
                    "`python -m fsslib.fetch weights resnet50-deepstem` checks it in place",
                    "python -m fsslib.fetch --all-for piclip"):
        assert command in plan, command
    # 30 epochs of 5953 episodes at 19.8 steps/s of 4 episodes; 5-shot: 3x the images per episode
    one_shot = 30 * 5953 / (19.8 * 4) / 3600
    assert f"{one_shot:.2f} GPU-hours per run ({one_shot:.2f} training), 4 runs" in plan
    assert "benchmarks/README.md, 'Every method, one GPU'" in plan and "NVIDIA H200" in plan
    with pytest.raises(SystemExit) as exit_code:  # a plain run refuses, naming each file and its command
        runs.main([str(GRIDS / "qgnet.yaml"), "--outputs", str(tmp_path / "out"), "--results", str(tmp_path / "res")])
    refused = capsys.readouterr().err
    assert exit_code.value.code == 2 and "cannot start: 3 of the files its runs read are missing (nothing has run)" in refused
    assert "qgnet_prior_extractor_pascal.pth.tar" in refused and "python -m fsslib.pretrain qgnet-prior" in refused
    assert "python -m fsslib.fetch pascal" in refused and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def fabricated(tmp_path_factory) -> Path:
    """The user's folder: PASCAL-5i prepared from fabricated archives (tests/test_paper_tier_cli.py's builder) and
    random CLIP-DINOiser heads where the grid reads them."""
    from test_paper_tier_cli import fabricate_pascal

    from fsslib.data.pascal import prepare_pascal

    home = tmp_path_factory.mktemp("paper_grids")
    voc_tar, sbd_tgz = fabricate_pascal(home / "downloads")
    prepare_pascal(voc_tar, sbd_tgz, home / "data" / "VOCdevkit" / "VOC2012")
    heads = home / "weights" / "clip_dinoiser" / "last.pt"
    heads.parent.mkdir(parents=True)
    torch.save({"model_state_dict": {"obj_proj.weight": torch.randn(256, 768, 3, 3) * 0.01, "obj_proj.bias": torch.zeros(256),
                                     "bkg_decoder.weight": torch.randn(1, 768, 1, 1) * 0.01, "bkg_decoder.bias": torch.zeros(1)}},
               heads)
    from fsslib.data.benchmarks import get_benchmark
    from fsslib.pretrain.base_learner.files import RANDOM_HIDDEN, random_base_learner, save_base_learner

    base_classes = get_benchmark("pascal").base_classes(0)  # BAM's stage 1 of fold 0, untrained, in its file format
    save_base_learner(home / "weights" / "base-learner-pascal-fold0.pt",
                      random_base_learner("resnet50-deepstem", len(base_classes), RANDOM_HIDDEN), "resnet50-deepstem",
                      "pascal", 0, base_classes, crop=473)
    return home


@pytest.mark.slow
@pytest.mark.budget(20)  # 4-15 s each on two busy cores
@pytest.mark.parametrize("grid", sorted(REHEARSED))
def test_each_paper_grid_runs_through_its_own_file_at_a_reduced_size(grid, fabricated, tmp_path, monkeypatch, capsys,
                                                                   random_builds_once):
    """The grid file itself, with --set for the size, the epochs, the episodes and random weights: it trains and
    evaluates fold 0 through fsslib.launch and writes its table, fsslib's fold beside the paper's (the random
    ResNet-50s and CLIPs drawn once per session: ``random_builds_once``)."""
    monkeypatch.setenv("FSSLIB_DATA", str(fabricated / "data"))
    monkeypatch.setenv("FSSLIB_WEIGHTS", str(fabricated / "weights"))
    settings = [item for setting in [*REDUCED, *REHEARSED[grid]] for item in ("--set", setting)]
    runs.main([str(GRIDS / grid), *settings, "--jobs", "1", "--threads", "1", "--outputs", str(tmp_path / "out"), "--results", str(tmp_path / "res")])
    name = tables.load_grid(GRIDS / grid)["name"] + "_set"
    with (tmp_path / "res" / f"{name}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    paper = PAPER_GRIDS[grid][0]
    assert {(r["tier"], r["benchmark"], r["fold"], r["episodes"]) for r in rows} == {("paper", "pascal", "0", "2")}
    page = (tmp_path / "res" / f"{name}.md").read_text()
    assert tables.PAPER_HEADING in page
    first = rows[0]
    printed = reported(paper, first["method"], int(first["shots"]), int(first["ways"]))
    label = f"{first['method']}{' (' + first['variant'] + ')' if first['variant'] else ''} {first['ways']}-way {first['shots']}-shot"
    ours = float(first["miou"])
    line = next(line for line in page.splitlines() if line.startswith(f"| {label} | fsslib (1 seed) |"))
    assert line.split("|")[3].strip() == tables.shown(ours)
    if printed.folds[0] is not None:
        difference = next(line for line in page.splitlines() if line.startswith(f"| {label} | difference"))
        assert difference.split("|")[3].strip().lstrip("+") == tables.shown(ours - printed.folds[0]).lstrip("+")
    if grid == "clip_dinoiser.yaml":  # natively 2-way, and scored as its official evaluation scores
        assert {r["ways"] for r in rows} == {"1", "2"}
        assert make_config("clip-dinoiser-support", "paper", score_resize="probabilities").score_resize == "probabilities"


def test_the_paper_table_sets_each_fold_and_mean_beside_the_papers_with_the_seed_count():
    rows = [dict(method="piclip", variant="", benchmark="pascal", fold=fold, ways=1, shots=1, train_shots=1, seed=seed,
                 miou=base + seed) for fold, base in zip(range(4), (66.0, 75.0, 70.0, 68.2)) for seed in (0, 1, 2)]
    rows.append(dict(method="piclip", variant="", benchmark="pascal", fold=0, ways=2, shots=1, train_shots=1, seed=0,
                     miou=50.0))
    table = {(entry["setting"], entry["row"]): entry for entry in tables.paper_comparison(rows, "piclip")}
    paper, ours = table[("piclip 1-way 1-shot", "paper (Table 1, PI-CLIP (PFENet))")], table[("piclip 1-way 1-shot", "fsslib (3 seeds)")]
    assert [paper[f"fold {f}"] for f in range(4)] + [paper["mean"]] == ["67.4", "76.5", "71.3", "69.4", "71.2"]
    assert [ours[f"fold {f}"] for f in range(4)] + [ours["mean"]] == ["67.0", "76.0", "71.0", "69.2", "70.8"]
    difference = table[("piclip 1-way 1-shot", "difference (fsslib - paper)")]
    assert [difference[f"fold {f}"] for f in range(4)] + [difference["mean"]] == ["-0.4", "-0.5", "-0.3", "-0.2", "-0.4"]
    assert table[("piclip 1-way 1-shot", "fsslib: sd over seeds")]["fold 0"] == "1.0"
    assert ("piclip 2-way 1-shot", "paper: not reported") in table and table[("piclip 2-way 1-shot", "fsslib (1 seed)")]["mean"] == ""
    coco = [dict(method="qgnet", variant="", benchmark="coco", fold=fold, ways=1, shots=5, train_shots=5, seed=0, miou=40.0)
            for fold in range(4)]
    printed = {entry["row"]: entry for entry in tables.paper_comparison(coco, "qgnet")}["paper (Table III, 473 x 473)"]
    assert [printed[f"fold {f}"] for f in range(4)] + [printed["mean"]] == ["41.5", "48.1", "46.3", "43.6", "44.8"]


README_ROWS = {  # fsslib.rates' method -> the label its row opens with in benchmarks/README.md's H200 table
    "prototype": "prototype baseline", "pfenet": "PFENet (deep-stem", "piclip": "PI-CLIP (PFENet", "lfss": "LFSS (",
    "qgnet": "QGNet (", "clip-dinoiser-support": "CLIP-DINOiser with supports", "bam": "BAM (", "hdmnet": "HDMNet (",
    "piclip-bam": "PI-CLIP (BAM", "piclip-hdmnet": "PI-CLIP (HDMNet",
}
FIVE_SHOT_ROWS = {"pfenet": "PFENet", "piclip": "PI-CLIP (PFENet)", "bam": "BAM", "hdmnet": "HDMNet",
                  "piclip-bam": "PI-CLIP (BAM)", "piclip-hdmnet": "PI-CLIP (HDMNet)"}  # the 5-shot table's rows


def test_the_measured_rates_are_the_benchmarks_readme():
    """fsslib.rates holds benchmarks/README.md's 'Every method, one GPU' rates, number for number."""
    from fsslib.rates import RATES

    readme = (REPO / "benchmarks" / "README.md").read_text().split("Every trained method at its own paper input size")[1]
    assert set(RATES) == set(README_ROWS)
    for method, rate in RATES.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {README_ROWS[method]}"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:4] == [str(rate.input_size), f"{rate.train_steps_per_s:g}", f"{rate.eval_episodes_per_s:g}"], row
    five_shot = readme.split("At 5 shots, 1-way")[1]
    for method, rate in RATES.items():
        label = FIVE_SHOT_ROWS.get(method)
        row = next((line for line in five_shot.splitlines() if label and line.startswith(f"| {label} |")), None)
        if rate.five_shot is None:
            assert row is None, method
            continue
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:3] == [f"{value:g}" for value in rate.five_shot], row


def test_a_five_shot_run_reads_its_measured_rate_and_a_ten_shot_one_scales_it():
    """A 5-shot training episode costs 1 / (4 x the 5-shot steps/s); 10 shots: (1 + 10) / (1 + 5) of that; a method
    without a 5-shot measurement scales its 1-shot rate by the images, (1 + K) / 2."""
    from fsslib.rates import RATES

    hdmnet, lfss = RATES["hdmnet"], RATES["lfss"]
    assert hdmnet.seconds_per_episode(1, 5, True) == pytest.approx(1 / (4 * 8.02))
    assert hdmnet.seconds_per_episode(1, 10, True) == pytest.approx(11 / 6 / (4 * 8.02))
    assert hdmnet.seconds_per_episode(2, 1, False) == pytest.approx(3 / 2 / 129)
    assert lfss.seconds_per_episode(1, 5, True) == pytest.approx(6 / 2 / (4 * 20.5))
