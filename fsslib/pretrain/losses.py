"""Pretraining losses: CLIP's contrastive loss and the dense multiple-instance terms of the toy CLIP.

* :func:`contrastive_loss` -- CLIP's symmetric loss; captions naming the same set of classes
  count as positives of each other.
* :func:`dense_mil_loss` -- caption-level multiple-instance loss on the MaskCLIP dense
  embeddings: a class the caption names must win on k positions (k = ``area_fraction`` x its
  area in feature cells: how large the object is, as in "a large star"), the probability
  must stay on named classes and background everywhere, and the background must win on the
  top third of positions.
* :func:`region_mil_loss` -- the same inside random windows of the feature grid, each
  labelled as a crop caption would be: the dense form of captioning random crops, which
  rewards locality.
* :func:`info_nce` -- MoCo's InfoNCE against a queue of negatives (QGNet's global and local losses).
* :func:`negation_loss` -- the image embedding must prefer "a photo of {c}." over "a photo
  without {c}." exactly when the caption names ``c``.

The masks enter only as what a captioner of crops would know: per feature cell, how many
pixels of each label it holds (``fsslib.pretrain.scenes.patch_label_counts``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, keys: list[tuple[int, ...]],
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss; pairs whose captions name the same classes are all positives."""
    logits = logit_scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T  # (B, B)
    index = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    group = torch.tensor([index[k] for k in keys])
    targets = (group[:, None] == group[None, :]).float()
    targets = targets / targets.sum(1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def _cell_areas(label_counts: torch.Tensor) -> torch.Tensor:
    """Label counts (..., N, C + 2) -> each class's area in grid cells (..., C)."""
    cell_pixels = label_counts.sum(-1).amax(-1, keepdim=True)  # (..., 1): pixels per cell
    return label_counts[..., 1:-1].sum(-2) / cell_pixels


def _top_k_mean(probs: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Mean of each column's k largest entries: probs (..., N, C), k (..., C) >= 1 -> (..., C)."""
    ranked = probs.sort(dim=-2, descending=True).values  # (..., N, C)
    rank = torch.arange(probs.shape[-2], device=probs.device)[:, None]  # (N, 1)
    return (ranked * (rank < k[..., None, :])).sum(-2) / k


def _patch_probabilities(dense: torch.Tensor, prompt_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Softmax over the prompts (C + 1, D) of each dense embedding's scaled cosines: (B, N, D) -> (B, N, C + 1)."""
    return (logit_scale * F.normalize(dense, dim=-1) @ F.normalize(prompt_emb, dim=-1).T).softmax(-1)


def _bce_to(scores: torch.Tensor, target: float) -> torch.Tensor:
    scores = scores.clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(scores, torch.full_like(scores, target))


def dense_mil_loss(dense: torch.Tensor, prompt_emb: torch.Tensor, label_counts: torch.Tensor,
                   logit_scale: torch.Tensor, area_fraction: float = 0.5) -> torch.Tensor:
    """Caption-level multiple-instance loss on dense embeddings (B, N, D) vs prompts (C + 1, D), background last.

    ``label_counts`` (B, g, g, C + 2) from ``patch_label_counts`` tells which classes the
    caption names and how large they are (in grid cells). A named class must win on its
    top-k positions, k = ``area_fraction`` x its area (at least 1); at every position the
    probability must stay on the named classes and the background; the background must
    win on the top third of the positions.
    """
    counts = label_counts.flatten(1, 2).float()  # (B, N, C + 2)
    probs = _patch_probabilities(dense, prompt_emb, logit_scale)  # (B, N, C + 1)
    area = _cell_areas(counts)  # (B, C)
    named = area > 0
    positive = _top_k_mean(probs[..., :-1], (area_fraction * area).ceil().clamp(min=1))  # (B, C)
    allowed = torch.cat([named, torch.ones_like(named[:, :1])], 1)  # (B, C + 1)
    allowed_mass = (probs * allowed[:, None, :]).sum(-1)  # (B, N)
    background = probs[..., -1].topk(max(1, dense.shape[1] // 3), dim=1).values.mean(1)  # (B,)
    loss = -allowed_mass.clamp(min=1e-6).log().mean() + _bce_to(background, 1.0)
    return loss + _bce_to(positive[named], 1.0) if named.any() else loss


def random_windows(batch: int, windows: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """Membership (B, W, grid * grid) of ``windows`` random rectangles per image, sides 2..grid - 2 cells."""
    sides = torch.randint(2, grid - 1, (2, batch, windows), generator=generator)  # (2, B, W): heights, widths
    starts = (torch.rand(2, batch, windows, generator=generator) * (grid - sides + 1)).long()  # (2, B, W)
    cells = torch.arange(grid)
    inside = (cells >= starts[..., None]) & (cells < (starts + sides)[..., None])  # (2, B, W, grid)
    return (inside[0][..., :, None] & inside[1][..., None, :]).flatten(2)  # (B, W, grid * grid)


def region_mil_loss(dense: torch.Tensor, prompt_emb: torch.Tensor, label_counts: torch.Tensor,
                    logit_scale: torch.Tensor, generator: torch.Generator, windows: int = 4,
                    area_fraction: float = 0.5, named_fraction: float = 0.6,
                    unnamed_fraction: float = 0.15) -> torch.Tensor:
    """Crop captions on the dense map: the multiple-instance loss inside random windows.

    The dense analogue of captioning random crops (so locality is rewarded): for each
    window of the feature grid, a class its crop caption would name (>= 60% of the
    object inside) must win on k of the window's positions (``area_fraction`` x its area
    inside, at least 1), a class of the image it would not name (<= 15% inside) must win
    nowhere in it, and a window without object pixels must be background everywhere.
    ``dense`` (B, N, D), ``prompt_emb`` (C + 1, D) with background last, ``label_counts``
    (B, g, g, C + 2) from ``patch_label_counts``.
    """
    batch, positions, _ = dense.shape
    grid = int(round(math.sqrt(positions)))
    probs = _patch_probabilities(dense, prompt_emb, logit_scale)  # (B, N, C + 1)
    members = random_windows(batch, windows, grid, generator).to(dense.device)  # (B, W, N)
    counts = label_counts.flatten(1, 2).float()  # (B, N, C + 2)
    windowed = counts[:, None] * members[..., None]  # (B, W, N, C + 2)
    area_inside, area = _cell_areas(windowed), _cell_areas(counts)[:, None]  # (B, W, C), (B, 1, C)
    fraction = area_inside / area.clamp(min=1e-6)
    named = (area > 0) & (fraction >= named_fraction)
    unnamed = (area > 0) & (fraction <= unnamed_fraction)
    class_probs = probs[:, None, :, :-1]  # (B, 1, N, C)
    outside = ~members[..., None]  # (B, W, N, 1)
    k = (area_fraction * area_inside).ceil().clamp(min=1)  # (B, W, C)
    positive = _top_k_mean(class_probs.masked_fill(outside, 0.0), k)  # (B, W, C)
    negative = class_probs.masked_fill(outside, 0.0).amax(2)  # (B, W, C)
    loss = dense.sum() * 0
    if named.any():
        loss = loss + _bce_to(positive[named], 1.0)
    if unnamed.any():
        loss = loss + _bce_to(negative[unnamed], 0.0)
    empty = windowed[..., 1:].sum((-2, -1)) == 0  # (B, W): no object (or ignored) pixel inside
    if empty.any():
        background = (probs[:, None, :, -1] * members).sum(-1) / members.sum(-1)  # (B, W) mean inside
        loss = loss + _bce_to(background[empty], 1.0)
    return loss


def negation_loss(image_emb: torch.Tensor, target_emb: torch.Tensor, non_target_emb: torch.Tensor,
                  present: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """2-way loss over ('a photo of {c}.', 'a photo without {c}.') for every class; label = presence."""
    image = F.normalize(image_emb, dim=-1)
    of = logit_scale * image @ F.normalize(target_emb, dim=-1).T  # (B, C)
    without = logit_scale * image @ F.normalize(non_target_emb, dim=-1).T  # (B, C)
    return F.binary_cross_entropy_with_logits(of - without, present)


def info_nce(queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE (QGNet Eqs. 1 and 6): -log exp(q.k+ / t) / (exp(q.k+ / t) + sum_queue exp(q.k- / t)).

    queries, keys: (B, D) L2-normalised, row i of each a positive pair; queue: (D, M) normalised
    negatives. Cross-entropy with the positive at index 0, as facebookresearch/moco ``builder.py``.
    """
    positive = (queries * keys).sum(dim=1, keepdim=True)  # (B, 1)
    negative = queries @ queue  # (B, M)
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(queries), dtype=torch.long, device=queries.device))
