"""The toy backbone's pretraining (fsslib.pretrain.toy_resnet, the pretrain CLI) and the shipped weights that
``build_backbone`` loads by default."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from fsslib.errors import CheckpointError
from fsslib.models.backbones import TOY_RESNET_CHECKPOINT, ToyResNet, build_backbone
from fsslib.pretrain import PRETRAINERS
from fsslib.pretrain.__main__ import main
from fsslib.pretrain.toy_resnet import train_toy_backbone
from fsslib.pretrain.toy_resnet.cli import build_parser


def test_a_few_steps_lower_the_loss_and_write_a_loadable_checkpoint(tmp_path, one_torch_thread):
    out = tmp_path / "toy.pt"
    metadata = train_toy_backbone(out, steps=12, batch_size=4, pool_size=4, lr=3e-3, warmup_steps=1,
                                  n_eval_images=8, n_cam_images=4, progress=False)
    assert metadata["train_loss"]["last_steps"] < 0.7 * metadata["train_loss"]["first_steps"]
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["steps"] == 12 and saved["command"].startswith("python -m fsslib.pretrain toy-resnet")
    assert {"seed", "git_commit", "wall_time_minutes", "hardware"} <= set(saved)
    assert 0 <= saved["held_out"]["classification"]["mAP"] <= 1
    backbone = build_backbone("toy-resnet", weights=out)
    assert isinstance(backbone, ToyResNet)


def test_shipped_weights_load_by_default_with_documented_shapes():
    assert TOY_RESNET_CHECKPOINT.is_file() and TOY_RESNET_CHECKPOINT.stat().st_size < 5e6
    backbone = build_backbone("toy-resnet").eval()
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, 64, 64))
    assert features["layer1"].shape == (2, 24, 32, 32)
    assert features["layer2"].shape == (2, 48, 8, 8)
    assert features["layer3"].shape == (2, 96, 8, 8)
    assert features["layer4"].shape == (2, 192, 8, 8)
    random_init = build_backbone("toy-resnet", weights="random")
    pretrained_conv, random_conv = backbone.stem[0].weight, random_init.stem[0].weight  # (24, 3, 3, 3)
    assert not torch.allclose(pretrained_conv, random_conv)
    assert backbone.layer4.bn2.running_var.ne(1).any() and random_init.layer4.bn2.running_var.eq(1).all()


def test_missing_or_corrupt_weights_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt") as error:
        build_backbone("toy-resnet", weights=missing)
    assert "python -m fsslib.pretrain toy-resnet" in error.value.fix
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        build_backbone("toy-resnet", weights=corrupt)


def test_shipped_metadata_names_a_current_command_that_remakes_it():
    metadata = json.loads(TOY_RESNET_CHECKPOINT.with_suffix(".json").read_text())
    remake = metadata.get("remake", metadata["command"])  # 'remake': the current command of an older record
    assert remake.startswith("python -m fsslib.pretrain toy-resnet ")
    args = build_parser().parse_args(shlex.split(remake)[4:])
    recipe = metadata["recipe"]
    assert (args.steps, args.seed, args.batch_size, args.pool_size) == (
        metadata["steps"], metadata["seed"], recipe["batch_size"], recipe["pool_size"])
    assert (args.lr, args.weight_decay) == (recipe["lr"], recipe["weight_decay"])
    assert f"warm-up {args.warmup_steps} steps" in recipe["schedule"]
    assert args.out == Path("fsslib/checkpoints/toy_resnet.pt")


@pytest.mark.parametrize("name", sorted(PRETRAINERS))
def test_every_registered_name_has_a_command_line(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0 and f"python -m fsslib.pretrain {name}" in capsys.readouterr().out


def test_unknown_name_lists_the_registered_ones(capsys):
    with pytest.raises(SystemExit):
        main(["toy-nothing"])
    error = capsys.readouterr().err
    assert all(name in error for name in PRETRAINERS)


@pytest.mark.parametrize("arguments, message", [
    (["toy-resnet", "--evaluate", "missing.pt"], "missing.pt does not exist"),
    (["toy-dino", "--evaluate", "missing.pt"], "missing.pt does not exist"),
    (["toy-clip", "evaluate", "missing.pt"], "missing.pt does not exist"),
    (["base-learner", "--evaluate", "missing.pt"], "missing.pt"),
    (["toy-resnet", "--steps", "-5", "--out", "x.pt"], "--steps -5 is not above 0"),
    (["base-learner", "--fold", "0", "--batch-size", "0", "--out", "x.pt"], "--batch-size 0 is not above 0"),
    (["toy-found", "--steps", "-3", "--out", "x.pt"], "--steps -3 is not above 0"),
    (["qgnet-prior", "--lr", "nan", "--out", "x.pt"], "--lr nan is not above 0"),
])
def test_a_stand_in_s_bad_input_exits_with_its_message_and_fix(arguments, message, tmp_path, monkeypatch, capsys):
    """Every stand-in's user error (a missing checkpoint to evaluate, a count or rate at or below 0) exits with
    status 2 and the message and its fix, before any work and without a traceback."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(arguments)
    error = capsys.readouterr().err
    assert done.value.code == 2 and message in error and "How to fix" in error and "Traceback" not in error
    assert not (tmp_path / "x.pt").exists()
