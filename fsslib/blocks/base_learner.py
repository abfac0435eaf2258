"""The base learner of BAM and HDMNet: PSPNet trained on a fold's base classes (Lang et al., CVPR 2022).

BAM's first stage trains a PSPNet (Zhao et al., CVPR 2017) to segment the fold's base classes: the backbone and a
head together. Its meta-learning stage then freezes all of it and reads two things from it: the fine-tuned backbone's
features (for the meta learner) and the head's base-class probabilities (for the ensemble,
:mod:`fsslib.blocks.ensemble`). HDMNet and PI-CLIP(HDMNet) reuse the same frozen network.

* :class:`PyramidPooling` -- PSPNet's pyramid pooling module: the input beside its average pools over 1, 2, 3 and 6
  bins, each reduced by a 1x1 convolution + BatchNorm + ReLU and resized back (bilinear, aligned corners).
* :class:`BaseLearner` -- backbone -> ``layer4`` -> :class:`PyramidPooling` -> ``embed`` (3x3 convolution + BatchNorm)
  -> ``classify`` (ReLU, Dropout2d, 1x1 convolution to background + base classes). The split of the official
  ``cls`` sequence into ``embed`` (``cls[0:2]``) and ``classify`` (``cls[2:5]``) is HDMNet's: its correlation reads
  the embedding (``query_feat_5``).
* :func:`base_class_index` -- an episode's class ids as indices into the base learner's outputs.

Checked against chunbolang/BAM ``model/PSPNet.py`` and ``model/PPM.py`` (tests/test_ensemble.py transcribes them).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


PSPNET_BINS = (1, 2, 3, 6)


class PyramidPooling(nn.Module):
    """(N, C, h, w) -> (N, 2C, h, w) for four bins: the input, then one C / len(bins) channel map per bin."""

    def __init__(self, in_channels: int, bins: Sequence[int] = PSPNET_BINS) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Conv2d(in_channels, reduced, 1, bias=False),
                          nn.BatchNorm2d(reduced), nn.ReLU(inplace=True))
            for size in bins)
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        size = features.shape[-2:]
        pooled = [F.interpolate(stage(features), size, mode="bilinear", align_corners=True) for stage in self.stages]
        return torch.cat([features, *pooled], dim=1)


class BaseLearner(nn.Module):
    """PSPNet on ``base_classes`` classes: logits (N, 1 + base_classes, h, w) at the backbone's feature size.

    ``backbone``: a ``fsslib.models.backbones.MultiLevelBackbone`` (its ``channels`` and levels by name; blocks sit
    below the model layer, so it is typed as a module here)."""

    def __init__(self, backbone: nn.Module, base_classes: int, hidden: int = 512,
                 bins: Sequence[int] = PSPNET_BINS, dropout: float = 0.1) -> None:
        super().__init__()
        self.backbone = backbone
        self.base_classes = base_classes
        self.ppm = PyramidPooling(backbone.channels["layer4"], bins)
        self.embed = nn.Sequential(nn.Conv2d(self.ppm.out_channels, hidden, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(hidden))
        self.classify = nn.Sequential(nn.ReLU(), nn.Dropout2d(dropout),  # not in place: the embedding is read too
                                      nn.Conv2d(hidden, 1 + base_classes, 1))

    @property
    def hidden(self) -> int:
        return self.embed[0].out_channels

    def head(self, layer4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedding (N, hidden, h, w) of ``layer4`` features and the logits (N, 1 + base_classes, h, w)."""
        embedding = self.embed(self.ppm(layer4))
        return embedding, self.classify(embedding)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1 + base_classes, h, w) of (N, 3, H, W) images in [0, 1]."""
        return self.head(self.backbone(images, first="layer4")["layer4"])[1]


def base_class_index(class_ids: torch.Tensor, base_class_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """For each 1-based class id of ``class_ids`` (any shape), its 1-based index among ``base_class_ids`` (the base
    learner's output channel), or 0 where the class is not a base class (a novel class at test time).

    ``base_class_ids`` as a tensor on ``class_ids``' device (a model's buffer: :func:`base_class_table`) makes no
    copy between host and device and reads nothing back, so a training step need not wait for the GPU."""
    table = base_class_ids if isinstance(base_class_ids, torch.Tensor) else base_class_table(base_class_ids)
    table = table.to(class_ids.device)
    channels = torch.arange(1, table.numel() + 1, device=class_ids.device)  # (C_base,)
    return ((class_ids.unsqueeze(-1) == table).long() * channels).sum(-1)  # base ids are distinct: one match at most


def base_class_table(base_class_ids: Sequence[int]) -> torch.Tensor:
    """(C_base,) the base class ids in channel order, for a model to keep as a buffer (:func:`base_class_index`)."""
    return torch.as_tensor(list(base_class_ids), dtype=torch.long)
