"""Multi-level CNN backbones: ImageNet ResNet-50 (paper tier) and a small ResNet (toy tier).

Both return the same dictionary of features ``layer1 .. layer4``; layer3 and layer4 are
dilated so that layer2..layer4 share one output stride (8 for ResNet-50: 473 -> 60x60,
PFENet's setting). Inputs are images in [0, 1]; each backbone normalises with ImageNet
statistics itself.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from fsslib.errors import CheckpointError, unknown
from fsslib.models.files import read_weights
from fsslib.paths import CHECKPOINT_DIR, WEIGHTS_DOC, weights_root

LEVELS = ("layer1", "layer2", "layer3", "layer4")
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
RESNET50_FILE = "resnet50-0676ba61.pth"  # torchvision's IMAGENET1K_V1 weights
RESNET50_URL = f"https://download.pytorch.org/models/{RESNET50_FILE}"


class MultiLevelBackbone(nn.Module):
    """Base: normalises [0, 1] images and returns ``{"layer1": ..., "layer4": ...}``."""

    channels: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor, last: str = "layer4") -> dict[str, torch.Tensor]:
        """Features of every level up to ``last`` (later levels are not computed)."""
        x = self.stem(self.normalise(images))  # type: ignore[attr-defined]
        features = {}
        for name in LEVELS[: LEVELS.index(last) + 1]:
            x = getattr(self, name)(x)
            features[name] = x
        return features


class ResNet50Backbone(MultiLevelBackbone):
    """torchvision ResNet-50 with dilated layer3/layer4 (output stride 8)."""

    channels = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}

    def __init__(self, weights: str | Path | None) -> None:
        super().__init__()
        net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
        if weights is not None:
            net.load_state_dict(_load_state_dict(Path(weights)))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with optional stride / dilation."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ToyResNet(MultiLevelBackbone):
    """A small ResNet standing in for ResNet-50 on 64x64 toy images.

    Strides: stem and layer1 /2; layer2 reaches ``output_stride`` (8: 8x8 features at 64 px,
    like ResNet-50's 60x60 at 473; or 4: 16x16); layer3 and layer4 keep it through dilation.
    ``output_stride=32`` is the standard layout instead (layer2 at /8, layer3 and layer4 strided /2
    each, no dilation), the one ImageNet and MoCo train ResNet-50 in before PFENet dilates it: its
    weights have the same shapes and load into the output-stride-8 network.
    """

    def __init__(self, widths: tuple[int, int, int, int] = (24, 48, 96, 192), output_stride: int = 8) -> None:
        super().__init__()
        if output_stride not in (4, 8, 32):
            raise unknown("toy backbone output stride", output_stride, ["4", "8", "32"])
        self.output_stride = output_stride
        w1, w2, w3, w4 = widths
        self.channels = {"layer1": w1, "layer2": w2, "layer3": w3, "layer4": w4}
        self.stem = nn.Sequential(nn.Conv2d(3, w1, 3, 2, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(w1, w1)
        layer2_stride = 2 if output_stride == 4 else 4
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, stride=2), *([BasicBlock(w2, w2, stride=2)] if layer2_stride == 4 else []))
        strided = output_stride == 32
        self.layer3 = BasicBlock(w2, w3, stride=2) if strided else BasicBlock(w2, w3, dilation=2)
        self.layer4 = BasicBlock(w3, w4, stride=2) if strided else BasicBlock(w3, w4, dilation=4)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    return read_weights(path, "Backbone weights", f"download {RESNET50_URL} once on a connected machine into "
                        f"{weights_root()} (or pass backbone_weights=PATH; instructions: {WEIGHTS_DOC}).")


def find_resnet50_weights(path: str | Path | None = None) -> Path:
    """The ImageNet ResNet-50 weight file: ``path``, or $FSSLIB_WEIGHTS, or torch's hub cache."""
    candidates = [Path(path)] if path else [weights_root() / RESNET50_FILE,
                                            Path(torch.hub.get_dir()) / "checkpoints" / RESNET50_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"ImageNet ResNet-50 weights not found (looked at: {', '.join(map(str, candidates))}).",
        f"on a connected machine run `python -c \"import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V1')\"` "
        f"(fills torch's hub cache) or download {RESNET50_URL} into {weights_root()}; "
        f"or pass backbone_weights=PATH (backbone_weights='random' for shape checks only); instructions: {WEIGHTS_DOC}.",
    )


TOY_RESNET_CHECKPOINT = CHECKPOINT_DIR / "toy_resnet.pt"  # shipped toy-world pretraining (ImageNet analogue)
TOY_RESNET_RETRAIN = "python -m fsslib.pretrain toy-resnet --steps 1600 --threads 1 --out"


def load_toy_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(ToyResNet state_dict, classifier head state_dict or None) from a toy backbone checkpoint.

    Reads the ``{"backbone": ..., "classifier": ...}`` files written by
    ``fsslib.pretrain.toy_resnet`` and plain ToyResNet state_dicts.
    """
    path = Path(path)
    fix = (f"re-create it with `{TOY_RESNET_RETRAIN} {path}` (15-20 minutes on one CPU core), "
           "pass another weights=PATH, or weights='random' for an untrained backbone.")
    payload = read_weights(path, "Toy backbone weights", fix)
    if isinstance(payload, dict) and isinstance(payload.get("backbone"), dict):
        return payload["backbone"], payload.get("classifier")
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload, None
    raise CheckpointError(f"Toy backbone weights {path} hold neither a state_dict nor a pretraining checkpoint.", fix)


def load_toy_resnet(weights: str | Path | None = None) -> ToyResNet:
    """ToyResNet with the shipped pretrained weights (``None``), random init (``"random"``) or a file."""
    backbone = ToyResNet()
    if weights == "random":
        return backbone
    path = Path(weights) if weights is not None else TOY_RESNET_CHECKPOINT
    state, _ = load_toy_checkpoint(path)
    try:
        backbone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as error:
        raise CheckpointError(f"Toy backbone weights {path} do not fit ToyResNet's default widths: {error}",
                              f"re-create them with `{TOY_RESNET_RETRAIN} {path}` or pass weights='random'.")
    return backbone


def build_backbone(name: str, weights: str | Path | None = None) -> MultiLevelBackbone:
    """``"resnet50"`` (ImageNet weights required unless ``weights="random"``) or ``"toy-resnet"``.

    ``weights``: ``None`` = the pretrained weights (ImageNet for ResNet-50, the shipped
    toy-world pretraining for the toy ResNet), ``"random"`` = random init, or a local file.
    """
    if name == "resnet50":
        return ResNet50Backbone(None if weights == "random" else find_resnet50_weights(weights))
    if name == "toy-resnet":
        return load_toy_resnet(weights)
    raise unknown("backbone", name, ["resnet50", "toy-resnet"])


MOCO_ENCODERS = ("encoder_k", "encoder_q")


def load_moco_resnet50(path: str | Path, encoder: str = "encoder_k") -> ResNet50Backbone:
    """A dilated ResNet-50 (:class:`ResNet50Backbone`) with the weights of one encoder of a MoCo checkpoint.

    MoCo's files (facebookresearch/moco ``main_moco.py``) hold ``{"state_dict": {"module.encoder_q.*",
    "module.encoder_k.*", "module.queue", ...}}``; QGNet's prior extractor is the key encoder. The
    projection head (``fc.*``) is dropped.
    """
    if encoder not in MOCO_ENCODERS:
        raise unknown("MoCo encoder", encoder, MOCO_ENCODERS)
    saved = _load_state_dict(Path(path))
    saved = saved.get("state_dict", saved)
    prefixes = (f"module.{encoder}.", f"{encoder}.")
    picked = {key.split(".", 2 if key.startswith("module.") else 1)[-1]: value for key, value in saved.items()
              if key.startswith(prefixes) and ".fc." not in f".{key}"}
    if not picked:
        raise CheckpointError(f"{path} holds no {encoder} weights (keys start with {sorted(saved)[:3]}).",
                              "pass a MoCo v1/v2 checkpoint written by facebookresearch/moco's main_moco.py "
                              "(or QGNet's released prior extractor).")
    renamed = {key.replace("conv1.", "stem.0.", 1) if key.startswith("conv1.") else
               key.replace("bn1.", "stem.1.", 1) if key.startswith("bn1.") else key: value for key, value in picked.items()}
    backbone = ResNet50Backbone(None)
    backbone.load_state_dict(renamed)
    return backbone
