"""PFENet (Tian et al., TPAMI 2020): training-free prior mask + Feature Enrichment Module (FEM).

Pipeline for a query and K supports (shapes for the paper tier: 473 x 473 -> 60 x 60):

* Mid-level features ``cat(layer3, layer2) -> 1x1 conv -> ReLU -> Dropout2d(0.5)`` (256
  channels; the toy tier uses 64), one reduction for the query and one for the supports.
* Support prototype = weighted GAP of the support features under the mask (Eq. 2 of PFENet),
  averaged over the K shots.
* Prior mask (PFENet Sec. 3.2, Eqs. 3-5): the support's layer4 is computed on the
  mask-multiplied layer3 output and multiplied by the mask again; for every query position
  take the maximum cosine similarity to any support position of layer4, min-max normalise
  per image (eps 1e-7); average over the K shots.
* FEM (PFENet Sec. 3.3): at each pyramid scale (bins 60/30/15/8 at a 60 x 60 map, the same
  fractions of the map elsewhere: 8/4/2/1 at the toy tier's 8 x 8) merge
  ``[pooled query, expanded prototype, prior]`` with a 1x1 conv, add the previous, finer
  scale (scales visited 60 -> 30 -> 15 -> 8 as PFENet's code) through the inter-scale
  "alpha" 1x1 conv, refine with two residual 3x3 "beta" convs, predict an auxiliary
  segmentation per scale, then concatenate all scales at full size, reduce, refine and
  classify.
* Loss = CE(final) + mean over scales of CE(auxiliary) (PFENet's aux weight 1.0).
* New convolutions start from He-normal weights (:func:`kaiming_init`; PFENet's code keeps
  PyTorch's default init, which trains far slower at the toy tier's few hundred steps).

The backbone is frozen and kept in eval mode (frozen BatchNorm statistics), as PFENet.
Subclasses replace the prior by overriding :meth:`PFENet.prior_masks` (PI-CLIP does).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.data.episodes import EpisodeBatch
from fsslib.methods.base import FewShotSegmenter, masked_average_pooling, segmentation_loss
from fsslib.models.backbones import MultiLevelBackbone

COSINE_EPS = 1e-7  # PFENet's cosine_eps, also PI-CLIP's epsilon in Eq. 8
PAPER_FEATURE_SIZE = 60  # 473 x 473 input at output stride 8
PAPER_BINS = (60, 30, 15, 8)  # FEM pyramid at the paper's 60 x 60 feature map


def min_max_normalise(maps: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """Scale each map of (..., h, w) to [0, 1]: (x - min) / (max - min + eps) (PI-CLIP Eq. 8, PFENet Eq. 5)."""
    flat = maps.flatten(-2)  # (..., h*w)
    low = flat.amin(dim=-1, keepdim=True)
    high = flat.amax(dim=-1, keepdim=True)
    return ((flat - low) / (high - low + eps)).view_as(maps)


def mask_to_feature_size(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, H, W) masks in {0, 1, 255} -> (N, 1, h, w) foreground weights, bilinear with aligned corners (PFENet)."""
    foreground = (masks == 1).float().unsqueeze(1)  # (N, 1, H, W)
    return F.interpolate(foreground, size=tuple(size), mode="bilinear", align_corners=True)


