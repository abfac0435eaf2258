"""The reference row of every table: predict the whole query image as foreground (fsslib's own floor, no paper's
method)."""
from __future__ import annotations

import torch

from fsslib.data.episodes import OneWayInputs
from fsslib.methods.base import FewShotSegmenter, MethodConfig
from fsslib.methods.options import NoOptions

SUPPORT_ANNOTATION = "none"  # reads nothing of the support
SUPPORT_INPUTS = ()
BACKBONE = False  # no ResNet backbone: backbone_weights does not apply


class AllForegroundOptions(NoOptions):
    method = "all-foreground"


OPTIONS = AllForegroundOptions


class AllForeground(FewShotSegmenter):
    """Foreground everywhere: its mIoU is the fraction of the image the class covers."""

    trainable = False

    def segment(self, batch: OneWayInputs) -> torch.Tensor:
        images = batch.query_images  # (B, 3, H, W)
        logits = torch.zeros(images.shape[0], 2, *images.shape[-2:], device=images.device)
        logits[:, 1] = 1.0
        return logits  # (B, 2, H, W)


def build(cfg: MethodConfig) -> AllForeground:
    return AllForeground()
