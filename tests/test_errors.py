"""Bad input gets one clear error naming the problem and the fix."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fsslib import evaluate
from fsslib.config import make_config
from fsslib.data.benchmarks import PASCAL, TOY, get_benchmark
from fsslib.data.episodes import Source, check_support_masks
from fsslib.data.layout import MARKER, mark_prepared, write_class_index, write_list
from fsslib.errors import (CheckpointError, CorruptImageError, DatasetNotFoundError, EmptySupportMaskError,
                           FsslibError, InvalidMaskError, UnknownNameError)


def _tiny_tree(root, label):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "JPEGImages" / "a.jpg")
    Image.fromarray(label).save(root / "SegmentationClassAug" / "a.png")
    write_list(root, "train", [("JPEGImages/a.jpg", "SegmentationClassAug/a.png")])
    write_class_index(root, "train", {"a": {1: 4}})
    mark_prepared(root, {"benchmark": "toy", "images": {"train": 1}})


def test_missing_data_root_names_the_prepare_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="prepare pascal") as info:
        Source(PASCAL, "train", root=tmp_path / "nowhere")
    assert "does not exist" in info.value.problem and "FSSLIB_DATA" in info.value.fix


def test_half_prepared_root_names_the_prepare_command(tmp_path):
    _tiny_tree(tmp_path, np.zeros((8, 8), np.uint8))
    assert Source(TOY, "train", root=tmp_path).names == ["a"]
    (tmp_path / MARKER).unlink()  # as after a prepare run that failed or was interrupted
    with pytest.raises(DatasetNotFoundError, match="was not prepared completely") as info:
        Source(TOY, "train", root=tmp_path)
    assert str(tmp_path / MARKER) in info.value.problem
    assert f"re-run `python -m fsslib.data.prepare toy` (add `--out {tmp_path}`" in info.value.fix


def test_mask_values_outside_class_ids(tmp_path):
    label = np.zeros((8, 8), np.uint8)
    label[0, 0] = 37
    _tiny_tree(tmp_path, label)
    with pytest.raises(InvalidMaskError, match=r"\[37\].*outside the class ids 0..20"):
        Source(TOY, "train", root=tmp_path).load("a")


def test_corrupt_image(tmp_path):
    _tiny_tree(tmp_path, np.zeros((8, 8), np.uint8))
    (tmp_path / "JPEGImages" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CorruptImageError, match="Cannot decode"):
        Source(TOY, "train", root=tmp_path).load("a")


def test_empty_support_mask():
    masks = torch.zeros(2, 3, 8, 8, dtype=torch.long)
    masks[0, :, 2, 2] = 1
    with pytest.raises(EmptySupportMaskError, match="3 support mask"):
        check_support_masks(masks)


def test_unknown_names():
    with pytest.raises(UnknownNameError, match=r"(?s)Unknown class of toy .purple star.*striped star"):
        TOY.class_id("purple star")
    with pytest.raises(UnknownNameError, match=r"(?s)Unknown method .nope.*prototype"):
        make_config(method="nope")
    with pytest.raises(UnknownNameError, match=r"(?s)Unknown preset .huge.*toy, paper"):
        make_config(preset="huge")
    with pytest.raises(UnknownNameError, match="--fold 4 is not a fold of benchmark .toy., which has 4"):
        TOY.fold_classes(4)


def test_a_named_benchmark_refuses_a_missing_fold_and_novel_classes():
    """A fold the benchmark lacks fails when the settings are made, not when its data loads; ``--novel-classes``
    names a dataset folder's classes, and a named benchmark refuses it rather than ignore it."""
    with pytest.raises(FsslibError, match="--fold 4 is not a fold of benchmark 'toy', which has 4") as error:
        make_config(fold=4)
    assert error.value.fix == "pass --fold 0, 1, 2 or 3."
    make_config(benchmark="coco", preset="paper", fold=3)
    with pytest.raises(FsslibError, match="--novel-classes is for a dataset folder; benchmark 'pascal'") as error:
        make_config(preset="paper", novel_classes=[1, 2])
    assert "--benchmark folder:PATH" in error.value.fix
    with pytest.raises(FsslibError, match="--novel-classes is for a dataset folder; benchmark 'toy'"):
        get_benchmark("toy", novel_classes=[1, 2])  # what every command reads a benchmark through (base-learner too)


def test_trained_method_needs_a_checkpoint(tiny_cfg, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint was given"):
        evaluate.run(tiny_cfg(method="prototype"))
    with pytest.raises(CheckpointError, match="does not exist"):
        evaluate.run(tiny_cfg(method="prototype", ckpt=str(tmp_path / "missing.pt")))
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        evaluate.run(tiny_cfg(method="prototype", ckpt=str(tmp_path)))
    record = tmp_path / "model.json"  # a zoo model's record, not its weights
    record.write_text("{}")
    with pytest.raises(CheckpointError, match=r"cannot be read \(UnpicklingError: [^)]*\)\.\n") as info:
        evaluate.run(tiny_cfg(method="prototype", ckpt=str(record)))
    assert "weights_only` set to `False" not in info.value.problem  # torch's unsafe advice is not passed on


def test_cli_prints_the_error_not_a_traceback(capsys):
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--method", "nope"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Unknown method 'nope'" in err and "Traceback" not in err


def test_every_error_carries_a_fix():
    error = FsslibError("problem text", "fix text")
    assert str(error) == "problem text\n  How to fix: fix text"


@pytest.mark.parametrize("kind", [FsslibError, DatasetNotFoundError, UnknownNameError, CheckpointError])
def test_errors_survive_a_worker_process(kind):
    copy = pickle.loads(pickle.dumps(kind("problem text", "fix text")))
    assert type(copy) is kind and str(copy) == "problem text\n  How to fix: fix text"


def test_paper_tier_backbone_without_imagenet_weights(tmp_path, monkeypatch):
    import torchvision

    from fsslib.models.backbones import RESNET50_FILE, build_backbone

    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert make_config(method="prototype", preset="paper").backbone == "resnet50"
    with pytest.raises(CheckpointError, match=r"(?s)ImageNet ResNet-50 weights not found.*IMAGENET1K_V1"):
        build_backbone("resnet50")
    # a local weights file (as users fetch it) is picked up from $FSSLIB_WEIGHTS
    (tmp_path / "weights").mkdir()
    reference = torchvision.models.resnet50(weights=None)
    torch.save(reference.state_dict(), tmp_path / "weights" / RESNET50_FILE)
    backbone = build_backbone("resnet50")
    torch.testing.assert_close(backbone.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)


def test_a_cuda_device_without_cuda_names_the_flags_that_run(monkeypatch):
    """On a machine without CUDA, --device cuda says so and names what to pass on the command line and in Python."""
    from fsslib.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FsslibError, match="CUDA is not available") as info:
        resolve_device("cuda")
    assert "--device auto" in info.value.fix and "device='auto'" in info.value.fix
