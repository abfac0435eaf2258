"""PFENet (Tian et al., TPAMI 2020): training-free prior mask + Feature Enrichment Module (FEM).

Pipeline for a query and K supports (shapes for the paper tier: 473 x 473 -> 60 x 60):

* Mid-level features ``cat(layer3, layer2) -> 1x1 conv -> ReLU -> Dropout2d(0.5)`` (256
  channels; the toy tier uses 64), one reduction for the query and one for the supports.
* Support prototype = weighted GAP of the support features under the mask (as in PFENet),
  averaged over the K shots (:func:`fsslib.blocks.masked_average_pooling`).
* Prior channels from a :class:`~fsslib.blocks.priors.PriorSource`: PFENet's own
  :class:`~fsslib.blocks.priors.MaskedSupportPrior` (Sec. 3.2, Eqs. 3-5) by default; PI-CLIP
  (CLIP priors) and QGNet (region maps) pass theirs -- the rest of the model is the same.
* FEM decoder (Sec. 3.3, :class:`fsslib.blocks.FeatureEnrichmentModule`).
* Loss = CE(final) + mean over scales of CE(auxiliary) (PFENet's aux weight 1.0).
* New convolutions start from He-normal weights (:func:`fsslib.blocks.kaiming_init`) at the toy tier: PFENet's
  code keeps PyTorch's default init, which trains far slower at the toy tier's few hundred steps. The paper
  presets keep the official default (option ``init="pytorch"``, ``he_init=False``): with SGD at 0.0025 on
  features of order one, He-normal weights diverge within a few steps (random-weight rehearsals).

``mask_support_image``: the supports reach the backbone blanked outside their masks (ImageNet's mean colour,
0 once normalised), as HDMNet's feature extractor does and PI-CLIP's official code (on HDMNet) with it;
PFENet's and BAM's own code feed the whole support and mask its features. Off by default.

The backbone is frozen (held with :meth:`~fsslib.methods.base.FewShotSegmenter.hold_frozen`:
eval-mode BatchNorm statistics, not in the checkpoint), as PFENet.

Checked against dvlab-research/PFENet, ``model/PFENet.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fsslib.blocks import FeatureEnrichmentModule, blank_outside_masks, feature_reduction, masked_average_pooling
from fsslib.blocks.priors import MaskedSupportPrior, PriorSource
from fsslib.data.episodes import EpisodeBatch, OneWayInputs
from fsslib.methods.base import FewShotSegmenter, require_one_way, segmentation_loss
from fsslib.models.backbones import IMAGENET_MEAN, MultiLevelBackbone


class PFENet(FewShotSegmenter):
    """PFENet: frozen backbone, mid-level prototype, a prior source, FEM decoder."""

    def __init__(self, backbone: MultiLevelBackbone, prior: PriorSource | None = None, feature_dim: int = 256,
                 dropout: float = 0.5, he_init: bool = True, mask_support_image: bool = False) -> None:
        super().__init__()
        self.mask_support_image = mask_support_image
        self.hold_frozen("backbone", backbone)
        self.prior = prior if prior is not None else MaskedSupportPrior()
        mid_channels = backbone.channels["layer2"] + backbone.channels["layer3"]
        self.down_query = feature_reduction(mid_channels, feature_dim, dropout, he_init)
        self.down_support = feature_reduction(mid_channels, feature_dim, dropout, he_init)
        self.decoder = FeatureEnrichmentModule(feature_dim, self.prior.channels, he_init=he_init)

    @property
    def reads_image_labels(self) -> bool:
        """Whether the prior source reads the classes in the query's label (PI-CLIP's official VTP prompts)."""
        return getattr(self.prior, "reads_image_labels", False)

    @torch.no_grad()
    def backbone_levels(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen layer2 and layer3 features of (N, 3, H, W) images: what the reductions and the priors read
        (layer1 is not kept: 14 MB per image at 473 x 473)."""
        return self.backbone(images, last="layer3", first="layer2")

    def episode_levels(self, batch: OneWayInputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The frozen backbone's levels of the queries (B, C, h, w) and of the supports (B*K, C, h, w)."""
        supports = batch.support_images.flatten(0, 1)  # (B*K, 3, H, W)
        if self.mask_support_image:
            supports = blank_outside_masks(supports, batch.support_masks.flatten(0, 1), IMAGENET_MEAN)
        return self.backbone_levels(batch.query_images), self.backbone_levels(supports)

    @torch.no_grad()
    def prior_maps(self, batch: OneWayInputs) -> torch.Tensor:
        """The prior source's maps (B, P, h, w) at feature size, as :meth:`predict` feeds them to FEM (e.g. QGNet's
        guided and prior region maps; in [0, 1], PI-CLIP's times 10)."""
        return self.prior(batch, *self.episode_levels(batch), self.backbone)

    def predict(self, batch: OneWayInputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final logits (B, 2, h, w) at feature size and the auxiliary logits of every FEM scale."""
        batch_size, shots = batch.support_images.shape[:2]
        query_levels, support_levels = self.episode_levels(batch)
        query = self.down_query(torch.cat([query_levels["layer3"], query_levels["layer2"]], dim=1))  # (B, D, h, w)
        support = self.down_support(torch.cat([support_levels["layer3"], support_levels["layer2"]], dim=1))  # (B*K, D, h, w)
        prototypes = masked_average_pooling(support, batch.support_masks.flatten(0, 1))  # (B*K, D)
        prototype = prototypes.view(batch_size, shots, -1).mean(dim=1)  # (B, D)
        prior = self.prior(batch, query_levels, support_levels, self.backbone)  # (B, P, h, w)
        return self.decoder(query, prototype, prior)

    def segment(self, batch: OneWayInputs) -> torch.Tensor:
        logits, _ = self.predict(batch)
        return F.interpolate(logits, size=batch.query_images.shape[-2:], mode="bilinear", align_corners=True)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """CE of the final prediction + mean CE of the per-scale auxiliary predictions (PFENet Sec. 3.4)."""
        one_way = require_one_way(batch)
        logits, auxiliary = self.predict(one_way.inputs(self.reads_image_labels))
        main = segmentation_loss(logits, one_way.query_masks)
        aux = torch.stack([segmentation_loss(a, one_way.query_masks) for a in auxiliary]).mean()
        return main + aux
