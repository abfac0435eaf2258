"""Multi-level CNN backbones: ImageNet ResNet-50s (paper tier) and a small ResNet (toy tier).

Two ResNet-50s: PSPNet's deep-stem one (``"resnet50-deepstem"``, three 3x3 convolutions in the stem,
``resnet50_v2.pth``), which PFENet, PI-CLIP and QGNet build, and torchvision's (``"resnet50"``, one 7x7
convolution), HSNet's and MoCo's. All return the same dictionary of features ``layer1 .. layer4``;
layer3 and layer4 are dilated so that layer2..layer4 share one output stride (8 for ResNet-50:
473 -> 60x60, PFENet's setting). Inputs are images in [0, 1]; each backbone normalises with ImageNet
statistics itself. A ResNet-50 with random weights gets BatchNorm statistics measured on a fixed
synthetic batch (:func:`calibrate_batch_norm`), so that its features stay finite.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from fsslib.device import torch_threads
from fsslib.errors import CheckpointError, unknown
from fsslib.models.files import read_weights
from fsslib.paths import CHECKPOINT_DIR, WEIGHTS_DOC, shown_path, weights_root

LEVELS = ("layer1", "layer2", "layer3", "layer4")
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
RESNET50_FILE = "resnet50-0676ba61.pth"  # torchvision's IMAGENET1K_V1 weights
RESNET50_URL = f"https://download.pytorch.org/models/{RESNET50_FILE}"
DEEP_STEM_FILE = "resnet50_v2.pth"  # PSPNet's ImageNet ResNet-50 (hszhao/semseg), the initmodel/ file of PFENet's family
DEEP_STEM_SOURCE = ("the 'ImageNet pretrained backbones' link of dvlab-research/PFENet's README (also named by QGNet's "
                    "README; PI-CLIP's points to BAM's, chunbolang/BAM, which holds the same file)")


class MultiLevelBackbone(nn.Module):
    """Base: normalises [0, 1] images and returns ``{"layer1": ..., "layer4": ...}``."""

    channels: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor, last: str = "layer4", first: str = "layer1") -> dict[str, torch.Tensor]:
        """Features of the levels ``first`` .. ``last`` (later levels are not computed, earlier ones not kept)."""
        x = self.stem(self.normalise(images))  # type: ignore[attr-defined]
        features = {}
        for index, name in enumerate(LEVELS[: LEVELS.index(last) + 1]):
            x = getattr(self, name)(x)
            if index >= LEVELS.index(first):
                features[name] = x
        return features


class ResNet50Backbone(MultiLevelBackbone):
    """torchvision ResNet-50 with dilated layer3/layer4 (output stride 8), or as torchvision builds it (output
    stride 32: how MoCo pretrains it); the weights are the same at either stride."""

    channels = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}

    def __init__(self, weights: str | Path | None, output_stride: int = 8) -> None:
        super().__init__()
        import torchvision  # here, not at the top: importing it costs a process about a CPU-second, and the toy tier needs none

        if output_stride not in (8, 32):
            raise unknown("ResNet-50 output stride", output_stride, ["8", "32"])
        dilated = output_stride == 8
        net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, dilated, dilated])
        if weights is not None:
            net.load_state_dict(_load_state_dict(Path(weights)))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4


class DeepStemResNet50Backbone(MultiLevelBackbone):
    """PSPNet's deep-stem ResNet-50, dilated as PFENet dilates it (output stride 8: 473 -> 60 x 60).

    The stem is three 3x3 convolutions (3 -> 64 stride 2, 64 -> 64, 64 -> 128, each followed by BatchNorm and
    ReLU) and a 3x3 max pool of stride 2, so layer1 takes 128 channels (its first block's 1x1 convolution and
    shortcut). The bottlenecks are ResNet-50's (stride on the 3x3 convolution). PFENet then sets every 3x3
    convolution of layer3 to dilation 2 and of layer4 to dilation 4 (padding alike, stride 1), and the
    shortcuts of both to stride 1 -- the first block included, unlike torchvision's
    ``replace_stride_with_dilation``, which keeps the previous dilation in a layer's first block.

    The stem's modules carry the official names (``stem.conv1`` .. ``stem.bn3``), so a weight file of the
    official ``model/resnet.py`` loads with ``stem.`` before its stem keys (:func:`load_deep_stem_resnet50`).

    Checked against dvlab-research/PFENet, ``model/resnet.py`` (``resnet50(deep_base=True)``) and
    ``model/PFENet.py`` (``layer0`` and the dilation of layer3 / layer4).
    """

    channels = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        net = torchvision.models.resnet50(weights=None)
        self.stem = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 64, 3, 2, 1, bias=False)), ("bn1", nn.BatchNorm2d(64)), ("relu1", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(64, 64, 3, 1, 1, bias=False)), ("bn2", nn.BatchNorm2d(64)), ("relu2", nn.ReLU(inplace=True)),
            ("conv3", nn.Conv2d(64, 128, 3, 1, 1, bias=False)), ("bn3", nn.BatchNorm2d(128)), ("relu3", nn.ReLU(inplace=True)),
            ("maxpool", nn.MaxPool2d(3, 2, 1)),
        ]))
        net.layer1[0].conv1 = nn.Conv2d(128, 64, 1, bias=False)
        net.layer1[0].downsample[0] = nn.Conv2d(128, 256, 1, bias=False)
        for new in (*self.stem.children(), net.layer1[0].conv1, net.layer1[0].downsample[0]):
            if isinstance(new, nn.Conv2d):  # the official (and torchvision's) initialisation
                nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        for layer, dilation in ((net.layer3, 2), (net.layer4, 4)):
            for block in layer:
                block.conv2.dilation, block.conv2.padding, block.conv2.stride = (dilation, dilation), (dilation, dilation), (1, 1)
                if block.downsample is not None:
                    block.downsample[0].stride = (1, 1)
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
                        f"{shown_path(weights_root())} (or pass --backbone-weights PATH, from Python "
                        f"backbone_weights=PATH; instructions: {WEIGHTS_DOC}).")


def _find_weights(path: str | Path | None, defaults: list[Path], what: str, fetch: str) -> Path:
    """``path``, else the first of ``defaults`` that exists; else a :class:`CheckpointError` saying how to ``fetch`` it."""
    candidates = [Path(path)] if path else defaults
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{what} not found (looked at: {', '.join(map(shown_path, candidates))}).",
                          f"{fetch}; or pass --backbone-weights PATH (--backbone-weights random for shape checks "
                          f"only; from Python backbone_weights=PATH); instructions: {WEIGHTS_DOC}.")


def find_resnet50_weights(path: str | Path | None = None) -> Path:
    """The ImageNet ResNet-50 weight file: ``path``, or $FSSLIB_WEIGHTS, or torch's hub cache."""
    return _find_weights(
        path, [weights_root() / RESNET50_FILE, Path(torch.hub.get_dir()) / "checkpoints" / RESNET50_FILE],
        "ImageNet ResNet-50 weights",
        f"on a connected machine run `python -c \"import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V1')\"` "
        f"(fills torch's hub cache) or download {RESNET50_URL} into {shown_path(weights_root())}")


