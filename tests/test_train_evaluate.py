import json
import statistics
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsslib import evaluate, train
from fsslib.config import make_config
from fsslib.errors import FsslibError
from fsslib.provenance import cpu_model

METRIC_KEYS = {"miou", "fbiou", "per_class_iou", "episodes", "episodes_per_s", "tier", "method", "fold", "ways", "shots", "seed",
               "torch", "commit", "device"}


def test_all_foreground_evaluation_writes_metrics(tiny_cfg, tmp_path):
    metrics = evaluate.run(tiny_cfg(method="all-foreground", episodes=30, out=str(tmp_path / "af")))
    saved = json.loads((tmp_path / "af" / "metrics.json").read_text())
    assert METRIC_KEYS <= set(saved) and saved["episodes"] == 30 and saved["tier"] == "toy"
    assert 0 < metrics["miou"] < 30  # objects cover a small part of the image
    assert set(saved["per_class_iou"]) <= {"solid circle", "striped square", "dotted triangle", "checkered star", "solid cross"}


def test_multi_seed_reports_mean_and_std(tiny_cfg, tmp_path):
    metrics = evaluate.run(tiny_cfg(method="all-foreground", episodes=10, eval_seeds=3, out=str(tmp_path / "ms")))
    assert metrics["seeds"] == [0, 1, 2] and len(metrics["per_seed_miou"]) == 3
    assert metrics["miou"] == pytest.approx(sum(metrics["per_seed_miou"]) / 3)
    assert metrics["miou_std"] == pytest.approx(statistics.stdev(metrics["per_seed_miou"]))
    assert metrics["episodes"] == 30 and len(metrics["per_seed"]) == 3


@pytest.mark.slow
def test_train_then_evaluate_prototype(tiny_cfg, tmp_path):
    out = tmp_path / "proto"
    summary = train.run(tiny_cfg(method="prototype", out=str(out)))
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file() and (out / "log.jsonl").is_file()
    assert len(summary["history"]) == 1 and "val_miou" in summary["history"][0]
    metrics = evaluate.run(tiny_cfg(method="prototype", ckpt=summary["checkpoint"], out=str(out / "eval")))
    assert metrics["episodes"] == 40 and metrics["checkpoint"] == summary["checkpoint"]


def test_training_augmented_on_the_device_equals_the_loader_s_run_on_the_cpu(tiny_cfg, tmp_path):
    """--augment-on device (the paper preset's on a GPU) trains the same weights as the loader's augmentation on the
    CPU; auto picks the device on a GPU only; an unknown place is refused by name."""
    weights = {}
    for where in ("loader", "device"):
        train.run(tiny_cfg(method="prototype", out=str(tmp_path / where), augment_on=where, device="cpu"))
        weights[where] = torch.load(tmp_path / where / "last.pt", weights_only=True)["model"]
    for name, tensor in weights["loader"].items():
        torch.testing.assert_close(weights["device"][name], tensor, rtol=0, atol=0, msg=name)
    assert make_config(method="pfenet", preset="paper").augment_on == "auto"
    assert make_config(method="pfenet", preset="toy").augment_on == "loader"
    assert [train.augment_place("auto", torch.device(kind)) for kind in ("cpu", "cuda")] == ["loader", "device"]
    assert train.augment_place("device", torch.device("cpu")) == "device"
    with pytest.raises(FsslibError, match="--augment-on"):
        make_config(method="prototype", augment_on="gpu")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["prototype", "piclip-hdmnet"])
def test_resume_reproduces_an_uninterrupted_run(method, tiny_cfg, tmp_path, monkeypatch):
    # bit for bit on the CPU; on CUDA two uninterrupted runs already differ (nondeterministic kernels). PI-CLIP encodes
    # its class prompts as classes first appear: the resumed run meets them in other groups than the uninterrupted one
    settings = dict(method=method, epochs=2, episodes_per_epoch=16, val_episodes=8, device="cpu")
    train.run(tiny_cfg(out=str(tmp_path / "full"), **settings))
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)

    real_save = train.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if path.name == "last.pt":
            raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(tiny_cfg(out=str(tmp_path / "killed"), **settings))
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 1
    train.run(tiny_cfg(out=str(tmp_path / "killed"), resume=True, **settings))
    resumed = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert resumed["epoch"] == 2
    for name, tensor in full["model"].items():
        torch.testing.assert_close(resumed["model"][name], tensor, rtol=0, atol=0, msg=name)
    assert [h["val_miou"] for h in resumed["history"]] == [h["val_miou"] for h in full["history"]]
    # each sitting's CPU and epochs: here one kind of CPU, one span over both sittings
    assert resumed["trained_on"] == full["trained_on"] == [{"processor": cpu_model(), "epochs": [1, 2]}]


