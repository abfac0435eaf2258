"""LFSS Sec. 3.5, complementary correlation matching (CCM): a focused prototype matched inside and outside the ROI.

* Eq. 13: ``A = softmax(cos(F_q * M_q, F_s * M_s))`` between every query position x and support
  position y (the cosine of the masked feature *vectors*, pixel by pixel; masked-out positions
  are zero vectors, cosine 0). The softmax runs over the support positions (the paper names no
  axis): each query position spreads one unit of attention over the support.
* Eq. 14: ``P_a = sum_y A^y (F_s^y M_s^y) / sum_y M_s^y``, where the per-support-position
  weight ``A^y`` is the attention that position receives, averaged over the query positions
  (the paper does not say how A, one number per (x, y) pair, becomes one per y). Query
  positions outside the query mask have uniform rows and add the same weight everywhere, so
  an empty query mask leaves ``P_a`` the support's masked average divided by the support's h' w' positions:
  its direction, all that the cosines of Eqs. 15-16 read.
* Eq. 15, ROI-guided map: ``M_RCM = cos(P_a, F_q * M_q)`` (zero outside the query mask).
* Eq. 16, full-image map: ``M_FCM = cos(P_a, F_q)``.
* Eq. 17: ``M = M_RCM (+) M_FCM`` along channels.

K shots: ``P_a`` is computed with each shot and averaged over the shots (PFENet's K-shot
rule for prototypes).
"""
from __future__ import annotations

import torch

from fsslib.blocks import prototype_cosine
from fsslib.blocks.masks import MASK_AREA_EPS


def support_attention(query: torch.Tensor, query_masks: torch.Tensor, support: torch.Tensor,
                      support_masks: torch.Tensor) -> torch.Tensor:
    """Eq. 13: A (N, hw_q, hw_s), softmax over the support positions.

    query: (N, C, h, w); support: (N, C, h', w'); masks: (N, h, w) / (N, h', w') bool.
    """
    masked_query = (query * query_masks.unsqueeze(1)).flatten(2).transpose(1, 2)  # (N, hw_q, C)
    masked_support = (support * support_masks.unsqueeze(1)).flatten(2)  # (N, C, hw_s)
    cosine = prototype_cosine(masked_support.unsqueeze(-1), masked_query)[..., 0]  # (N, hw_q, hw_s)
    return cosine.softmax(dim=-1)


def focused_prototype(query: torch.Tensor, query_masks: torch.Tensor, support: torch.Tensor,
                      support_masks: torch.Tensor) -> torch.Tensor:
    """Eqs. 13-14: P_a (N, C), the support's masked features weighted by the attention they receive.

    query: (N, C, h, w); support: (N, C, h', w'); masks: bool at those grids.
    """
    weights = support_attention(query, query_masks, support, support_masks).mean(dim=1)  # (N, hw_s): A^y
    masked_support = (support * support_masks.unsqueeze(1)).flatten(2)  # (N, C, hw_s)
    area = support_masks.flatten(1).sum(dim=1, keepdim=True).to(support.dtype)  # (N, 1)
    return (masked_support * weights.unsqueeze(1)).sum(dim=-1) / (area + MASK_AREA_EPS)


def correlation_maps(prototype: torch.Tensor, query: torch.Tensor, query_masks: torch.Tensor,
                     full_image: bool = True) -> torch.Tensor:
    """Eqs. 15-17: [M_RCM, M_FCM] (B, 2, h, w), or M_RCM alone (B, 1, h, w) when not ``full_image``.

    prototype: (B, C) P_a; query: (B, C, h, w); query_masks: (B, h, w) bool.
    """
    prototypes = prototype.unsqueeze(1)  # (B, 1, C)
    roi = prototype_cosine(query * query_masks.unsqueeze(1), prototypes)  # (B, 1, h, w): Eq. 15
    if not full_image:
        return roi
    return torch.cat([roi, prototype_cosine(query, prototypes)], dim=1)  # Eqs. 16-17
