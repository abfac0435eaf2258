"""The paper tier's ResNet-50s: PSPNet's deep-stem one (PFENet, PI-CLIP, QGNet) in the official file format, and
random weights whose BatchNorm statistics keep the features finite."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fabricate import deep_stem_resnet50_state
from fsslib.config import make_config
from fsslib.errors import CheckpointError
from fsslib.models.backbones import (DEEP_STEM_FILE, DeepStemResNet50Backbone, build_backbone,
                                     load_deep_stem_resnet50)


@pytest.fixture(scope="module")
def random_deep_stem():
    torch.manual_seed(0)
    return build_backbone("resnet50-deepstem", "random")


def test_the_deep_stem_resnet50_at_473_has_pfenet_s_shapes_and_dilation(random_deep_stem):
    backbone = random_deep_stem
    images = torch.rand(1, 3, 473, 473, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        stem = backbone.stem(backbone.normalise(images))
        features = backbone(images)
    assert stem.shape == (1, 128, 119, 119)  # three 3x3 convolutions (the first of stride 2), max pool
    assert backbone.layer1[0].conv1.in_channels == backbone.layer1[0].downsample[0].in_channels == 128
    assert {name: tuple(f.shape) for name, f in features.items()} == {
        "layer1": (1, 256, 119, 119), "layer2": (1, 512, 60, 60), "layer3": (1, 1024, 60, 60), "layer4": (1, 2048, 60, 60)}
    assert backbone.channels == {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    for layer, dilation in ((backbone.layer3, 2), (backbone.layer4, 4)):  # every block, the first included
        assert all(block.conv2.dilation == (dilation, dilation) and block.conv2.stride == (1, 1) for block in layer)
        assert layer[0].downsample[0].stride == (1, 1)
    # random weights with calibrated BatchNorm statistics: features of the order of one, not of 1e2 .. 1e9
    assert all(torch.isfinite(f).all() and 0.1 < f.std() < 10 for f in features.values())


def test_an_official_resnet50_v2_file_loads_under_fsslib_s_names(tmp_path):
    """A file fabricated from the official names and shapes loads, and the stem computes what the official
    ``layer0`` computes with those tensors (three conv-BN-ReLU, max pool), written out here with F.*."""
    state = deep_stem_resnet50_state()
    torch.save(state, tmp_path / DEEP_STEM_FILE)
    backbone = load_deep_stem_resnet50(tmp_path / DEEP_STEM_FILE).eval()
    assert torch.equal(backbone.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])
    assert torch.equal(backbone.layer1[0].downsample[0].weight, state["layer1.0.downsample.0.weight"])
    images = torch.rand(2, 3, 65, 65, generator=torch.Generator().manual_seed(0))
    x = backbone.normalise(images)
    for index, stride in ((1, 2), (2, 1), (3, 1)):
        x = F.conv2d(x, state[f"conv{index}.weight"], stride=stride, padding=1)
        x = F.relu(F.batch_norm(x, state[f"bn{index}.running_mean"], state[f"bn{index}.running_var"],
                                state[f"bn{index}.weight"], state[f"bn{index}.bias"]))
    with torch.no_grad():
        torch.testing.assert_close(backbone.stem(backbone.normalise(images)), F.max_pool2d(x, 3, 2, 1))


def test_a_module_saved_in_the_official_format_loads_back_to_the_same_features(tmp_path):
    torch.manual_seed(3)
    original = build_backbone("resnet50-deepstem", "random")
    official = {key.removeprefix("stem."): value for key, value in original.state_dict().items()}  # official names
    official.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    torch.save(official, tmp_path / "resnet50_v2.pth")
    loaded = load_deep_stem_resnet50(tmp_path / "resnet50_v2.pth").eval()
    images = torch.rand(1, 3, 65, 65, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = original(images), loaded(images)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_a_missing_or_foreign_file_says_which_file_and_where_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSLIB_WEIGHTS", str(tmp_path / "weights"))
    missing = r"(?s)resnet50_v2\.pth.*not found.*PFENet's README.*--backbone-weights random"
    with pytest.raises(CheckpointError, match=missing):
        build_backbone("resnet50-deepstem")
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "torchvision.pth")
    with pytest.raises(CheckpointError, match=r"(?s)do not fit.*backbone='resnet50'"):
        build_backbone("resnet50-deepstem", tmp_path / "torchvision.pth")
    partial = deep_stem_resnet50_state()
    del partial["bn3.running_var"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"missing: \['stem\.bn3\.running_var'\]"):
        build_backbone("resnet50-deepstem", tmp_path / "partial.pth")
    (tmp_path / "weights").mkdir()
    torch.save(deep_stem_resnet50_state(), tmp_path / "weights" / DEEP_STEM_FILE)  # found in $FSSLIB_WEIGHTS
    assert isinstance(build_backbone("resnet50-deepstem"), DeepStemResNet50Backbone)
    with pytest.raises(CheckpointError, match=r"(?s)missing\.pt does not exist.*pretrain toy-resnet.*another file "
                                              r"with --backbone-weights PATH, or --backbone-weights random"):
        build_backbone("toy-resnet", tmp_path / "missing.pt")  # the command line's flags, not Python's arguments


def test_the_paper_presets_of_pfenet_s_family_select_the_deep_stem_backbone():
    assert {method: make_config(method=method, preset="paper").backbone for method in ("pfenet", "piclip", "qgnet")} == \
        dict.fromkeys(("pfenet", "piclip", "qgnet"), "resnet50-deepstem")
    assert make_config(method="lfss", preset="paper").backbone == "resnet50"  # torchvision's stays an option
    assert make_config(method="pfenet", preset="paper", backbone="resnet50").backbone == "resnet50"


def test_random_weights_are_a_function_of_the_seed_whatever_the_thread_count():
    """The calibration batch has a generator of its own and runs on one thread: the same seed gives the same
    frozen weights and statistics (a checkpoint compares their digests), and the global random state moves as
    without the calibration."""
    threads = torch.get_num_threads()
    states, draws = [], []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            torch.manual_seed(0)
            states.append(build_backbone("resnet50", "random").state_dict())
            draws.append(torch.rand(1))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    torch.manual_seed(0)
    torchvision.models.resnet50()
    assert torch.equal(draws[0], torch.rand(1)) and torch.equal(draws[0], draws[1])
