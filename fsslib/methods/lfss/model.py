"""LFSS: Language-guided few-shot semantic segmentation (Wang, Liu, Zhou, Wang; DAMO Academy; arXiv:2311.13865, 2023).

The supports come with their class name only; no ground-truth mask enters the model (it
appears in the loss alone). Every mask the model uses is a pseudo mask made from the class
name by a frozen CLIP. Equations (numbered as the paper):

* Eq. 1: ``M_q = f({(I_s^k, L_s^k)}, I_q)`` -- images and class labels in, query mask out.
* VLMD (Sec. 3.3, :mod:`~fsslib.methods.lfss.vlmd`): MaskCLIP pseudo masks of the class
  (85 templates), then the self-supported refiner, Eqs. 2-5: masked average pooling (2),
  support/query foreground mixing with ``alpha`` (3), per-pixel background prototypes by
  attention (4), cosine assignment (5).
* DPS (Sec. 3.4, :mod:`~fsslib.methods.lfss.dps`): seeds by distance transform (6), moved in
  an ``n x n`` grid towards the query's foreground prototype (7-8), superpixel-guided
  clustering (9-11), association map ``P`` of the part prototypes (12).
* CCM (Sec. 3.5, :mod:`~fsslib.methods.lfss.ccm`): support attention (13), focused prototype
  ``P_a`` (14), ROI-guided and full-image correlation maps (15-16), concatenated (17).
* Decoder: ``F = F_q (+) P (+) M`` (18) through ASPP and three conv blocks (19,
  :class:`fsslib.blocks.ASPPDecoder`).
* Circle training (20): ``L = beta BCE(M_s_hat, M_s^gt) + (1 - beta) BCE(M_q_hat, M_q^gt)``.

**No official code of LFSS exists**; this module is the reference implementation. Each part
follows the related official code where there is one: the clustering follows ASGNet
(Reagan1311/ASGNet, ``util/seed_init.py``, ``model/asgnet.py``), the mask generator MaskCLIP
(chongzhou96/MaskCLIP, via :mod:`fsslib.clip`), the refiner SSP's self-support matching
(fanq15/SSP, ``model/SSP_matching.py``), the ASPP block CANet/ASGNet's. Where the paper is
silent, the choices made and their reasons are in ``docs/methods/lfss_reference.md`` (features, masks on the feature
grid, circle training with K shots, Eq. 20's BCE, Table 4's ablation, empty pseudo masks, the rows beyond
the paper).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks import ASPPDecoder, kaiming_init
from fsslib.blocks.masks import foreground_weights, masked_average_pooling
from fsslib.data.episodes import EpisodeBatch, OneWayInputs
from fsslib.errors import unknown
from fsslib.methods.base import FewShotSegmenter, require_one_way, segmentation_loss
from fsslib.methods.lfss.ccm import correlation_maps, focused_prototype
from fsslib.methods.lfss.dps import EVAL_ITERATIONS, TRAIN_ITERATIONS, association_map, distributed_prototypes
from fsslib.methods.lfss.vlmd import BACKGROUND_ATTENTIONS, LfssOptionError, PseudoMaskGenerator, refine_masks
from fsslib.models.backbones import LEVELS, MultiLevelBackbone

SUPPORT_MASK_SOURCES = ("pseudo", "ground_truth")
QUERY_MASK_SOURCES = ("pseudo", "whole_image")
REFINER_LEVELS = ("layer2", "layer3", "layer4")  # the levels on layer3's grid (dilated backbones)


@dataclass
class PseudoMasks:
    """VLMD's masks of B episodes on the feature grid (bool): MaskCLIP's initial ones and the refined ones."""

    initial_query: torch.Tensor  # (B, h, w)
    initial_support: torch.Tensor  # (B, K, h, w)
    query: torch.Tensor  # (B, h, w) refined (the initial one when the refiner is off)
    support: torch.Tensor  # (B, K, h, w) refined (or ground truth, when asked)


@dataclass
class EpisodeFeatures:
    """What both circle passes share: learnable features and the (refined) masks on the feature grid."""

    query: torch.Tensor  # (B, D, h, w)
    support: torch.Tensor  # (B, K, D, h, w)
    query_pseudo_masks: torch.Tensor  # (B, h, w) bool: the query's refined pseudo mask (never its ground truth)
    support_grid_masks: torch.Tensor  # (B, K, h, w) bool: the supports' refined pseudo masks (their ground truth
    # with support_masks="ground_truth"), on the feature grid


class LFSS(FewShotSegmenter):
    """LFSS: frozen backbone and MaskCLIP, refiner, DPS, CCM, ASPP decoder, circle training."""

    def __init__(self, backbone: MultiLevelBackbone, pseudo_masks: PseudoMaskGenerator, feature_dim: int = 256,
                 dropout: float = 0.5, alpha: float = 0.5, beta: float = 0.5, grid: int = 3, dps: bool = True,
                 refine: bool = True, ccm: bool = True, support_masks: str = "pseudo",
                 refiner_level: str = "layer3", refiner_attention: str = "dot", query_mask: str = "pseudo") -> None:
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not 0.0 <= value <= 1.0:
                raise LfssOptionError(f"LFSS balance factor {name} = {value} is outside [0, 1].",
                                      f"pass a weight in [0, 1] (the paper's {name} is 0.5).")
        if grid < 1 or grid % 2 == 0:
            raise LfssOptionError(f"The seed-move grid n = {grid} has no centre cell.",
                                  "use an odd n >= 1 (the paper's n is 3; n = 1 keeps the seeds where they are).")
        if support_masks not in SUPPORT_MASK_SOURCES:
            raise unknown("LFSS support-mask source", support_masks, SUPPORT_MASK_SOURCES)
        if query_mask not in QUERY_MASK_SOURCES:
            raise unknown("LFSS query-mask source", query_mask, QUERY_MASK_SOURCES)
        if refiner_level not in REFINER_LEVELS:
            raise unknown("LFSS refiner level", refiner_level, REFINER_LEVELS)
        if refiner_attention not in BACKGROUND_ATTENTIONS:
            raise unknown("LFSS refiner attention", refiner_attention, BACKGROUND_ATTENTIONS)
        super().__init__()
        self.hold_frozen("backbone", backbone)
        self.pseudo_masks = pseudo_masks
        self.reduce = kaiming_init(nn.Sequential(
            nn.Conv2d(backbone.channels["layer2"] + backbone.channels["layer3"], feature_dim, 1, bias=False),
            nn.Dropout2d(dropout)))
        self.decoder = ASPPDecoder(feature_dim + 1 + (2 if ccm else 1), feature_dim)
        self.alpha, self.beta, self.grid = alpha, beta, grid
        self.dps, self.refine, self.ccm = dps, refine, ccm
        self.support_mask_source, self.query_mask_source = support_masks, query_mask
        self.refiner_level, self.refiner_attention = refiner_level, refiner_attention
        self.reset_diagnostics()

    def reset_diagnostics(self) -> None:
        self.empty_masks = {"query": 0, "support": 0}  # refined pseudo masks with no foreground cell
        self.masked_images = {"query": 0, "support": 0}

    def diagnostics(self) -> dict[str, int]:
        """How often a pseudo mask came out empty (MaskCLIP found nothing, or the refiner removed it all)."""
        return {f"empty_{kind}_pseudo_masks": int(self.empty_masks[kind]) for kind in ("query", "support")} | {
            f"{kind}_images": self.masked_images[kind] for kind in ("query", "support")}

    def pseudo_masks_of(self, batch: OneWayInputs, levels: dict[str, torch.Tensor]) -> PseudoMasks:
        """VLMD on B episodes: initial MaskCLIP masks and refined masks (Eqs. 2-5) on the feature grid.

        ``levels`` are the frozen backbone levels of ``cat(query images, support images)``
        ((B*(1+K), C, h, w) each). Without the refiner (``refine=False``) the refined masks are
        the initial ones; with ground-truth supports they replace the supports' pseudo masks.
        """
        batch_size, shots = batch.support_images.shape[:2]
        size = levels["layer3"].shape[-2:]
        images = torch.cat([batch.query_images, batch.support_images.flatten(0, 1)])  # (B*(1+K), 3, H, W)
        class_ids = torch.cat([batch.class_ids, batch.class_ids.repeat_interleave(shots)])  # (B*(1+K),)
        masks = self.pseudo_masks(images, class_ids, size)  # (B*(1+K), h, w) bool
        initial_query, initial_support = masks[:batch_size], masks[batch_size:].view(batch_size, shots, *size)
        if self.query_mask_source == "whole_image":  # the control: the query's pseudo mask is never read
            initial_query = torch.ones_like(initial_query)
        support_masks = initial_support
        if self.support_mask_source == "ground_truth":  # the comparison row: read only when asked for
            support_masks = foreground_weights(batch.support_masks.flatten(0, 1), size, mode="nearest") > 0.5
            support_masks = support_masks.view(batch_size, shots, *size)
        query_pseudo_masks = initial_query
        if self.refine:
            frozen = levels[self.refiner_level]
            query_pseudo_masks, refined_support = refine_masks(
                frozen[:batch_size], frozen[batch_size:].unflatten(0, (batch_size, shots)), initial_query,
                support_masks, self.alpha, self.refiner_attention)
            if self.support_mask_source == "pseudo":  # ground truth is kept as it is
                support_masks = refined_support
            if self.query_mask_source == "whole_image":  # the whole query has no background to refine against
                query_pseudo_masks = initial_query
        # device tensors: no host sync per batch; diagnostics() reads them once
        self.empty_masks["query"] = self.empty_masks["query"] + (~query_pseudo_masks.flatten(1).any(dim=1)).sum()
        self.empty_masks["support"] = self.empty_masks["support"] + (~support_masks.flatten(2).any(dim=2)).sum()
        self.masked_images["query"] += query_pseudo_masks.shape[0]
        self.masked_images["support"] += support_masks.shape[0] * support_masks.shape[1]
        return PseudoMasks(initial_query=initial_query, initial_support=initial_support, query=query_pseudo_masks,
                           support=support_masks)

    def frozen_levels(self, batch: OneWayInputs) -> dict[str, torch.Tensor]:
        """Frozen backbone levels (B*(1+K), C, h, w) of the queries, then the supports, up to what the model reads."""
        images = torch.cat([batch.query_images, batch.support_images.flatten(0, 1)])  # (B*(1+K), 3, H, W)
        last = max(("layer3", self.refiner_level), key=LEVELS.index) if self.refine else "layer3"
        with torch.no_grad():
            return self.backbone(images, last=last)

    def encode(self, batch: OneWayInputs) -> EpisodeFeatures:
        """Frozen features and pseudo masks of the query and supports, refined (Eqs. 2-5); learnable features."""
        batch_size = batch.query_images.shape[0]
        levels = self.frozen_levels(batch)
        with torch.no_grad():
            masks = self.pseudo_masks_of(batch, levels)
        features = self.reduce(torch.cat([levels["layer3"], levels["layer2"]], dim=1))  # (B*(1+K), D, h, w)
        return EpisodeFeatures(query=features[:batch_size],
                               support=features[batch_size:].unflatten(0, (batch_size, masks.support.shape[1])),
                               query_pseudo_masks=masks.query, support_grid_masks=masks.support)

    def predict(self, query: torch.Tensor, query_pseudo_masks: torch.Tensor, support: torch.Tensor,
                support_masks: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2, h, w) of B queries (B, D, h, w) with masks (B, h, w) from K supports (B, K, D, h, w).

        support_masks: (B, K, h, w) bool. DPS (Eqs. 6-12) -> P; CCM (Eqs. 13-17) -> M; decoder on
        F_q (+) P (+) M (Eqs. 18-19).
        """
        batch_size, shots = support.shape[:2]
        query_prototype = masked_average_pooling(query, query_pseudo_masks.long())  # (B, D): P_q^f for Eq. 7
        prototypes, valid = distributed_prototypes(
            support.flatten(0, 1), support_masks.flatten(0, 1), query_prototype.repeat_interleave(shots, dim=0),
            self.grid, TRAIN_ITERATIONS if self.training else EVAL_ITERATIONS, clustering=self.dps)  # (B*K, S, D)
        # (B, 1, h, w): the shots' sums over their prototypes, averaged over the shots
        association = association_map(prototypes.reshape(batch_size, -1, prototypes.shape[-1]),
                                       valid.reshape(batch_size, -1), query) / shots
        focused = focused_prototype(query.repeat_interleave(shots, dim=0),
                                    query_pseudo_masks.repeat_interleave(shots, dim=0),
                                    support.flatten(0, 1), support_masks.flatten(0, 1))  # (B*K, D)
        focused = focused.view(batch_size, shots, -1).mean(dim=1)  # (B, D)
        correlation = correlation_maps(focused, query, query_pseudo_masks, full_image=self.ccm)  # (B, 1 or 2, h, w)
        return self.decoder(torch.cat([query, association, correlation], dim=1))  # Eq. 18-19

    def circle(self, batch: OneWayInputs, support_pass: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Circle inference (Sec. 3.6): (support logits (B*K, 2, h, w) or None, query logits (B, 2, h, w)).

        Pass 1 segments every support as a query, with the query and its pseudo mask as its
        support; pass 2 segments the query with the supports under their predicted masks
        (their ground truth with ``support_masks="ground_truth"``, where pass 1 only runs
        when ``support_pass``).
        """
        features = self.encode(batch)
        batch_size, shots = features.support.shape[:2]
        support_logits = None
        if support_pass or self.support_mask_source == "pseudo":
            support_logits = self.predict(features.support.flatten(0, 1), features.support_grid_masks.flatten(0, 1),
                                          features.query.repeat_interleave(shots, dim=0).unsqueeze(1),
                                          features.query_pseudo_masks.repeat_interleave(shots, dim=0).unsqueeze(1))
        support_masks = features.support_grid_masks
        if self.support_mask_source == "pseudo":
            support_masks = (support_logits.argmax(dim=1) == 1).view(batch_size, shots, *support_logits.shape[-2:])
        return support_logits, self.predict(features.query, features.query_pseudo_masks, features.support, support_masks)

    def segment(self, batch: OneWayInputs) -> torch.Tensor:
        _, logits = self.circle(batch, support_pass=False)
        return F.interpolate(logits, size=batch.query_images.shape[-2:], mode="bilinear", align_corners=True)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """Eq. 20: beta * CE(support predictions, support GT) + (1 - beta) * CE(query prediction, query GT)."""
        one_way = require_one_way(batch)
        support_logits, query_logits = self.circle(one_way.inputs())
        support_loss = segmentation_loss(support_logits, one_way.support_masks.flatten(0, 1))
        return self.beta * support_loss + (1 - self.beta) * segmentation_loss(query_logits, one_way.query_masks)
