"""Masks at feature resolution and prototypes.

Masks everywhere in fsslib hold 0 = background, 1 = the class, 255 = ignore; a block that
needs weights takes the foreground (``mask == 1``, so 255 counts as 0) and resizes it here,
in one place, with the interpolation each paper's code uses.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

ResizeMode = Literal["bilinear", "area", "nearest"]


def resize_masks(weights: torch.Tensor, size: Sequence[int], mode: ResizeMode = "bilinear") -> torch.Tensor:
    """Resize (N, 1, H, W) float weights to (N, 1, h, w).

    ``bilinear`` uses aligned corners, as PFENet's and HSNet's code resize masks to features;
    ``area`` gives the fraction of each cell that the mask covers (PI-CLIP's VVP tokens);
    ``nearest`` keeps hard values (blanking pixels outside a mask).
    """
    size = tuple(int(s) for s in size)
    if tuple(weights.shape[-2:]) == size:
        return weights
    if mode == "bilinear":
        return F.interpolate(weights, size=size, mode="bilinear", align_corners=True)
    return F.interpolate(weights, size=size, mode=mode)


def foreground_weights(masks: torch.Tensor, size: Sequence[int], mode: ResizeMode = "bilinear",
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, H, W) masks in {0, 1, 255} -> (N, 1, h, w) foreground weights in [0, 1] (255 counts as 0), resized in
    ``dtype``."""
    return resize_masks((masks == 1).to(dtype).unsqueeze(1), size, mode)


MASK_AREA_EPS = 5e-4  # PFENet's weighted GAP: added to a mask's area so that an empty mask divides by no zero


def masked_average_pooling(features: torch.Tensor, masks: torch.Tensor, eps: float = MASK_AREA_EPS) -> torch.Tensor:
    """Prototype = mean of the features under the mask (PFENet's weighted GAP).

    features: (N, C, h, w); masks: (N, H, W) in {0, 1, 255} (255 counts as 0). The mask is
    resized to the features bilinearly with aligned corners; ``eps`` is PFENet's 5e-4.
    Returns (N, C).
    """
    weights = foreground_weights(masks, features.shape[-2:], dtype=torch.promote_types(features.dtype, torch.float32))
    return (features * weights).sum((2, 3)) / (weights.sum((2, 3)) + eps)


def blank_outside_masks(images: torch.Tensor, masks: torch.Tensor, colour: Sequence[float]) -> torch.Tensor:
    """(N, 3, H, W) images with every pixel outside its mask's foreground (label 1) set to ``colour``: the official
    ``s_x * mask`` of PI-CLIP (before CLIP) and of HDMNet (before the ResNet; BAM does not blank), whose zero of
    the normalised image is the normaliser's mean colour. ``masks`` (N, h, w) are resized (nearest) to the images' size."""
    keep = resize_masks((masks == 1).float().unsqueeze(1), images.shape[-2:], mode="nearest")  # (N, 1, H, W)
    fill = torch.tensor(colour, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return images * keep + fill * (1 - keep)
