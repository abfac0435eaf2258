"""Decoders shared by the methods: PFENet's Feature Enrichment Module (FEM).

FEM (PFENet Sec. 3.3): at each pyramid scale (bins 60/30/15/8 at a 60 x 60 map, the same
fractions of the map elsewhere: 8/4/2/1 at the toy tier's 8 x 8) merge
``[pooled query, expanded prototype, prior]`` with a 1x1 conv, add the previous, finer scale
(scales visited 60 -> 30 -> 15 -> 8 as PFENet's code) through the inter-scale "alpha" 1x1
conv, refine with two residual 3x3 "beta" convs, predict an auxiliary segmentation per scale,
then concatenate all scales at full size, reduce, refine and classify. PFENet, PI-CLIP and
QGNet differ only in the prior channels they feed it.

Checked against dvlab-research/PFENet, ``model/PFENet.py``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PAPER_FEATURE_SIZE = 60  # 473 x 473 input at output stride 8
PAPER_BINS = (60, 30, 15, 8)  # FEM pyramid at the paper's 60 x 60 feature map


def pyramid_bins(feature_size: int) -> list[int]:
    """FEM bin sizes for a feature map of ``feature_size``: PFENet's 60/30/15/8 scaled to that size."""
    return [max(1, round(bin_size * feature_size / PAPER_FEATURE_SIZE)) for bin_size in PAPER_BINS]


def kaiming_init(module: nn.Module) -> nn.Module:
    """He-normal init (fan-in, ReLU gain) of every conv: with PyTorch's default init the deep,
    bias-free ReLU stack of the FEM starts with vanishing outputs and sits in an all-background
    plateau for hundreds of steps (longer than a toy-tier run)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def _classifier(channels: int, classes: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                         nn.Dropout2d(0.1), nn.Conv2d(channels, classes, 1))


def _double_conv(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True))


class FeatureEnrichmentModule(nn.Module):
    """PFENet's FEM decoder: query features + prototype + prior channels -> (B, 2, h, w) logits.

    ``prior_channels`` is 1 for PFENet's own prior; PI-CLIP feeds more (VVP per block and
    shot, refined VTP). Reusable by other methods that bring their own features and priors.
    """

    def __init__(self, feature_dim: int, prior_channels: int = 1, n_scales: int = len(PAPER_BINS)) -> None:
        super().__init__()
        self.prior_channels = prior_channels
        self.init_merge = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * feature_dim + prior_channels, feature_dim, 1, bias=False), nn.ReLU(inplace=True))
            for _ in range(n_scales))
        self.alpha_conv = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * feature_dim, feature_dim, 1, bias=False), nn.ReLU(inplace=True))
            for _ in range(n_scales - 1))
        self.beta_conv = nn.ModuleList(_double_conv(feature_dim) for _ in range(n_scales))
        self.inner_cls = nn.ModuleList(_classifier(feature_dim) for _ in range(n_scales))
        self.res1 = nn.Sequential(nn.Conv2d(feature_dim * n_scales, feature_dim, 1, bias=False), nn.ReLU(inplace=True))
        self.res2 = _double_conv(feature_dim)
        self.cls = _classifier(feature_dim)
        kaiming_init(self)

    def forward(self, query: torch.Tensor, prototype: torch.Tensor, prior: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """query: (B, D, h, w); prototype: (B, D); prior: (B, P, h, w).

        Returns the final logits (B, 2, h, w) and one auxiliary logit map per scale (B, 2, bin, bin).
        """
        size = query.shape[-2:]
        scale_features, auxiliary = [], []
        for index, bin_size in enumerate(pyramid_bins(min(size))):
            query_bin = F.adaptive_avg_pool2d(query, bin_size)  # (B, D, b, b)
            prototype_bin = prototype[:, :, None, None].expand_as(query_bin)  # (B, D, b, b)
            prior_bin = F.interpolate(prior, size=query_bin.shape[-2:], mode="bilinear", align_corners=True)  # (B, P, b, b)
            merged = self.init_merge[index](torch.cat([query_bin, prototype_bin, prior_bin], dim=1))  # (B, D, b, b)
            if index > 0:  # inter-scale connection from the previous (larger) scale
                previous = F.interpolate(scale_features[-1], size=merged.shape[-2:], mode="bilinear", align_corners=True)
                merged = self.alpha_conv[index - 1](torch.cat([merged, previous], dim=1)) + merged
            merged = self.beta_conv[index](merged) + merged  # (B, D, b, b)
            auxiliary.append(self.inner_cls[index](merged))  # (B, 2, b, b)
            scale_features.append(merged)
        upsampled = [F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in scale_features]
        fused = self.res1(torch.cat(upsampled, dim=1))  # (B, D, h, w)
        fused = self.res2(fused) + fused
        return self.cls(fused), auxiliary
