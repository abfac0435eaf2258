"""HDMNet (Peng et al., "Hierarchical Dense Correlation Distillation for Few-Shot Segmentation", CVPR 2023): a
hierarchical matching transformer over a frozen base learner, with BAM's learner ensemble.

HDMNet's paper text is not in this repository, so the map below names the official code (Pbihao/HDMNet) rather
than the paper's equations.

Pipeline for a query and K supports (shapes for the paper tier: 473 x 473 -> 60 x 60):

* The supports are blanked outside their masks before the backbone (:func:`fsslib.blocks.blank_outside_masks`;
  the official multiplies the normalised image by the mask: ImageNet's mean colour).
* A frozen base learner (:class:`fsslib.blocks.BaseLearner`, PSPNet trained on the fold's base classes) gives
  ``layer2``, ``layer3``, ``layer4`` and the embedding (its ``embed``: PSPNet's ``cls[0:2]``, the official
  ``query_feat_5``), and the query's base-class logits (its ``classify``, the official ``base_learnear``).
* ``cat(layer3, layer2)`` -> 1x1 conv -> ReLU -> Dropout2d(0.5), one reduction for the query, one for the supports
  (256 channels; fewer at the toy tier). Prototype = weighted GAP under the support mask
  (:func:`fsslib.blocks.masked_average_pooling`).
* Two similarity maps: for each query position the max cosine to the masked support's ``embedding`` (channel 0)
  and ``layer4`` (channel 1) positions (the official ``get_similarity``: the mask resized nearest, no min-max
  normalisation), averaged over the shots. ``similarity_maps`` keeps one of them alone: a control of what each map
  gives the transformer, not in the official code.
* ``support_merge(cat(support, prototype))`` and ``query_merge(cat(query, mean prototype, 10 * similarity))``:
  1x1 conv (no bias) + ReLU to the transformer's width.
* :class:`fsslib.blocks.HierarchicalTransformer` (guide = the two similarity maps) -> meta logits (B, 2, h, w) and
  the correlation maps of every level.
* BAM's ensemble (:mod:`fsslib.blocks.ensemble`): the scene difference of ``layer2`` Gram matrices, the K-shot
  weighting (:class:`~fsslib.blocks.ShotWeighting` with ``unsort=False``: the official gather is the identity),
  and :class:`~fsslib.blocks.LearnerEnsemble`. During training the episode's class is left out of the base map.
* Loss (the official ``train.py``'s sum with aux weights 1): CE(final) + CE(meta) + the correlation distillation
  (:func:`fsslib.blocks.correlation_distillation_loss`, divided by 3 levels). The official sum also adds the base
  learner's CE on base-class labels; the base learner is frozen, so that term has no gradient and is left out.

**The official code's departures from a plain reading, followed here** (each an option where it matters):

* The optimiser (``get_optim``): AdamW, weight decay 0.01, the transformer at the base lr and every other trained
  group at 10 times it (:meth:`HDMNet.parameter_groups`, ``lr_scale``).
* The K-shot weighting (``kshot_rw``) is in no optimiser group: it keeps its random initial weights
  (``train_shot_weighting=False``). Its weights stay in the sorted order of the differences (``shot_unsort=False``).
* ``model.train()`` reaches the frozen base learner's Dropout2d(0.1) before its classifier, so the base map is
  computed with dropout in training (``base_dropout=True``); fsslib holds frozen models in eval mode, so the
  model applies that dropout itself.
* Every BatchNorm stays in eval mode while training (``fix_bn``): the transformer's ``fixed_batchnorm``.
* The transformer's ``init_weights`` is never called: see :mod:`fsslib.blocks.hierarchical`.

The ensemble's output is a pair of probability-like scores, which the official loss reads as logits
(:mod:`fsslib.blocks.ensemble`); ``segment`` returns them, so the N-way rule takes their difference.

Checked against Pbihao/HDMNet ``model/HDMNet.py`` (``forward``, ``get_similarity``, ``Weighted_GAP``,
``disstil_loss``, ``get_optim``) and ``train.py`` (``tests/test_hdmnet.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks import (BaseLearner, LearnerEnsemble, ShotWeighting, base_class_index, base_class_table,
                           blank_outside_masks, feature_reduction, foreground_weights, masked_average_pooling,
                           max_cosine_similarity, scene_difference)
from fsslib.blocks.hierarchical import PAPER_SIZE, HierarchicalTransformer, TransformerSize, correlation_distillation_loss
from fsslib.blocks.priors import PriorSource
from fsslib.data.episodes import EpisodeBatch, OneWayInputs
from fsslib.methods.base import FewShotSegmenter, require_one_way, segmentation_loss
from fsslib.methods.options import OptionError
from fsslib.models.backbones import IMAGENET_MEAN

SIMILARITY_SCALE = 10.0  # the official query_merge input: similarity * 10
SIMILARITY_LEVELS = ("embedding", "layer4")  # the official get_similarity's two maps, in its channel order
SHOT_HIDDEN = 2  # the official kshot_trans_dim


def _merge(in_channels: int, out_channels: int) -> nn.Sequential:
    """The official ``query_merge`` / ``supp_merge``: 1x1 conv (no bias), ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.ReLU(inplace=True))