def find_deep_stem_resnet50_weights(path: str | Path | None = None) -> Path:
    """PSPNet's deep-stem ResNet-50 weight file ``resnet50_v2.pth``: ``path``, or $FSSLIB_WEIGHTS."""
    return _find_weights(path, [weights_root() / DEEP_STEM_FILE],
                         f"PSPNet's deep-stem ImageNet ResNet-50 weights ({DEEP_STEM_FILE})",
                         f"download {DEEP_STEM_FILE} from {DEEP_STEM_SOURCE} once on a connected machine into "
                         f"{shown_path(weights_root())}")


STEM_KEYS = ("conv1.", "bn1.", "conv2.", "bn2.", "conv3.", "bn3.")  # the official stem's, below ``stem.`` here


def load_deep_stem_resnet50(path: str | Path) -> DeepStemResNet50Backbone:
    """:class:`DeepStemResNet50Backbone` with the weights of ``resnet50_v2.pth``: the state dict of the official
    ``model/resnet.py`` (``conv1.weight`` .. ``bn3.running_var``, ``layer1.0.conv1.weight``, ..., ``fc.*``). The
    classifier ``fc.*`` is dropped; BatchNorm's ``num_batches_tracked`` may be absent (files of older PyTorch);
    any other key missing, left over or of another shape is an error (the official code loads with
    ``strict=False``, which would leave such weights random without a word)."""
    path = Path(path)
    fix = (f"pass PSPNet's {DEEP_STEM_FILE} ({DEEP_STEM_SOURCE}); a torchvision ResNet-50 file belongs to "
           f"backbone='resnet50'; backbone_weights='random' for shape checks only ({WEIGHTS_DOC}).")
    saved = read_weights(path, "Deep-stem ResNet-50 weights", fix)
    if not isinstance(saved, dict) or not all(isinstance(value, torch.Tensor) for value in saved.values()):
        raise CheckpointError(f"Deep-stem ResNet-50 weights {path} hold no state dict.", fix)
    state = {f"stem.{key}" if key.startswith(STEM_KEYS) else key: value for key, value in saved.items()
             if not key.startswith("fc.")}
    backbone = DeepStemResNet50Backbone()
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a key of another shape
        raise CheckpointError(f"Deep-stem ResNet-50 weights {path} do not fit its layers: {str(error)[:300]}", fix) from None
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"Deep-stem ResNet-50 weights {path} do not fit its layers (missing: {missing[:4]}, "
                              f"unexpected: {unexpected[:4]}).", fix)
    return backbone