@pytest.mark.slow
def test_resume_refuses_changed_settings(tiny_cfg, tmp_path):
    from fsslib.errors import CheckpointError

    train.run(tiny_cfg(method="prototype", out=str(tmp_path / "r")))
    with pytest.raises(CheckpointError, match="epochs=1"):
        train.run(tiny_cfg(method="prototype", out=str(tmp_path / "r"), resume=True, epochs=3))


@pytest.mark.slow
def test_checkpoint_of_other_settings_or_corrupt_is_refused(tiny_cfg, tmp_path):
    from fsslib.errors import CheckpointError

    summary = train.run(tiny_cfg(method="prototype", out=str(tmp_path / "p")))
    with pytest.raises(CheckpointError, match="feature_dim"):
        evaluate.run(tiny_cfg(method="prototype", ckpt=summary["checkpoint"], options={"feature_dim": 32}))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        evaluate.run(tiny_cfg(method="prototype", ckpt=str(broken)))


def test_unknown_method_option_is_refused(tiny_cfg):
    from fsslib.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="(?s)option of method prototype.*feature_dim"):
        tiny_cfg(method="prototype", options={"prior": "vvp"})


@pytest.mark.slow
def test_training_free_method_is_refused_by_the_trainer(tiny_cfg):
    from fsslib.errors import FsslibError

    with pytest.raises(FsslibError, match="training-free"):
        train.run(tiny_cfg(method="all-foreground"))


def _cli(args, **env):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, cwd=Path(__file__).parent.parent)


@pytest.mark.slow
def test_command_line_train_and_evaluate(tmp_path, toy_root, run_main):
    """``python -m fsslib.train`` and ``python -m fsslib.evaluate`` as their ``main(argv)`` in this process: the same
    parsing, files and messages without two interpreters that import torch again (the commands as the processes a
    user starts, and 1-way evaluation: tests/test_paper_tier_cli.py's prototype)."""
    out = tmp_path / "cli"
    run_main("fsslib.train", "--method", "prototype", "--smoke", "--no-progress", "--fold", "3", "--out", str(out))
    printed = run_main("fsslib.evaluate", "--method", "prototype", "--smoke", "--fold", "3", "--ways", "2", "--shots", "1",
                      "--ckpt", str(out / "best.pt"), "--out", str(out / "eval2"), "--no-progress")
    two_way = json.loads((out / "eval2" / "metrics.json").read_text())
    assert "2-way" in printed and "mIoU" in printed
    assert (two_way["fold"], two_way["ways"], two_way["shots"], two_way["episodes"]) == (3, 2, 1, 40)


def test_more_processes_than_gpus_is_refused(monkeypatch):
    from fsslib.errors import FsslibError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert train.process_device(torch.device("cuda"), world=2, local_rank=0) == torch.device("cuda", 0)
    assert train.process_device(torch.device("cpu"), world=2, local_rank=1) == torch.device("cpu")
    with pytest.raises(FsslibError, match="--nproc_per_node 1"):
        train.process_device(torch.device("cuda"), world=2, local_rank=1)


def test_an_out_folder_that_cannot_be_made_is_refused_before_any_work(tiny_cfg, tmp_path):
    """Training and evaluation check --out first: a folder under a file, or a file in its place, names the path and
    the fix, instead of a traceback at the first checkpoint or, for evaluation, after every episode has run."""
    from fsslib.errors import FsslibError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for job in (train.run, evaluate.run):
        with pytest.raises(FsslibError, match="Cannot create the folder --out .*a-file is a file"):
            job(tiny_cfg(method="prototype", out=str(blocker / "run")))
        with pytest.raises(FsslibError, match="is a file"):
            job(tiny_cfg(method="all-foreground", out=str(blocker)))