def max_cosine_similarity(query: torch.Tensor, support: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """For every query position, the maximum cosine similarity to any support position.

    query: (N, C, h, w); support: (N, C, h', w') (already multiplied by the support mask, so
    masked-out positions have zero features and cosine 0). Cosine = s.q / (|s| |q| + eps) as
    PFENet's code. Returns (N, h, w) (PFENet Eqs. 3-4, PI-CLIP Eqs. 6-7).
    """
    query_flat = query.flatten(2)  # (N, C, hw)
    support_flat = support.flatten(2).transpose(1, 2)  # (N, h'w', C)
    dot = support_flat @ query_flat  # (N, h'w', hw)
    norms = support_flat.norm(dim=2, keepdim=True) @ query_flat.norm(dim=1, keepdim=True)  # (N, h'w', hw)
    cosine = dot / (norms + eps)
    return cosine.amax(dim=1).view(query.shape[0], *query.shape[-2:])


def pfenet_prior(query_high: torch.Tensor, support_high: torch.Tensor, support_weights: torch.Tensor) -> torch.Tensor:
    """PFENet's training-free prior for one shot.

    query_high: (B, C, h, w) query layer4; support_high: (B, C, h', w') support layer4 computed
    on the masked layer3; support_weights: (B, 1, h', w') mask at that size. Returns (B, h, w) in [0, 1].
    """
    similarity = max_cosine_similarity(query_high, support_high * support_weights)  # (B, h, w)
    return min_max_normalise(similarity)


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


class PFENet(FewShotSegmenter):
    """PFENet: frozen backbone, mid-level prototype, training-free prior, FEM decoder."""

    def __init__(self, backbone: MultiLevelBackbone, feature_dim: int = 256, prior_channels: int = 1,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        mid_channels = backbone.channels["layer2"] + backbone.channels["layer3"]
        self.down_query = self._reduction(mid_channels, feature_dim, dropout)
        self.down_support = self._reduction(mid_channels, feature_dim, dropout)
        self.decoder = FeatureEnrichmentModule(feature_dim, prior_channels)

    @staticmethod
    def _reduction(in_channels: int, feature_dim: int, dropout: float) -> nn.Sequential:
        return kaiming_init(nn.Sequential(nn.Conv2d(in_channels, feature_dim, 1, bias=False), nn.ReLU(inplace=True),
                                          nn.Dropout2d(dropout)))

    def train(self, mode: bool = True) -> "PFENet":
        super().train(mode)
        self.backbone.eval()  # frozen BatchNorm statistics
        return self

    @torch.no_grad()
    def backbone_levels(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen layer1..layer3 features of (N, 3, H, W) images."""
        return self.backbone(images, last="layer3")

    def prior_masks(self, batch: EpisodeBatch, query_levels: dict[str, torch.Tensor],
                    support_levels: dict[str, torch.Tensor]) -> torch.Tensor:
        """PFENet's prior (B, 1, h, w): mean over shots of the per-shot priors (Sec. 3.2)."""
        batch_size, shots = batch.support_images.shape[:2]
        with torch.no_grad():
            support_layer3 = support_levels["layer3"]  # (B*K, C3, h, w)
            weights = mask_to_feature_size(batch.support_masks.flatten(0, 1), support_layer3.shape[-2:])  # (B*K, 1, h, w)
            support_high = self.backbone.layer4(support_layer3 * weights)  # (B*K, C4, h, w)
            query_high = self.backbone.layer4(query_levels["layer3"])  # (B, C4, h, w)
            query_repeated = query_high.repeat_interleave(shots, dim=0)  # (B*K, C4, h, w)
            priors = pfenet_prior(query_repeated, support_high, weights)  # (B*K, h, w)
        return priors.view(batch_size, shots, *priors.shape[-2:]).mean(dim=1, keepdim=True)  # (B, 1, h, w)

    def predict(self, batch: EpisodeBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final logits (B, 2, h, w) at feature size and the auxiliary logits of every FEM scale."""
        batch_size, shots = batch.support_images.shape[:2]
        query_levels = self.backbone_levels(batch.query_images)
        support_levels = self.backbone_levels(batch.support_images.flatten(0, 1))
        query = self.down_query(torch.cat([query_levels["layer3"], query_levels["layer2"]], dim=1))  # (B, D, h, w)
        support = self.down_support(torch.cat([support_levels["layer3"], support_levels["layer2"]], dim=1))  # (B*K, D, h, w)
        prototypes = masked_average_pooling(support, batch.support_masks.flatten(0, 1))  # (B*K, D)
        prototype = prototypes.view(batch_size, shots, -1).mean(dim=1)  # (B, D)
        prior = self.prior_masks(batch, query_levels, support_levels)  # (B, P, h, w)
        return self.decoder(query, prototype, prior)

    def forward(self, batch: EpisodeBatch) -> torch.Tensor:
        logits, _ = self.predict(batch)
        return F.interpolate(logits, size=batch.query_images.shape[-2:], mode="bilinear", align_corners=True)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """CE of the final prediction + mean CE of the per-scale auxiliary predictions (PFENet Sec. 3.4)."""
        logits, auxiliary = self.predict(batch)
        main = segmentation_loss(logits, batch.query_masks)
        aux = torch.stack([segmentation_loss(a, batch.query_masks) for a in auxiliary]).mean()
        return main + aux
