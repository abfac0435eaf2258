"""QGNet (Liu, Wu, Ding, Liu, Lin, Lin: "Few-Shot Segmentation with Global and Local Contrastive Learning"):
PFENet whose prior source adds a *prior region map*, made from the query alone.

Per episode (Sec. IV-B), with the frozen feature extractor ``F`` (the backbone) and the frozen
prior extractor ``F_p`` (pretrained by global + local contrastive learning,
:mod:`fsslib.pretrain.qgnet_prior`):

* Eq. 8: bridge features ``X_q = F(I_q)``, support features ``X_s = F(I_s)`` and prior features
  ``P_q = F_p(I_q)`` -- layer4 of each network (dilated: the query's feature grid).
* Eqs. 9-11: for every bridge position q, ``s_q = max_q' cos(x_q, p_q')`` over all prior
  positions q' of the *same query*;
* Eq. 12: ``S_Q = (S_Q - min) / (max - min + eps)``, eps = 1e-7: the prior region map
  (:func:`fsslib.blocks.prior_region_map`, shared with the pretraining's acceptance metric).
* The guided region map is PFENet's prior from the masked support (Sec. IV-B2:
  :class:`~fsslib.blocks.priors.MaskedSupportPrior`). Both maps enter PFENet's FEM beside
  the query features and the support prototype ("the category guider"), guided map first,
  as the official code concatenates them.

``projection``: ``"none"`` (default) follows Eqs. 9-12 on the raw features; ``"official"`` adds the
official code's trainable 3x3 projections before the cosine. Why the default, and what the frozen
extractors' BatchNorm does: ``docs/methods/qgnet_reference.md``.

Checked against liuweide01/QGNet-Few-shot-segmentation, ``model/PFENet_QGNet.py`` (the
``unsup_query`` map and its place in ``merge_feat_bin``).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks import kaiming_init, prior_region_map
from fsslib.blocks.priors import MaskedSupportPrior, PriorSource
from fsslib.errors import FsslibError, unknown
from fsslib.metrics import REGION_THRESHOLDS, RegionMapMeter
from fsslib.models.backbones import MultiLevelBackbone

if TYPE_CHECKING:
    from fsslib.data.episodes import OneWayBatch, OneWayInputs
    from fsslib.methods.pfenet.model import PFENet

PROJECTIONS = ("none", "official")


class QgnetOptionError(FsslibError, ValueError):
    """A QGNet setting that cannot work (e.g. a cosine between features of different widths)."""


class RegionMaps(PriorSource):
    """QGNet's prior source: [guided region map, prior region map] (B, 2, h, w)."""

    channels = 2

    def __init__(self, prior_extractor: MultiLevelBackbone, bridge_channels: int, projection: str = "none",
                 feature_dim: int = 256, dropout: float = 0.5) -> None:
        if projection not in PROJECTIONS:
            raise unknown("QGNet projection", projection, PROJECTIONS)
        super().__init__()
        self.hold_frozen("prior_extractor", prior_extractor)
        self.guided = MaskedSupportPrior()
        self.projection = projection
        if projection == "official":
            self.project_bridge = _projection(bridge_channels, feature_dim, dropout)
            self.project_prior = _projection(prior_extractor.channels["layer4"], feature_dim, dropout)
        elif bridge_channels != prior_extractor.channels["layer4"]:
            raise QgnetOptionError(
                f"Eq. 9 compares bridge and prior features, but they have {bridge_channels} and "
                f"{prior_extractor.channels['layer4']} channels.",
                "use a prior extractor of the backbone's architecture, or options={'projection': 'official'} "
                "(a learned 3x3 projection of each to feature_dim channels).")

    def region_map(self, query_images: torch.Tensor, bridge: torch.Tensor) -> torch.Tensor:
        """The prior region map (B, 1, h, w) of the queries: Eqs. 8-12 on (B, 3, H, W) images and their bridge
        features ``X_q`` (B, C4, h, w), the frozen backbone's layer4."""
        with torch.no_grad():
            prior = self.prior_extractor(query_images)["layer4"]  # (B, C4', h', w'): P_q
        if self.projection == "official":
            bridge, prior = self.project_bridge(bridge), self.project_prior(prior)
        return prior_region_map(bridge, prior).unsqueeze(1)

    def forward(self, batch: OneWayInputs, query_levels: dict[str, torch.Tensor],
                support_levels: dict[str, torch.Tensor], backbone: nn.Module) -> torch.Tensor:
        with torch.no_grad():  # X_q, also the query features of the guided map (computed once, as the official code)
            bridge = backbone.layer4(query_levels["layer3"])  # (B, C4, h, w)
        guided = self.guided.from_query_layer4(batch, bridge, support_levels, backbone)  # (B, 1, h, w)
        return torch.cat([guided, self.region_map(batch.query_images, bridge)], dim=1)


def _projection(in_channels: int, feature_dim: int, dropout: float) -> nn.Sequential:
    """The official code's ``down_learn_super`` / ``down_learn_unsuper``: 3x3 conv, ReLU, Dropout2d."""
    return kaiming_init(nn.Sequential(nn.Conv2d(in_channels, feature_dim, 3, padding=1, bias=False),
                                      nn.ReLU(inplace=True), nn.Dropout2d(dropout)))


@torch.no_grad()
def region_map_statistics(model: PFENet, batches: Iterable[OneWayBatch],
                          thresholds: tuple[float, ...] = REGION_THRESHOLDS) -> dict[str, dict]:
    """Table VII (recall of each region map at each threshold, Eq. 16) and Sec. IV-C (its mean on and off the
    objects) of a QGNet model over episode batches: :class:`~fsslib.metrics.RegionMapMeter` summaries of the
    ``"guided"`` and ``"prior"`` region maps, upsampled to the query labels' size (bilinear, aligned corners)."""
    if not isinstance(getattr(model, "prior", None), RegionMaps):  # another model's channels would be read as these
        raise FsslibError(f"Region map statistics read QGNet's guided and prior region maps, and this model is a "
                          f"{type(model).__name__} with {type(getattr(model, 'prior', None)).__name__} priors.",
                          'build QGNet: build_method(make_config(method="qgnet", ...)), or load its zoo model '
                          '(predict.load("qgnet", fold=F))')
    meters = {"guided": RegionMapMeter(thresholds), "prior": RegionMapMeter(thresholds)}
    for batch in batches:
        maps = model.prior_maps(batch.inputs())  # (B, 2, h, w): guided, prior (the model reads inputs only)
        upsampled = F.interpolate(maps, size=batch.query_masks.shape[-2:], mode="bilinear", align_corners=True)
        for channel, meter in enumerate(meters.values()):
            meter.update(upsampled[:, channel], batch.query_masks)
    return {name: meter.summary() for name, meter in meters.items()}
