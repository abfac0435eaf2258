"""Decoders shared by the methods: PFENet's Feature Enrichment Module (FEM) and an ASPP decoder.

Both were designed for PFENet's 60 x 60 feature map (473 x 473 input at output stride 8);
their pyramid sizes and dilation rates are scaled to other map sizes by the same rule,
``max(1, round(value * feature_size / 60))`` (:func:`scale_to_feature_size`).

FEM (PFENet Sec. 3.3): at each pyramid scale (bins 60/30/15/8 at a 60 x 60 map, the same
fractions of the map elsewhere: 8/4/2/1 at the toy tier's 8 x 8) merge
``[pooled query, expanded prototype, prior]`` with a 1x1 conv, add the previous, finer scale
(scales visited 60 -> 30 -> 15 -> 8 as PFENet's code) through the inter-scale "alpha" 1x1
conv, refine with two residual 3x3 "beta" convs, predict an auxiliary segmentation per scale,
then concatenate all scales at full size, reduce, refine and classify. PFENet, PI-CLIP and
QGNet differ only in the prior channels they feed it.

Checked against dvlab-research/PFENet, ``model/PFENet.py`` (``forward``, from ``query_feat``,
the prototype and ``corr_query_mask`` to ``out`` and ``out_list``): every layer, its order,
the residual additions, and each resampling. The inter-scale path is the official one: each
scale's features are first upsampled to the full map (``pyramid_feat_list``) and the next scale
resizes that map down to its bin (60 -> 30 -> 60 -> 15, not 30 -> 15: bilinear resizes with
aligned corners do not compose). ``tests/test_blocks.py`` transcribes the official loop
independently and matches it to float precision at the paper's 60 x 60 and the toy tier's 8 x 8.
Not taken from the official code: the He-normal init (:func:`kaiming_init`, ``he_init=True``), which the toy
tier's short runs need; ``he_init=False`` keeps PyTorch's default init, as the official code (the paper presets).

ASPP decoder (LFSS Eqs. 18-19, "an ASPP block and three plain convolution blocks"):
atrous spatial pyramid pooling as the few-shot segmenters that use it (CANet, ASGNet
``model/module/ASPP.py``): a global-average-pool branch, a 1x1 branch and three 3x3 branches
dilated at 6 / 12 / 18 on the 60 x 60 map -- DeepLab v3's rates at output stride 16, which
CANet/ASGNet keep at output stride 8 -- concatenated and fused by a 1x1 conv; then three
"plain" 3x3 conv + ReLU blocks (no normalisation) and a 1x1 classifier. Every conv has a bias
and a ReLU as ASGNet's; its Dropout2d(0.5) after every branch is left out (LFSS names no
dropout; the features entering the decoder are already dropped out). The rates are scaled to
the map like the FEM bins (5 / 10 / 15 at LFSS's 50 x 50, 1 / 2 / 2 at the toy tier's 8 x 8);
the dilation is applied at forward time, so one set of weights serves every map size.

BAM's ASPP (chunbolang/BAM ``model/ASPP.py``) is the same five branches with three differences, each an option
of :class:`AtrousSpatialPyramidPooling`: fixed dilations 6 / 12 / 18 whatever the map (``rates=PAPER_ASPP_RATES``),
no fusing convolution (``fuse=False``: the five branches concatenated, ``5 * out_channels`` channels) and
Kaiming-normal weights with PyTorch's default biases (``he_init=True``). On the toy tier's 8 x 8 map the fixed
rates 12 and 18 reach outside the map from every position, so those branches see their centre tap only (1x1
convolutions); rate 6 reaches inside from the two border rows and columns on each side only.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PAPER_FEATURE_SIZE = 60  # 473 x 473 input at output stride 8
PAPER_BINS = (60, 30, 15, 8)  # FEM pyramid at the paper's 60 x 60 feature map
PAPER_ASPP_RATES = (6, 12, 18)  # ASPP dilations at the 60 x 60 map (CANet, ASGNet)


def scale_to_feature_size(values: tuple[int, ...], feature_size: int) -> list[int]:
    """Sizes chosen for PFENet's 60 x 60 map, scaled to a ``feature_size`` map: max(1, round(v * size / 60))."""
    return [max(1, round(value * feature_size / PAPER_FEATURE_SIZE)) for value in values]


def pyramid_bins(feature_size: int) -> list[int]:
    """FEM bin sizes for a feature map of ``feature_size``: PFENet's 60/30/15/8 scaled to that size."""
    return scale_to_feature_size(PAPER_BINS, feature_size)


def aspp_rates(feature_size: int) -> list[int]:
    """ASPP dilation rates for a feature map of ``feature_size``: 6/12/18 at 60 x 60 scaled to that size."""
    return scale_to_feature_size(PAPER_ASPP_RATES, feature_size)


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


def feature_reduction(in_channels: int, feature_dim: int, dropout: float, he_init: bool = False) -> nn.Sequential:
    """The official ``down_query`` / ``down_supp`` of PFENet, BAM and HDMNet: 1x1 convolution (no bias), ReLU,
    Dropout2d; PyTorch's default init, or He-normal (:func:`kaiming_init`) with ``he_init``."""
    layers = nn.Sequential(nn.Conv2d(in_channels, feature_dim, 1, bias=False), nn.ReLU(inplace=True),
                           nn.Dropout2d(dropout))
    return kaiming_init(layers) if he_init else layers