CALIBRATION_IMAGES = (2, 3, 128, 128)  # the synthetic batch that sets a random ResNet-50's BatchNorm statistics
CALIBRATION_SEED = 0


@torch.no_grad()
def calibrate_batch_norm(backbone: MultiLevelBackbone) -> MultiLevelBackbone:
    """Set every BatchNorm's running mean and variance to those of its input on one fixed synthetic batch.

    A randomly initialised ResNet-50 keeps BatchNorm's initial statistics (mean 0, variance 1), so in eval
    mode (the frozen backbone's) nothing rescales the activations, and they grow through the 16 residual
    blocks: PFENet's first training losses at 473 x 473 were 139, then 7.9e9, then NaN. Here the backbone
    runs once in train mode on ``CALIBRATION_IMAGES`` uniform random images (from a generator of its own seed,
    so the global random state and the backbone's weights are untouched, and the result is a function of
    those weights alone), with momentum 1 so that each layer keeps exactly that batch's statistics: every
    BatchNorm then normalises its input to about zero mean and unit variance, as a trained network's do on
    its data. One thread, so that the statistics (and the checkpoint's digest of the frozen backbone) are
    the same whatever the thread count of the process that builds it. Returns the backbone in eval mode.
    """
    norms = [module for module in backbone.modules() if isinstance(module, nn.BatchNorm2d)]
    momenta = [norm.momentum for norm in norms]
    images = torch.rand(CALIBRATION_IMAGES, generator=torch.Generator().manual_seed(CALIBRATION_SEED))
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = 1.0
    try:
        with torch_threads(1):
            backbone.train()(images)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
    return backbone.eval()


TOY_RESNET_CHECKPOINT = CHECKPOINT_DIR / "toy_resnet.pt"  # shipped toy-world pretraining (ImageNet analogue)
TOY_RESNET_RETRAIN = "python -m fsslib.pretrain toy-resnet --steps 1600 --threads 1 --out"


def load_toy_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(ToyResNet state_dict, classifier head state_dict or None) from a toy backbone checkpoint.

    Reads the ``{"backbone": ..., "classifier": ...}`` files written by
    ``fsslib.pretrain.toy_resnet`` and plain ToyResNet state_dicts.
    """
    path = Path(path)
    fix = (f"re-create it with `{TOY_RESNET_RETRAIN} {path}` (15-20 minutes on one CPU core), "
           "pass another file with --backbone-weights PATH, or --backbone-weights random for an untrained backbone "
           "(from Python backbone_weights=PATH).")
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


DEEP_STEM = "resnet50-deepstem"  # PSPNet's deep-stem ResNet-50: the paper backbone of PFENet, PI-CLIP, QGNet, BAM and
# HDMNet
BACKBONES = (DEEP_STEM, "resnet50", "toy-resnet")


def build_backbone(name: str, weights: str | Path | None = None) -> MultiLevelBackbone:
    """A backbone of :data:`BACKBONES`: ``"resnet50-deepstem"`` (PSPNet's ``resnet50_v2.pth``: PFENet's, PI-CLIP's,
    QGNet's), ``"resnet50"`` (torchvision's ImageNet weights: HSNet's) or ``"toy-resnet"``.

    ``weights``: ``None`` = the pretrained weights (ImageNet for the ResNet-50s, the shipped
    toy-world pretraining for the toy ResNet), ``"random"`` = random init (a ResNet-50's BatchNorm
    statistics set by :func:`calibrate_batch_norm`; the toy ResNet's stay at their initial values:
    its five blocks keep the activations in range), or a local file.
    """
    if name == "resnet50-deepstem":
        if weights == "random":
            return calibrate_batch_norm(DeepStemResNet50Backbone())
        return load_deep_stem_resnet50(find_deep_stem_resnet50_weights(weights))
    if name == "resnet50":
        if weights == "random":
            return calibrate_batch_norm(ResNet50Backbone(None))
        return ResNet50Backbone(find_resnet50_weights(weights))
    if name == "toy-resnet":
        return load_toy_resnet(weights)
    raise unknown("backbone", name, BACKBONES)


MOCO_ENCODERS = ("encoder_k", "encoder_q")
MOCO_BACKBONE = "resnet50"  # the architecture of MoCo's encoders (facebookresearch/moco: torchvision's ResNet-50)
TORCHVISION_STEM = {"conv1.": "stem.0.", "bn1.": "stem.1."}  # torchvision's ResNet-50 names -> ResNet50Backbone's


def with_prefixes(key: str, renames: dict[str, str]) -> str:
    """``key`` with its leading prefix renamed by ``renames`` (old -> new), if one matches."""
    for old, new in renames.items():
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key


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
    backbone = ResNet50Backbone(None)
    backbone.load_state_dict({with_prefixes(key, TORCHVISION_STEM): value for key, value in picked.items()})
    return backbone
