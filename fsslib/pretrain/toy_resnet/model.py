"""What the toy ResNet is pretrained as: a multi-label classifier of the 20 toy classes."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from fsslib.data.toyworld import CLASSES_PER_FOLD, N_FOLDS
from fsslib.models.backbones import ToyResNet

N_CLASSES = N_FOLDS * CLASSES_PER_FOLD


class ToyClassifier(nn.Module):
    """ToyResNet + global average pooling of layer4 + a linear multi-label head."""

    def __init__(self, backbone: ToyResNet | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else ToyResNet()
        self.head = nn.Linear(self.backbone.channels["layer4"], N_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, 20) class logits."""
        features = self.backbone(images)["layer4"]  # (B, C, h, w)
        return self.head(features.mean(dim=(2, 3)))


def multi_hot(masks: np.ndarray) -> torch.Tensor:
    """(N, H, W) class-index masks -> (N, 20) float targets, 1 where a class has a pixel."""
    present = (masks[:, None] == np.arange(1, N_CLASSES + 1)[None, :, None, None]).any(axis=(2, 3))
    return torch.from_numpy(present).float()
