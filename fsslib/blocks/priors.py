"""Prior sources: what feeds the prior channels of a PFENet-style decoder.

A :class:`PriorSource` maps a binary episode batch (with the frozen backbone's features) to
``channels`` prior maps at the query's feature size (in [0, 1]; PI-CLIP's are multiplied by 10, as its
official code does). PFENet, PI-CLIP and QGNet are
the same segmenter with different prior sources:

* :class:`MaskedSupportPrior` -- PFENet's training-free prior (Sec. 3.2, Eqs. 3-5): the
  backbone's layer4 of the query against layer4 of the masked support, max cosine, min-max;
  K shots averaged. QGNet calls it the *guided region map*.
* :class:`NoPrior` -- zeros: PFENet without a prior, the control for what a prior adds.
* PI-CLIP's CLIP priors (``fsslib.methods.piclip``), QGNet's region maps (``fsslib.methods.qgnet.model``).

Checked against dvlab-research/PFENet, ``model/PFENet.py`` (``forward``: the prior block).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from fsslib.blocks.correlation import masked_support_prior
from fsslib.blocks.frozen import HoldsFrozen
from fsslib.blocks.masks import foreground_weights

if TYPE_CHECKING:
    from fsslib.data.episodes import OneWayInputs


class PriorSource(HoldsFrozen):
    """Base of the prior sources; ``channels`` is the number of prior maps it returns (frozen models it
    needs are held with ``hold_frozen``)."""

    channels: int = 1

    def forward(self, batch: OneWayInputs, query_levels: dict[str, torch.Tensor],
                support_levels: dict[str, torch.Tensor], backbone: nn.Module) -> torch.Tensor:
        """(B, channels, h, w) priors at the size of ``query_levels["layer3"]`` (in [0, 1] unless scaled).

        query_levels / support_levels: the frozen backbone's layer2 and layer3 of the B queries
        and the B*K supports; ``backbone`` is that frozen backbone (a
        ``fsslib.models.backbones.MultiLevelBackbone``, for deeper levels).
        """
        raise NotImplementedError


class MaskedSupportPrior(PriorSource):
    """PFENet's prior (B, 1, h, w): mean over the K shots of the per-shot priors (PFENet Sec. 3.2).

    The support's layer4 is computed on the mask-multiplied layer3 and multiplied by the mask
    again; for every query position the maximum cosine to any support position, min-max
    normalised per image (eps 1e-7).
    """

    channels = 1

    @torch.no_grad()
    def forward(self, batch: OneWayInputs, query_levels: dict[str, torch.Tensor],
                support_levels: dict[str, torch.Tensor], backbone: nn.Module) -> torch.Tensor:
        return self.from_query_layer4(batch, backbone.layer4(query_levels["layer3"]), support_levels, backbone)

    @torch.no_grad()
    def from_query_layer4(self, batch: OneWayInputs, query_high: torch.Tensor, support_levels: dict[str, torch.Tensor],
                          backbone: nn.Module) -> torch.Tensor:
        """The prior from the queries' layer4 (B, C4, h, w), computed by the caller (QGNet's bridge features are
        that tensor: computed once for both of its maps)."""
        batch_size, shots = batch.support_images.shape[:2]
        support_layer3 = support_levels["layer3"]  # (B*K, C3, h, w)
        weights = foreground_weights(batch.support_masks.flatten(0, 1), support_layer3.shape[-2:])  # (B*K, 1, h, w)
        support_high = backbone.layer4(support_layer3 * weights)  # (B*K, C4, h, w)
        query_repeated = query_high.repeat_interleave(shots, dim=0) if shots > 1 else query_high  # (B*K, C4, h, w)
        priors = masked_support_prior(query_repeated, support_high, weights)  # (B*K, h, w)
        return priors.view(batch_size, shots, *priors.shape[-2:]).mean(dim=1, keepdim=True)  # (B, 1, h, w)


class NoPrior(PriorSource):
    """A constant zero prior (B, 1, h, w): the decoder then sees the query features and the prototype only
    (PFENet's ablation without the prior mask; a control for what a prior adds)."""

    channels = 1

    def forward(self, batch: OneWayInputs, query_levels: dict[str, torch.Tensor],
                support_levels: dict[str, torch.Tensor], backbone: nn.Module) -> torch.Tensor:
        query = query_levels["layer3"]  # (B, C3, h, w)
        return query.new_zeros(query.shape[0], 1, *query.shape[-2:])