def _resize(maps: torch.Tensor, size: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Bilinear resize with aligned corners, PFENet's only resampling inside the FEM."""
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=True)


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

    def __init__(self, feature_dim: int, prior_channels: int = 1, he_init: bool = True) -> None:
        super().__init__()
        self.prior_channels = prior_channels
        n_scales = len(PAPER_BINS)  # one branch per bin of pyramid_bins
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
        if he_init:  # else PyTorch's default, as the official code
            kaiming_init(self)

    def forward(self, query: torch.Tensor, prototype: torch.Tensor, prior: torch.Tensor
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """query: (B, D, h, w); prototype: (B, D); prior: (B, P, h, w).

        Returns the final logits (B, 2, h, w) and one auxiliary logit map per scale (B, 2, bin, bin).
        """
        size = query.shape[-2:]
        full_size_features, auxiliary = [], []  # each scale's features upsampled to (h, w)
        for index, bin_size in enumerate(pyramid_bins(min(size))):
            query_bin = F.adaptive_avg_pool2d(query, bin_size)  # (B, D, b, b)
            prototype_bin = prototype[:, :, None, None].expand_as(query_bin)  # (B, D, b, b)
            prior_bin = _resize(prior, query_bin.shape[-2:])  # (B, P, b, b)
            merged = self.init_merge[index](torch.cat([query_bin, prototype_bin, prior_bin], dim=1))  # (B, D, b, b)
            if index > 0:  # inter-scale connection: the previous scale's full-size map, resized to this bin
                previous = _resize(full_size_features[-1], merged.shape[-2:])  # (B, D, b, b)
                merged = self.alpha_conv[index - 1](torch.cat([merged, previous], dim=1)) + merged
            merged = self.beta_conv[index](merged) + merged  # (B, D, b, b)
            auxiliary.append(self.inner_cls[index](merged))  # (B, 2, b, b)
            full_size_features.append(_resize(merged, size))  # (B, D, h, w)
        fused = self.res1(torch.cat(full_size_features, dim=1))  # (B, D, h, w)
        fused = self.res2(fused) + fused
        return self.cls(fused), auxiliary


class AtrousSpatialPyramidPooling(nn.Module):
    """ASPP: [global pool -> 1x1, 1x1, three dilated 3x3] -> concat -> 1x1, each conv followed by ReLU.

    The 3x3 branches are dilated by :func:`aspp_rates` of the input's smaller side, at forward time, or by fixed
    ``rates`` (BAM's 6 / 12 / 18). ``fuse=False`` leaves out the last 1x1 (BAM): the output is the concatenated
    branches. ``he_init``: Kaiming-normal weights (fan-in, ReLU gain), biases left at PyTorch's default (BAM's
    ``_init_weight``). (B, in_channels, h, w) -> (B, out_channels, h, w) (``5 * out_channels`` without the fuse).
    """

    def __init__(self, in_channels: int, out_channels: int, rates: tuple[int, ...] | None = None, fuse: bool = True,
                 he_init: bool = False) -> None:
        super().__init__()
        self.rates = rates
        self.pooled = nn.Conv2d(in_channels, out_channels, 1)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.dilated = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 3) for _ in rates or PAPER_ASPP_RATES)
        branches = out_channels * (2 + len(self.dilated))
        self.fuse = nn.Conv2d(branches, out_channels, 1) if fuse else None
        self.out_channels = out_channels if fuse else branches
        if he_init:
            for layer in self.modules():
                if isinstance(layer, nn.Conv2d):
                    nn.init.kaiming_normal_(layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = F.relu(self.pooled(F.adaptive_avg_pool2d(x, 1))).expand(-1, -1, *size)  # (B, D, h, w)
        branches = [pooled, F.relu(self.pointwise(x))]
        for conv, rate in zip(self.dilated, self.rates or aspp_rates(min(size))):
            branches.append(F.relu(F.conv2d(x, conv.weight, conv.bias, padding=rate, dilation=rate)))  # (B, D, h, w)
        merged = torch.cat(branches, dim=1)  # (B, 5D, h, w)
        return F.relu(self.fuse(merged)) if self.fuse is not None else merged


class ASPPDecoder(nn.Module):
    """LFSS's light-weight decoder (Eq. 19): ASPP, three 3x3 conv + ReLU blocks, 1x1 classifier.

    (B, in_channels, h, w) -> (B, classes, h, w) logits. He-normal init (:func:`kaiming_init`).
    """

    def __init__(self, in_channels: int, channels: int, classes: int = 2) -> None:
        super().__init__()
        self.aspp = AtrousSpatialPyramidPooling(in_channels, channels)
        self.blocks = nn.Sequential(*(layer for _ in range(3) for layer in (
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))))
        self.classifier = nn.Conv2d(channels, classes, 1)
        kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(self.aspp(x)))
