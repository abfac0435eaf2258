"""Files in the official formats, fabricated for the tests: datasets (VOC / SBD / COCO) and PSPNet's
``resnet50_v2.pth``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image


def save_jpeg(path: Path, height: int, width: int, seed: int) -> None:
    """A (height, width) JPEG of uniform noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)  # (H, W, 3)
    Image.fromarray(pixels).save(path)


def save_palette_png(path: Path, label: np.ndarray) -> None:
    """A class-index label (H, W) as VOC stores it: a palette PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette([(index * 37) % 256 for index in range(768)])
    image.save(path)


def rectangle(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """A COCO polygon covering rows y0..y1-1 and columns x0..x1-1."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def coco_annotation(ann_id: int, image_id: int, category: int, segmentation, crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": segmentation,
            "iscrowd": crowd, "area": 1.0, "bbox": [0, 0, 1, 1]}


# what PSPNet's model/resnet.py (deep_base=True) holds beside torchvision's ResNet-50 names, or in other shapes
DEEP_STEM_SHAPES = {"conv1.weight": (64, 3, 3, 3), "conv2.weight": (64, 64, 3, 3), "conv3.weight": (128, 64, 3, 3),
                    "layer1.0.conv1.weight": (64, 128, 1, 1), "layer1.0.downsample.0.weight": (256, 128, 1, 1)}
DEEP_STEM_NORMS = {"bn1": 64, "bn2": 64, "bn3": 128}


def deep_stem_resnet50_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random ``resnet50_v2.pth`` state dict in the official key format: torchvision's ResNet-50 names (the same
    as the official ``model/resnet.py``'s below the stem), the deep stem's convolutions and BatchNorms, 128 channels
    into layer1, ``fc.*``, and no ``num_batches_tracked`` (the file predates them). BatchNorm statistics and
    affine parameters are random too, so that a wrongly placed tensor changes the features."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {key: tuple(value.shape) for key, value in torchvision.models.resnet50().state_dict().items()
              if not key.endswith("num_batches_tracked")}
    shapes.update(DEEP_STEM_SHAPES)
    for norm, channels in DEEP_STEM_NORMS.items():
        shapes.update({f"{norm}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")})
    state = {}
    for key, shape in shapes.items():
        if key.endswith(("running_var", "weight")) and len(shape) == 1:  # BatchNorm scales and variances: positive
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        else:  # convolutions (He-normal-like), BatchNorm biases and means, the classifier
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 10
            state[key] = torch.randn(shape, generator=generator) * (2 / fan_in) ** 0.5
    return state
