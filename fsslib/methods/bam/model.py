"""BAM (Lang, Cheng, Tu, Han: "Learning What Not to Segment: A New Perspective on Few-Shot Segmentation", CVPR 2022):
a meta learner for the episode's class beside a frozen base learner of the fold's base classes, and an ensemble
that moves what the base learner recognises into the background. BAM's paper text is not in this repository, so
the map below names the official code (chunbolang/BAM) rather than the paper's equations.

Per batch of B episodes with K shots (shapes at the paper tier: 473 x 473 -> 60 x 60; toy: 64 -> 8):

* Backbone: the base learner's (fine-tuned in stage 1, :mod:`fsslib.pretrain.base_learner`), frozen. The query's
  layer2..layer4; the supports' layer2 and layer3 (the whole support image, not blanked), and their layer4 computed
  on ``layer3 * mask`` (the mask resized bilinearly, aligned corners).
* Reductions ``cat(layer3, layer2) -> 1x1 conv -> ReLU -> Dropout2d(0.5)``, one for the query, one for the supports;
  a prototype per shot by masked average pooling (:func:`fsslib.blocks.masked_average_pooling`).
* Prior per shot: PFENet's (:func:`fsslib.blocks.masked_support_prior`: the query's layer4 against the masked
  support layer4, max cosine, min-max normalised).
* Scene difference per shot (:func:`fsslib.blocks.scene_difference` of the Gram matrices of ``gram_level``, layer2)
  and K-shot weights (:class:`fsslib.blocks.ShotWeighting`, all ones at one shot): they weight the prototypes, the
  priors and the differences of the K shots (sums, not means).
* Meta learner: ``init_merge(cat(query, prototype, prior))`` (1x1 conv + ReLU), BAM's ASPP (fixed dilations
  6 / 12 / 18, no fuse, :class:`fsslib.blocks.AtrousSpatialPyramidPooling`), ``res1`` (1x1 conv of the five
  branches + ReLU), ``res2`` (two 3x3 conv + ReLU, residual), ``cls_meta`` -> meta logits (B, 2, h, w).
* Base learner's head on the query's layer4 -> base logits (B, 1 + C_base, h, w); the ensemble
  (:class:`fsslib.blocks.LearnerEnsemble`) -> final scores (B, 2, h, w). While training, the episode's class (a
  base class then, its base index read from the input ``class_ids``) is left out of the base foreground.
* Loss (``train.py``): CE(final scores) + ``aux_weight`` * CE(meta logits), both upsampled to the labels. The
  official loss adds ``aux_weight2`` * CE(base logits, base-class labels); it has no gradient (the base learner is
  frozen and its input computed without one), so it is left out here: the gradients are the official ones, and
  fsslib's logged training loss is the official one less that term (the model is never given the query's
  base-class labels that the term needs).

Official deviations, followed: the final scores are probability-like and still enter a cross-entropy as logits
(:mod:`fsslib.blocks.ensemble`); ``model.train()`` also puts the frozen base learner's classifier in training
mode, so its Dropout2d(0.1) is active during meta-training (``base_dropout=True``; False keeps it in eval mode).

Checked against chunbolang/BAM ``model/BAM.py`` (``forward``), ``model/ASPP.py`` and ``train.py`` (the loss).
``tests/test_bam.py`` transcribes the forward and the loss without fsslib and matches them in float64.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks import (AtrousSpatialPyramidPooling, feature_reduction, kaiming_init, masked_average_pooling,
                           masked_support_prior)
from fsslib.blocks.base_learner import BaseLearner, base_class_index, base_class_table
from fsslib.blocks.decoders import PAPER_ASPP_RATES
from fsslib.blocks.ensemble import LearnerEnsemble, ShotWeighting, scene_difference
from fsslib.blocks.masks import foreground_weights
from fsslib.blocks.priors import PriorSource
from fsslib.data.episodes import EpisodeBatch, OneWayInputs
from fsslib.methods.base import FewShotSegmenter, require_one_way, segmentation_loss

GRAM_LEVELS = ("layer1", "layer2", "layer3")  # the official low_fea choices of a ResNet
ASPP_RATES = ("fixed", "scaled")  # BAM's 6 / 12 / 18 on every map, or scaled to the map as fsslib's other ASPP


class BAM(FewShotSegmenter):
    """BAM's meta learner and learner ensemble on a frozen base learner (module docstring)."""

    def __init__(self, base_learner: BaseLearner, base_class_ids: list[int], shots: int, feature_dim: int = 256,
                 dropout: float = 0.5, he_init: bool = False, aspp_rates: str = "fixed", shot_hidden: int = 2,
                 gram_level: str = "layer2", aux_weight: float = 1.0, base_dropout: bool = True,
                 prior: PriorSource | None = None) -> None:
        super().__init__()
        self.prior = prior  # None: BAM's own prior (one channel); PI-CLIP(BAM): its CLIP priors
        self.hold_frozen("base_learner", base_learner)
        self.base_class_ids = list(base_class_ids)
        # on the model's device: the training step looks the episode classes up without a host copy
        self.register_buffer("base_class_table", base_class_table(self.base_class_ids), persistent=False)
        self.gram_level, self.aux_weight, self.base_dropout = gram_level, aux_weight, base_dropout
        channels = base_learner.backbone.channels
        mid_channels = channels["layer2"] + channels["layer3"]
        self.down_query = feature_reduction(mid_channels, feature_dim, dropout)
        self.down_support = feature_reduction(mid_channels, feature_dim, dropout)
        self.init_merge = nn.Sequential(nn.Conv2d(2 * feature_dim + (prior.channels if prior else 1), feature_dim, 1,
                                                  bias=False), nn.ReLU(inplace=True))
        self.aspp = AtrousSpatialPyramidPooling(feature_dim, feature_dim, PAPER_ASPP_RATES if aspp_rates == "fixed" else None,
                                                fuse=False, he_init=True)
        self.res1 = nn.Sequential(nn.Conv2d(self.aspp.out_channels, feature_dim, 1, bias=False), nn.ReLU(inplace=True))
        self.res2 = nn.Sequential(nn.Conv2d(feature_dim, feature_dim, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                  nn.Conv2d(feature_dim, feature_dim, 3, padding=1, bias=False), nn.ReLU(inplace=True))
        self.cls_meta = nn.Sequential(nn.Conv2d(feature_dim, feature_dim, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                      nn.Dropout2d(0.1), nn.Conv2d(feature_dim, 2, 1))
        if he_init:  # fsslib's toy tier; else PyTorch's default, as the official code (its ASPP is Kaiming-normal either way)
            for block in (self.down_query, self.down_support, self.init_merge, self.res1, self.res2, self.cls_meta):
                kaiming_init(block)
        self.shot_weighting = ShotWeighting(shots, shot_hidden)
        self.ensemble = LearnerEnsemble()

    @property
    def backbone(self) -> nn.Module:
        """The base learner's fine-tuned backbone (frozen with it)."""
        return self.base_learner.backbone

    def train(self, mode: bool = True) -> "BAM":
        """Train mode for the meta learner; with ``base_dropout``, for the frozen base learner's classifier too (its
        Dropout2d), as the official ``model.train()`` does; its BatchNorms stay in eval mode (the official
        ``fix_bn``)."""
        super().train(mode)
        self.base_learner.classify.train(mode and self.base_dropout)
        return self

    @torch.no_grad()
    def episode_levels(self, batch: OneWayInputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The frozen backbone's levels: the queries' layer2..layer4 (B, C, h, w) and the supports' layer2, layer3
        and layer4 of the masked layer3 (B*K, C, h, w), each with ``gram_level`` if it is layer1."""
        first = "layer1" if self.gram_level == "layer1" else "layer2"
        query = self.backbone(batch.query_images, last="layer4", first=first)
        support = self.backbone(batch.support_images.flatten(0, 1), last="layer3", first=first)
        weights = foreground_weights(batch.support_masks.flatten(0, 1), support["layer3"].shape[-2:])  # (B*K, 1, h, w)
        support["layer4"] = self.backbone.layer4(support["layer3"] * weights)  # (B*K, C4, h, w)
        return query, support

    @staticmethod
    def own_prior(query_high: torch.Tensor, support_high: torch.Tensor, masks: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
        """BAM's prior (B, 1, h, w): PFENet's prior of each shot (query layer4 (B, C4, h, w) against the masked
        support layer4 (B*K, C4, h, w)), summed with the K-shot weights (B, K). The priors of the frozen backbone's
        features need no gradient; the weighted sum keeps the weights' one, so the K-shot weighting learns through
        the prior as in the official code."""
        batch_size, shots = weights.shape
        with torch.no_grad():
            support_weights = foreground_weights(masks, support_high.shape[-2:])  # (B*K, 1, h, w)
            repeated = query_high.repeat_interleave(shots, dim=0) if shots > 1 else query_high  # (B*K, C4, h, w)
            priors = masked_support_prior(repeated, support_high, support_weights)  # (B*K, h, w)
        priors = priors.view(batch_size, shots, *priors.shape[-2:])  # (B, K, h, w)
        return (weights[:, :, None, None] * priors).sum(dim=1, keepdim=True)

    @property
    def reads_image_labels(self) -> bool:
        """Whether the prior source reads the classes in the query's label (PI-CLIP's official VTP prompts)."""
        return getattr(self.prior, "reads_image_labels", False)

    def predict(self, batch: OneWayInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Final scores (B, 2, h, w), meta logits (B, 2, h, w) and base logits (B, 1 + C_base, h, w) at feature size."""
        batch_size, shots = batch.support_images.shape[:2]
        query_levels, support_levels = self.episode_levels(batch)
        query = self.down_query(torch.cat([query_levels["layer3"], query_levels["layer2"]], dim=1))  # (B, D, h, w)
        support = self.down_support(torch.cat([support_levels["layer3"], support_levels["layer2"]], dim=1))  # (B*K, D, h, w)
        masks = batch.support_masks.flatten(0, 1)  # (B*K, H, W)
        prototypes = masked_average_pooling(support, masks).view(batch_size, shots, -1)  # (B, K, D)

        low_support = support_levels[self.gram_level].unflatten(0, (batch_size, shots))  # (B, K, C, h, w)
        differences = scene_difference(query_levels[self.gram_level], low_support)  # (B, K), float32 under autocast
        weights = self.shot_weighting(differences)  # (B, K)
        difference = (weights * differences).sum(dim=1)  # (B,)

        query_high = query_levels["layer4"]  # (B, C4, h, w)
        if self.prior is None:
            prior = self.own_prior(query_high, support_levels["layer4"], masks, weights)  # (B, 1, h, w)
        else:
            prior = self.prior(batch, query_levels, support_levels, self.backbone)  # (B, P, h, w)
        prototype = (weights[:, :, None] * prototypes).sum(dim=1)  # (B, D)

        merged = self.init_merge(torch.cat([query, prototype[:, :, None, None].expand_as(query), prior], dim=1))
        meta = self.res1(self.aspp(merged))  # (B, D, h, w)
        meta = self.res2(meta) + meta
        meta_logits = self.cls_meta(meta)  # (B, 2, h, w)
        with torch.no_grad():
            _, base_logits = self.base_learner.head(query_high)  # (B, 1 + C_base, h, w)
        exclude = base_class_index(batch.class_ids, self.base_class_table) if self.training else None
        return self.ensemble(meta_logits, base_logits, difference, exclude), meta_logits, base_logits

    def segment(self, batch: OneWayInputs) -> torch.Tensor:
        final, _, _ = self.predict(batch)
        return F.interpolate(final, size=batch.query_images.shape[-2:], mode="bilinear", align_corners=True)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """CE(final scores) + aux_weight * CE(meta logits) (the official main and first auxiliary losses).

        The official train.py also adds ``aux_weight2 * aux_loss2``, the frozen base learner's cross-entropy on the
        query's base classes, to the loss it logs. That term has no gradient (the base learner is frozen), so it is
        left out: the gradient is the official one, and the logged loss is lower by that term."""
        one_way = require_one_way(batch)
        final, meta_logits, _ = self.predict(one_way.inputs(self.reads_image_labels))
        return segmentation_loss(final, one_way.query_masks) + self.aux_weight * segmentation_loss(meta_logits, one_way.query_masks)
