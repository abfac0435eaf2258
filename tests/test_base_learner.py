"""BAM's stage 1 (fsslib.pretrain.base_learner): base-class labels as the official ``BaseData``, the training views,
a short run end to end, and the file BAM reads back."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fsslib.blocks.base_learner import BaseLearner
from fsslib.data.benchmarks import TOY
from fsslib.data.episodes import IMAGENET_MEAN, Source
from fsslib.errors import CheckpointError, FsslibError
from fsslib.models.backbones import ToyResNet
from fsslib.pretrain.base_learner.cli import build_parser
from fsslib.pretrain.base_learner.data import base_labels, random_crop, training_names
from fsslib.pretrain.base_learner.files import SHIPPED_FOLDER, base_learner_path, load_base_learner, save_base_learner
from fsslib.pretrain.base_learner.train import tier_settings, train_base_learner
from fsslib.pretrain.saving import file_sha256
from fsslib.provenance import cpu_model

pytestmark = pytest.mark.budget(5)


def official_base_data_label(label: np.ndarray, sub_list: list[int], num_classes: int = 20) -> np.ndarray:
    """chunbolang/BAM util/dataset.py, BaseData.__getitem__'s labelling loop."""
    label = label.copy()
    label_tmp = label.copy()
    for cls in range(1, num_classes + 1):
        select_pix = np.where(label_tmp == cls)
        if cls in sub_list:
            label[select_pix[0], select_pix[1]] = sub_list.index(cls) + 1
        else:
            label[select_pix[0], select_pix[1]] = 0
    return label


@pytest.mark.parametrize("fold", [0, 2])
def test_base_labels_are_the_official_ones(fold):
    """Base classes -> their 1-based index among the base classes, novel classes -> background, 255 kept."""
    label = np.random.default_rng(fold).choice([0, *range(1, 21), 255], size=(40, 40)).astype(np.uint8)
    expected = official_base_data_label(label, TOY.base_classes(fold))
    np.testing.assert_array_equal(base_labels(label, TOY.base_classes(fold)), expected)
    novel = np.isin(label, TOY.fold_classes(fold))
    assert (base_labels(label, TOY.base_classes(fold))[novel] == 0).all()


def test_the_training_images_keep_every_image_or_drop_the_novel_ones(toy_root):
    source = Source(TOY, "train")
    novel = TOY.fold_classes(0)
    assert training_names(source, novel, "pfenet") == source.names  # the official BaseData: the whole list
    kept = training_names(source, novel, "bam")
    assert 0 < len(kept) < len(source.names)
    assert all(not set(novel) & set(source.presence.get(name, {})) for name in kept)


def test_a_training_view_is_the_image_at_scale_one_and_padded_below_it():
    image = torch.rand(3, 32, 32)
    label = torch.randint(0, 16, (32, 32))
    view, view_label = random_crop(image, label, 32, (1.0, 1.0), 0.0, np.random.default_rng(0))
    assert torch.equal(view_label, label) or torch.equal(view_label, label.flip(-1))
    small, small_label = random_crop(image, label, 32, (0.5, 0.5), 0.0, np.random.default_rng(1))
    assert (small_label[:4] == 255).all() and (small_label[8:24, 8:24] != 255).all()  # padded on both sides
    torch.testing.assert_close(small[:, 0, 0], torch.tensor(IMAGENET_MEAN), atol=0.02, rtol=0)


def test_a_short_run_writes_a_base_learner_bam_can_read(toy_root, tmp_path):
    settings = tier_settings("toy", epochs=1, batch_size=8, train_images=16, evals_per_epoch=2, eval_images=8,
                             hidden=8, device="cpu")
    out = tmp_path / "base-learner-fold0.pt"
    metadata = train_base_learner(out, settings, progress=False)
    assert json.loads(out.with_suffix(".json").read_text())["curve"] == metadata["curve"]
    assert [point["step"] for point in metadata["curve"]] == [1, 2] and metadata["training_images"]["count"] == 16
    assert set(metadata["held_out"]) == {"val", "test"} and metadata["plateau"]["verdict"]
    learner = load_base_learner(out, "toy-resnet", "toy", 0, TOY.base_classes(0), "fix")
    assert learner(torch.rand(2, 3, 64, 64)).shape == (2, 16, 8, 8)
    with pytest.raises(CheckpointError, match="trained for fold=0"):
        load_base_learner(out, "toy-resnet", "toy", 1, TOY.base_classes(1), "fix")


def test_the_saved_file_holds_the_learner_in_float16(tmp_path):
    torch.manual_seed(0)
    learner = BaseLearner(ToyResNet(), 15, hidden=8).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = learner(images)
    path = save_base_learner(tmp_path / "b.pt", learner, "toy-resnet", "toy", 0, TOY.base_classes(0), 64)
    assert all(t.dtype == torch.float16 for t in torch.load(path, weights_only=True)["state"].values()
               if t.is_floating_point())
    with torch.no_grad():
        loaded = load_base_learner(path, "toy-resnet", "toy", 0, TOY.base_classes(0), "fix")(images)
    torch.testing.assert_close(loaded, expected, atol=0.05, rtol=0.01)


def test_the_paper_tier_is_the_official_recipe():
    """config/pascal/pascal_split0_resnet50_base.yaml with train_base.sh's 4 GPUs; --tier picks the defaults."""
    args = build_parser("paper").parse_args(["--fold", "1"])
    assert (args.benchmark, args.backbone, args.hidden, args.crop, args.scale_min, args.scale_max, args.max_angle) == \
        ("pascal", "resnet50-deepstem", 512, 417, 0.5, 2.0, 10.0)
    assert (args.lr, args.head_lr_multiplier, args.batch_size, args.epochs, args.momentum, args.weight_decay,
            args.poly_power, args.novel_rule) == (2.5e-4, 10.0, 12, 100, 0.9, 1e-4, 0.9, "pfenet")