class HDMNet(FewShotSegmenter):
    """HDMNet: frozen base learner, mid-level prototype, two similarity maps, the hierarchical transformer, BAM's
    ensemble. ``base_class_ids``: the fold's base classes in the base learner's channel order (1-based ids)."""

    def __init__(self, base_learner: BaseLearner, base_class_ids: Sequence[int], shots: int = 1,
                 feature_dim: int = 256, dropout: float = 0.5, size: TransformerSize = PAPER_SIZE,
                 transformer_init: str = "official", fixed_batchnorm: bool = True, shot_unsort: bool = False,
                 train_shot_weighting: bool = False, base_dropout: bool = True, lr_scale: float = 10.0,
                 guide: PriorSource | None = None, guide_scale: float = SIMILARITY_SCALE,
                 similarity_maps: Sequence[str] = SIMILARITY_LEVELS) -> None:
        super().__init__()
        self.guide = guide  # None: HDMNet's two similarity maps; PI-CLIP(HDMNet): its CLIP priors (unscaled)
        self.guide_scale = guide_scale
        if not similarity_maps or len(set(similarity_maps)) != len(similarity_maps) \
                or not set(similarity_maps) <= set(SIMILARITY_LEVELS):
            raise OptionError(f"HDMNet's similarity maps must be distinct levels of {SIMILARITY_LEVELS}, got "
                              f"{tuple(similarity_maps)!r}.", "pass both (the official) or one of them (a control).")
        self.similarity_levels = tuple(similarity_maps)
        guide_channels = guide.channels if guide else len(self.similarity_levels)
        self.hold_frozen("base_learner", base_learner)
        self.base_class_ids = list(base_class_ids)
        # on the model's device: the training step looks the episode classes up without a host copy
        self.register_buffer("base_class_table", base_class_table(self.base_class_ids), persistent=False)
        self.base_dropout = base_dropout
        self.lr_scale = lr_scale
        channels = base_learner.backbone.channels
        mid_channels = channels["layer2"] + channels["layer3"]
        self.down_query = feature_reduction(mid_channels, feature_dim, dropout)
        self.down_support = feature_reduction(mid_channels, feature_dim, dropout)
        self.query_merge = _merge(2 * feature_dim + guide_channels, size.embed_dims)
        self.support_merge = _merge(2 * feature_dim, size.embed_dims)
        self.transformer = HierarchicalTransformer(size, guide_channels=guide_channels, init=transformer_init,
                                                   fixed_batchnorm=fixed_batchnorm)
        self.ensemble = LearnerEnsemble()
        self.shot_weighting = ShotWeighting(shots, hidden=SHOT_HIDDEN, unsort=shot_unsort)
        self.shot_weighting.requires_grad_(train_shot_weighting)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The official ``get_optim``: the transformer at the base lr, the reductions, merges and the ensemble at
        ``lr_scale`` times it; the K-shot weighting only when it trains."""
        others = [p for name, p in self.named_parameters() if not name.startswith("transformer.") and p.requires_grad]
        return [{"params": list(self.transformer.parameters())}, {"params": others, "lr_scale": self.lr_scale}]

    @torch.no_grad()
    def frozen_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen base learner's ``layer2``, ``layer3``, ``layer4`` and ``embedding`` of (N, 3, H, W) images."""
        levels = self.base_learner.backbone(images, last="layer4", first="layer2")
        levels["embedding"] = self.base_learner.embed(self.base_learner.ppm(levels["layer4"]))  # (N, hidden, h, w)
        return levels

    def base_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """The base learner's logits (B, 1 + C_base, h, w) of the query embedding; its Dropout2d is active while
        training when ``base_dropout`` (the official code's train mode reaches it)."""
        relu, dropout, classifier = self.base_learner.classify
        with torch.no_grad():
            hidden = F.dropout2d(relu(embedding), dropout.p, training=self.training and self.base_dropout)
            return classifier(hidden)

    def similarity_maps(self, query: dict[str, torch.Tensor], support: dict[str, torch.Tensor],
                        masks: torch.Tensor, shots: int) -> torch.Tensor:
        """(B, L, h, w): max cosine of each query position to the masked support's ``embedding`` and ``layer4``
        (the levels of ``similarity_levels``, L of them), averaged over the shots (the official ``get_similarity``).
        masks: (B*K, H, W)."""
        maps = []
        for level in self.similarity_levels:
            inside = foreground_weights(masks, support[level].shape[-2:], mode="nearest")  # (B*K, 1, h, w)
            similarity = max_cosine_similarity(query[level].repeat_interleave(shots, dim=0), support[level] * inside)
            maps.append(similarity.unflatten(0, (-1, shots)).mean(dim=1))  # (B, h, w)
        return torch.stack(maps, dim=1)

    @property
    def reads_image_labels(self) -> bool:
        """Whether the guide reads the classes in the query's label (PI-CLIP's official VTP prompts)."""
        return getattr(self.guide, "reads_image_labels", False)

    def predict(self, batch: OneWayInputs) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Ensemble scores (B, 2, h, w), meta logits (B, 2, h, w) and the correlation maps [(B, h_i, w_i)],
        coarse to fine."""
        batch_size, shots = batch.support_images.shape[:2]
        masks = batch.support_masks.flatten(0, 1)  # (B*K, H, W)
        supports = blank_outside_masks(batch.support_images.flatten(0, 1), masks, IMAGENET_MEAN)  # (B*K, 3, H, W)
        query_levels, support_levels = self.frozen_features(batch.query_images), self.frozen_features(supports)
        query = self.down_query(torch.cat([query_levels["layer3"], query_levels["layer2"]], dim=1))  # (B, D, h, w)
        support = self.down_support(torch.cat([support_levels["layer3"], support_levels["layer2"]], dim=1))  # (B*K, D, h, w)
        prototypes = masked_average_pooling(support, masks)[:, :, None, None]  # (B*K, D, 1, 1)
        prototype = prototypes.unflatten(0, (batch_size, shots)).mean(dim=1)  # (B, D, 1, 1)
        if self.guide is None:
            similarity = self.similarity_maps(query_levels, support_levels, masks, shots)  # (B, L, h, w)
        else:
            similarity = self.guide(batch, query_levels, support_levels, self.base_learner.backbone)  # (B, P, h, w)
        support = self.support_merge(torch.cat([support, prototypes.expand_as(support)], dim=1))  # (B*K, E, h, w)
        query = self.query_merge(torch.cat([query, prototype.expand_as(query), similarity * self.guide_scale], dim=1))
        meta, correlations = self.transformer(query, support, masks, similarity)  # (B, 2, h, w)
        differences = scene_difference(query_levels["layer2"], support_levels["layer2"].unflatten(0, (batch_size, shots)))
        difference = (self.shot_weighting(differences) * differences).sum(dim=1)  # (B,)
        exclude = base_class_index(batch.class_ids, self.base_class_table) if self.training else None
        final = self.ensemble(meta, self.base_logits(query_levels["embedding"]), difference, exclude)
        return final, meta, correlations

    def segment(self, batch: OneWayInputs) -> torch.Tensor:
        final = self.predict(batch)[0]
        return F.interpolate(final, size=batch.query_images.shape[-2:], mode="bilinear", align_corners=True)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """CE(final) + CE(meta) + correlation distillation (the official train.py's sum; aux weights 1).

        The official sum also holds ``aux_loss2``, the frozen base learner's cross-entropy on the query's base
        classes. It has no gradient (the base learner is frozen), so it is left out: the gradient is the official
        one, and the logged loss is lower by that term."""
        one_way = require_one_way(batch)
        final, meta, correlations = self.predict(one_way.inputs(self.reads_image_labels))
        return (segmentation_loss(final, one_way.query_masks) + segmentation_loss(meta, one_way.query_masks)
                + correlation_distillation_loss(correlations, one_way.query_masks))
