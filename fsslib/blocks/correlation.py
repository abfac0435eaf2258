"""Correlations between query and support features, and the priors built from them.

* :func:`min_max_normalise` -- (x - min) / (max - min + eps) per map (PFENet Eq. 5, PI-CLIP
  Eq. 8, pytorch-grad-cam's ``scale_cam_image``, QGNet Eq. 12): the one copy in fsslib.
* :func:`max_cosine_similarity` -- for every query position the maximum cosine to any support
  position (PFENet Eqs. 3-4, PI-CLIP Eqs. 6-7, QGNet's region maps Eqs. 9-11).
* :func:`prototype_cosine` -- the cosine of every position with each of a set of prototypes
  (LFSS Eqs. 5, 7, 12, 15-16; ASGNet's prototype-to-query maps).
* :func:`masked_support_prior` -- PFENet's training-free prior from masked support features.
"""
from __future__ import annotations

import torch

COSINE_EPS = 1e-7  # PFENet's cosine_eps, also PI-CLIP's and QGNet's epsilon


def min_max_normalise(maps: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """Scale each map of (..., h, w) to [0, 1]: (x - min) / (max - min + eps) (PFENet Eq. 5, PI-CLIP Eq. 8)."""
    flat = maps.flatten(-2)  # (..., h*w)
    low = flat.amin(dim=-1, keepdim=True)
    high = flat.amax(dim=-1, keepdim=True)
    return ((flat - low) / (high - low + eps)).view_as(maps)


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
    cosine = dot.div_(norms.add_(eps))  # in place: two (N, h'w', hw) buffers (52 MB each at 60 x 60), not four
    return cosine.amax(dim=1).view(query.shape[0], *query.shape[-2:])


def prototype_cosine(features: torch.Tensor, prototypes: torch.Tensor, eps: float = COSINE_EPS) -> torch.Tensor:
    """Cosine of every position of (N, C, h, w) features with each of M prototypes (N, M, C): (N, M, h, w).

    s.p / (|s| |p| + eps) as PFENet's code, so a zero feature or prototype gives 0.
    """
    dot = torch.einsum("nchw,nmc->nmhw", features, prototypes)  # (N, M, h, w)
    norms = features.norm(dim=1).unsqueeze(1) * prototypes.norm(dim=2)[:, :, None, None]  # (N, M, h, w)
    return dot / (norms + eps)


def masked_support_prior(query: torch.Tensor, support: torch.Tensor, support_weights: torch.Tensor) -> torch.Tensor:
    """PFENet's training-free prior for one shot (Sec. 3.2, Eqs. 3-5).

    query: (B, C, h, w) query features; support: (B, C, h', w') support features; support_weights:
    (B, 1, h', w') the support mask at that size. The support is masked, the max cosine taken for
    every query position, and the result min-max normalised. Returns (B, h, w) in [0, 1].
    """
    similarity = max_cosine_similarity(query, support * support_weights)  # (B, h, w)
    return min_max_normalise(similarity)


def prior_region_map(bridge: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """QGNet's prior region map (Eqs. 9-12): (B, h, w) in [0, 1], for each bridge position the max cosine to any
    position of the prior features of the same image, min-max normalised (eps 1e-7).

    bridge: (B, C, h, w) = X_q; prior: (B, C, h', w') = P_q (same channels). Unlike PFENet's prior
    no mask is involved: both feature maps come from the query.
    """
    return min_max_normalise(max_cosine_similarity(bridge, prior))