SHIPPED = sorted(SHIPPED_FOLDER.glob("base-learner-fold*.pt"))


@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_each_shipped_base_learner_is_the_file_its_json_describes(path):
    """The .json's sha256 is the file's, its curve and plateau verdict are there, and it loads for its fold."""
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["checkpoint"]["sha256"] == file_sha256(path) and info["curve"] and info["plateau"]["verdict"]
    fold = info["settings"]["fold"]
    assert path == base_learner_path("toy", fold)
    load_base_learner(path, "toy-resnet", "toy", fold, TOY.base_classes(fold), "fix")


def test_the_shipped_base_learners_stay_small():
    """Four toy base learners (backbone and head in float16), one per fold: under 10 MB in all."""
    assert [path.stem for path in SHIPPED] == [f"base-learner-fold{fold}" for fold in range(4)]
    assert sum(path.stat().st_size for path in SHIPPED) < 10 * 2**20


@pytest.mark.budget(20)  # three short runs
def test_an_interrupted_run_resumes_to_the_same_weights_and_curve(toy_root, tmp_path, monkeypatch):
    """Stopped in epoch 2 of 3 (state saved after epoch 1), then resumed: the file and curve equal those of an
    uninterrupted run, other settings are refused, and the partial state is gone."""
    import fsslib.pretrain.base_learner.train as training
    from fsslib.errors import FsslibError

    settings = tier_settings("toy", epochs=3, batch_size=4, train_images=12, evals_per_epoch=2, eval_images=4,
                             eval_batch_size=4, hidden=8, device="cpu")  # 3 steps an epoch, curve points at 1, 2
    whole = train_base_learner(tmp_path / "whole.pt", settings, progress=False)
    steps = []
    real_loss = training.segmentation_loss

    def interrupted(*args, **kwargs):
        steps.append(1)
        if len(steps) == 5:  # step 2 of epoch 2
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(training, "segmentation_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_base_learner(tmp_path / "resumed.pt", settings, progress=False)
    assert (tmp_path / "resumed.partial.pt").is_file() and not (tmp_path / "resumed.pt").exists()
    monkeypatch.setattr(training, "segmentation_loss", real_loss)
    with pytest.raises(FsslibError, match="other settings"):
        train_base_learner(tmp_path / "resumed.pt", tier_settings(**{**settings.__dict__, "lr": 0.1}), progress=False,
                           resume=True)
    resumed = train_base_learner(tmp_path / "resumed.pt", settings, progress=False, resume=True)
    assert resumed["curve"] == whole["curve"] and resumed["best"] == whole["best"] and resumed["resumed_at_epoch"] == 1
    assert resumed["trained_on"] == whole["trained_on"] == [{"processor": cpu_model(), "epochs": [1, 3]}]
    for key, value in torch.load(tmp_path / "whole.pt")["state"].items():
        assert torch.equal(value, torch.load(tmp_path / "resumed.pt")["state"][key]), key
    assert not (tmp_path / "resumed.partial.pt").exists()


def test_bf16_training_steps_stay_close_to_float32_and_are_recorded(toy_root, tmp_path):
    """``precision="bf16"``: one epoch from the same start ends near the float32 run (bf16 rounds, so not equal) and
    its JSON records the setting; an unknown precision is refused before any data are read."""
    from fsslib.errors import UnknownNameError

    settings = dict(epochs=1, batch_size=4, train_images=8, evals_per_epoch=1, eval_images=4, eval_batch_size=4,
                    hidden=8, device="cpu")
    fp32 = train_base_learner(tmp_path / "fp32.pt", tier_settings("toy", **settings), progress=False)
    bf16 = train_base_learner(tmp_path / "bf16.pt", tier_settings("toy", precision="bf16", **settings), progress=False)
    assert bf16["settings"]["precision"] == "bf16" and fp32["settings"]["precision"] == "fp32"
    assert bf16["curve"][0]["train_loss"] == pytest.approx(fp32["curve"][0]["train_loss"], rel=0.05)
    assert bf16["curve"][0]["train_loss"] != fp32["curve"][0]["train_loss"]  # bf16 did round: autocast was on
    with pytest.raises(UnknownNameError, match="precision"):
        train_base_learner(tmp_path / "x.pt", tier_settings("toy", precision="fp16", **settings), progress=False)


def test_a_run_does_not_write_over_a_shipped_base_learner_unless_asked(tmp_path, monkeypatch, capsys):
    from fsslib.pretrain.base_learner import cli

    with pytest.raises(SystemExit) as exited:  # the default output of fold 0 is the shipped file: refused first
        cli.main(["--fold", "0", "--epochs", "1"])
    assert exited.value.code == 2
    assert "--replace-shipped" in capsys.readouterr().err
    monkeypatch.setattr(cli, "SHIPPED_FOLDER", tmp_path)
    shipped = tmp_path / "base-learner-fold0.pt"
    cli.refuse_shipped(shipped, replace_shipped=False)  # not there yet: a first run writes it
    shipped.write_bytes(b"weights")
    with pytest.raises(FsslibError, match="shipped base learner") as refused:
        cli.refuse_shipped(shipped, replace_shipped=False)
    assert "--out PATH" in refused.value.fix and "--replace-shipped" in refused.value.fix
    cli.refuse_shipped(shipped, replace_shipped=True)
    cli.refuse_shipped(tmp_path / "elsewhere" / "base-learner-fold0.pt", replace_shipped=False)
