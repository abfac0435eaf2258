"""The prototype baseline: masked-average-pooled support prototypes, cosine similarity, small head. fsslib's own
baseline, no paper's method and no official code: it borrows PANet's classifier and PFENet's features.

The simplest learned few-shot segmenter, used to exercise the whole pipeline:
query and support features = ``cat(layer2, layer3) -> 1x1 conv`` (as in PFENet); the
foreground and background prototypes are mask-weighted means of support features
(averaged over the K shots). The logits are scaled cosine similarities to the two
prototypes (PANet's non-parametric classifier) plus a correction from a small
convolutional head that reads ``[query features, prototype, cosine maps]``.

Both presets keep the pretrained backbone frozen (the toy ResNet pretrained by fsslib, or
ImageNet ResNet-50), as PFENet does; ``freeze_backbone=False`` with ``backbone_weights="random"``
trains it from scratch, which on the toy tier still gained after 40 epochs (the prototype_toy
budget could not reach its plateau).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks import masked_average_pooling
from fsslib.data.episodes import OneWayInputs
from dataclasses import dataclass

from fsslib.methods.base import FewShotSegmenter, MethodConfig
from fsslib.methods.options import MethodOptions, option
from fsslib.models.backbones import MultiLevelBackbone, build_backbone



@dataclass(frozen=True)
class PrototypeOptions(MethodOptions):
    method = "prototype"
    feature_dim: int = option(64, "channels of the reduced mid-level features", at_least=1)
    freeze_backbone: bool = option(False, "keep the pretrained backbone frozen (both presets: True, as PFENet)")


OPTIONS = PrototypeOptions
# Both tiers: the pretrained backbone, frozen (as PFENet); the toy epochs are read off the validation
# learning curves (papermill_runs/results/prototype_toy_curves.png).
PRESETS = {
    "toy": dict(epochs=20, val_episodes=300, options={"feature_dim": 64, "freeze_backbone": True}),
    "paper": dict(options={"feature_dim": 256, "freeze_backbone": True}),
}


class PrototypeNet(FewShotSegmenter):
    """Prototype matching with a learned head."""

    def __init__(self, backbone: MultiLevelBackbone, feature_dim: int = 64, freeze_backbone: bool = False) -> None:
        super().__init__()
        if freeze_backbone:  # frozen BatchNorm statistics and weights, as PFENet; not in the checkpoint
            self.hold_frozen("backbone", backbone)
        else:
            self.backbone = backbone
        mid_channels = backbone.channels["layer2"] + backbone.channels["layer3"]
        self.reduce = nn.Sequential(nn.Conv2d(mid_channels, feature_dim, 1, bias=False), nn.ReLU(inplace=True),
                                    nn.Dropout2d(0.1))
        self.head = nn.Sequential(
            nn.Conv2d(2 * feature_dim + 2, feature_dim, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(feature_dim, feature_dim, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(feature_dim, 2, 1),
        )
        self.scale = nn.Parameter(torch.tensor(10.0))  # temperature of the cosine classifier

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, D, h, w) mid-level features."""
        levels = self.backbone(images, last="layer3")
        return self.reduce(torch.cat([levels["layer2"], levels["layer3"]], dim=1))

    def segment(self, batch: OneWayInputs) -> torch.Tensor:
        batch_size, shots = batch.support_images.shape[:2]
        query = self.features(batch.query_images)  # (B, D, h, w)
        support = self.features(batch.support_images.flatten(0, 1))  # (B*K, D, h, w)
        masks = batch.support_masks.flatten(0, 1)  # (B*K, H, W)
        foreground = masked_average_pooling(support, masks).view(batch_size, shots, -1).mean(1)  # (B, D)
        background = masked_average_pooling(support, (masks == 0).long()).view(batch_size, shots, -1).mean(1)  # (B, D)
        cosines = torch.stack([F.cosine_similarity(query, p[:, :, None, None], dim=1)
                               for p in (background, foreground)], dim=1)  # (B, 2, h, w)
        expanded = foreground[:, :, None, None].expand_as(query)  # (B, D, h, w)
        logits = self.scale * cosines + self.head(torch.cat([query, expanded, cosines], dim=1))  # (B, 2, h, w)
        return F.interpolate(logits, size=batch.query_images.shape[-2:], mode="bilinear", align_corners=True)


def build(cfg: MethodConfig) -> PrototypeNet:
    options = PrototypeOptions.parse(cfg.options)
    return PrototypeNet(build_backbone(cfg.backbone, cfg.backbone_weights), options.feature_dim, options.freeze_backbone)
