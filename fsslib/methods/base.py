"""The interface every few-shot segmenter implements."""
from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.data.episodes import IGNORE, EpisodeBatch


class FewShotSegmenter(nn.Module, metaclass=ABCMeta):
    """A 1-way K-shot segmenter: ``forward(batch) -> (B, 2, H, W)`` logits at the input size.

    ``trainable = False`` marks training-free methods (the evaluator then needs no checkpoint).
    Subclasses with extra losses (e.g. auxiliary heads) override :meth:`loss`.
    """

    trainable: bool = True

    @abstractmethod
    def forward(self, batch: EpisodeBatch) -> torch.Tensor:
        """(B, 2, H, W) background / foreground logits of the query images."""

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """Cross-entropy of the query prediction, ignoring label 255."""
        return segmentation_loss(self(batch), batch.query_masks)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """CE between (B, 2, h, w) logits (upsampled to the mask size) and (B, H, W) masks."""
    if logits.shape[-2:] != masks.shape[-2:]:
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits.float(), masks, ignore_index=IGNORE)


def masked_average_pooling(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Prototype = mean of the features under the mask (PFENet's weighted GAP).

    features: (N, C, h, w); masks: (N, H, W) with values {0, 1, 255} (255 counts as 0).
    Returns (N, C).
    """
    weights = (masks == 1).float().unsqueeze(1)  # (N, 1, H, W)
    weights = F.interpolate(weights, size=features.shape[-2:], mode="bilinear", align_corners=True)  # (N, 1, h, w)
    return (features * weights).sum((2, 3)) / (weights.sum((2, 3)) + 5e-4)
