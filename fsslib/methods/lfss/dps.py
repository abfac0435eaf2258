"""LFSS Sec. 3.4, distributed prototype supervision (DPS): part prototypes by superpixel-guided clustering.

Follows ASGNet (Reagan1311/ASGNet, ``util/seed_init.py`` and ``model/asgnet.py``: ``sp_center_iter``),
on which LFSS Eqs. 6 and 9-11 are built, with LFSS's seed move (Eqs. 7-8) added:

* number of superpixels: ``N_sp = min(round(area / a), 5)`` (ASGNet), one masked-average prototype when
  ``N_sp <= 1``; ``a`` scaled to the feature map, ``N_sp`` capped at the mask's cell count;
* Eq. 6, seeds: successive maxima of the mask's Euclidean distance transform (:func:`place_seeds`);
* Eqs. 7-8, seed move: all seeds placed first, then each moved within its ``n x n`` neighbourhood to the cell
  most similar to the query's foreground prototype ``P_q^f`` (a tie keeps the seed in place);
* Eqs. 9-11, clustering: ``Q = sqrt(|F_p - O_i|^2 + (|xy_p - xy_i| / r)^2)``, ``C = exp(-Q)``, centres as
  the ``C``-weighted means (a softmax of ``-Q`` over the mask's pixels), no gradient, batched over all masks;
* Eq. 12, association map: ``P = sum_i cos(P_sc_i, F)`` against the *query* features, as ASGNet's ``prob_map``.

Where fsslib departs from ASGNet or the paper is silent (the scaled ``a`` and ``r``, padding instead of
cropping before the distance transform, the seed order and ties, which features Eq. 12 reads), the reasons
are in ``docs/methods/lfss_reference.md``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from fsslib.blocks import prototype_cosine
from fsslib.blocks.decoders import PAPER_FEATURE_SIZE
from fsslib.blocks.masks import masked_average_pooling

MAX_SUPERPIXELS = 5  # ASGNet's max_num_sp
PAPER_SUPERPIXEL_AREA = 100  # ASGNet's avg_sp_area, in cells of its 60 x 60 map
PAPER_SPATIAL_SCALE = 10.0  # ASGNet's r: the spatial squared distance is divided by 100
TRAIN_ITERATIONS, EVAL_ITERATIONS = 10, 5  # ASGNet's train_iter / eval_iter
DIRECT = "donot_use_mm_for_euclid_dist"  # torch.cdist computing differences, not |x|^2 + |y|^2 - 2 x.y


def superpixel_area(height: int, width: int) -> float:
    """Mean superpixel area ``a`` in cells: ASGNet's 100 of 3600 cells, as the same fraction of an h x w map."""
    return PAPER_SUPERPIXEL_AREA * height * width / PAPER_FEATURE_SIZE**2


def spatial_scale(height: int, width: int) -> float:
    """Eq. 10's ``r`` for an h x w map: ASGNet's 10 at 60 x 60, scaled with the map's smaller side."""
    return PAPER_SPATIAL_SCALE * min(height, width) / PAPER_FEATURE_SIZE


def superpixel_counts(areas: torch.Tensor, mean_area: float) -> torch.Tensor:
    """ASGNet's ``N_sp = min(round(area / mean_area), 5)`` for mask areas (N,) in cells (half to even, as numpy),
    and at most the area: a seed per cell at most."""
    counts = torch.clamp(torch.round(areas.double() / mean_area), max=MAX_SUPERPIXELS).long()
    return torch.minimum(counts, areas.long())


def place_seeds(mask: np.ndarray, count: int) -> np.ndarray:
    """Eq. 6: ``count`` seeds (count, 2) as (row, col) in an (h, w) bool mask.

    Each seed is the first (row-major) maximum of the distance to the nearest cell outside the
    mask, earlier seed or image border; the seed's cell then leaves the mask.
    """
    return _place_seeds_side_by_side(mask[None].astype(bool), np.array([count]), count)[0]


def _place_seeds_side_by_side(masks: np.ndarray, counts: np.ndarray, rounds: int) -> np.ndarray:
    """:func:`place_seeds` for T masks (T, h, w) at once: seeds (T, rounds, 2), zero past each mask's count.

    The masks, each padded with one background cell, lie side by side in one canvas, so each round is one distance
    transform for all. A cell's nearest background cell is on its own mask's padding at worst (the padding's cell in
    the same row or column is nearer than any cell of another mask), so each mask's distances are its own.
    """
    tiles, height, width = masks.shape
    remaining = np.pad(masks, ((0, 0), (1, 1), (1, 1)))  # (T, h+2, w+2): the image border counts as background
    seeds = np.zeros((tiles, rounds, 2), dtype=np.int64)
    for index in range(rounds):
        active = np.flatnonzero(counts > index)  # the masks that still take a seed this round: A of them
        canvas = remaining[active].transpose(1, 0, 2).reshape(height + 2, -1)  # (h+2, A (w+2)): side by side
        distance = distance_transform_edt(canvas).reshape(height + 2, len(active), width + 2).transpose(1, 0, 2)
        row, col = np.unravel_index(distance.reshape(len(active), -1).argmax(axis=1), (height + 2, width + 2))
        remaining[active, row, col] = False  # the first (row-major) maximum of each mask leaves it
        seeds[active, index] = np.stack([row - 1, col - 1], axis=1)
    return seeds


def seed_table(masks: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeds of N masks (N, h, w) bool, ``counts[n]`` each, padded: seeds (N, S, 2) long, valid (N, S) bool.

    S = the largest count (0 when every count is 0). Every mask's seeds are placed in the same rounds
    (:func:`_place_seeds_side_by_side`): at most 5 distance transforms per call, not one per seed.
    """
    width = int(counts.max()) if len(counts) else 0
    counts_cpu = counts.cpu()
    seeds = torch.zeros(len(masks), width, 2, dtype=torch.long)
    valid = torch.arange(width)[None, :] < counts_cpu[:, None]  # (N, S)
    seeded = torch.nonzero(counts_cpu > 0).flatten()  # masks without seeds stay out of the canvas
    if len(seeded):
        placed = _place_seeds_side_by_side(masks.cpu().numpy()[seeded.numpy()], counts_cpu[seeded].numpy(), width)
        seeds[seeded] = torch.from_numpy(placed)
    return seeds.to(masks.device), valid.to(masks.device)


def move_seeds(features: torch.Tensor, seeds: torch.Tensor, query_prototype: torch.Tensor, grid: int) -> torch.Tensor:
    """Eqs. 7-8: every seed moves to the cell of its ``grid x grid`` neighbourhood most similar to ``P_q^f``.

    features: (N, C, h, w) support features; seeds: (N, S, 2) (row, col); query_prototype:
    (N, C). Neighbours outside the map are skipped; a seed whose own cell ties with the best stays,
    other ties go to the first cell (row-major). Returns the moved seeds (N, S, 2).
    """
    height, width = features.shape[-2:]
    similarity = prototype_cosine(features, query_prototype.unsqueeze(1))  # (N, 1, h, w): Eq. 7
    half = grid // 2
    padded = F.pad(similarity, (half, half, half, half), value=float("-inf"))
    windows = F.unfold(padded, grid)  # (N, grid*grid, h*w): the neighbourhood of every cell
    cells = seeds[..., 0] * width + seeds[..., 1]  # (N, S)
    scores = windows.gather(2, cells.unsqueeze(1).expand(-1, grid * grid, -1))  # (N, grid*grid, S)
    centre = half * grid + half  # the seed's own cell in its window
    best = scores.argmax(dim=1)  # (N, S): Eq. 8
    best = torch.where(scores[:, centre] >= scores.amax(dim=1), centre, best)  # ties: the seed stays
    offsets = torch.stack([best // grid - half, best % grid - half], dim=-1)  # (N, S, 2)
    return seeds + offsets


def cell_coordinates(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(h*w, 2) float (row, col) of every cell, row-major."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=-1).float()


def cluster_prototypes(features: torch.Tensor, masks: torch.Tensor, seeds: torch.Tensor, iterations: int,
                       scale: float) -> torch.Tensor:
    """Eqs. 9-11: superpixel centroids (N, S, C) of the masks' pixels, started at the seeds' features.

    features: (N, C, h, w); masks: (N, h, w) bool; seeds: (N, S, 2) (row, col) of the initial
    centres; ``scale`` is Eq. 10's ``r``. Rows whose mask is empty return meaningless centres
    (their seeds are invalid: :func:`seed_table`).
    """
    height, width = features.shape[-2:]
    pixels = features.flatten(2).transpose(1, 2)  # (N, P, C)
    coordinates = cell_coordinates(height, width, features.device).to(pixels.dtype)  # (P, 2)
    cells = seeds[..., 0] * width + seeds[..., 1]  # (N, S)
    centres = pixels.gather(1, cells.unsqueeze(-1).expand(-1, -1, pixels.shape[-1]))  # (N, S, C): O^0
    centre_coordinates = seeds.to(pixels.dtype)  # (N, S, 2)
    inside = masks.flatten(1)  # (N, P)
    inside = inside | ~inside.any(dim=1, keepdim=True)  # an empty mask would make the softmax 0 / 0
    for _ in range(iterations):
        # direct differences, not cdist's matrix-product form (relative error 5e-4 in the centres)
        feature_distance = torch.cdist(pixels, centres, compute_mode=DIRECT).square()  # (N, P, S)
        spatial_distance = torch.cdist(coordinates.expand(len(pixels), -1, -1), centre_coordinates,
                                       compute_mode=DIRECT).square()
        distance = torch.sqrt(feature_distance + spatial_distance / scale**2)  # Eq. 10
        weights = (-distance).masked_fill(~inside.unsqueeze(-1), float("-inf")).softmax(dim=1)  # (N, P, S): Eqs. 9, 11
        centres = weights.transpose(1, 2) @ pixels  # (N, S, C): Eq. 11
        centre_coordinates = weights.transpose(1, 2) @ coordinates  # (N, S, 2)
    return centres


@torch.no_grad()
def distributed_prototypes(features: torch.Tensor, masks: torch.Tensor, query_prototypes: torch.Tensor, grid: int,
                           iterations: int, clustering: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """DPS prototypes of N support masks: prototypes (N, S, C) and valid (N, S) bool, S >= 1.

    features: (N, C, h, w) support features; masks: (N, h, w) bool; query_prototypes: (N, C)
    the query's ``P_q^f`` for the seed move. A mask with ``N_sp >= 2`` gives its ``N_sp``
    cluster centres; otherwise slot 0 holds its masked average (zero for an empty mask).
    ``clustering=False`` gives every mask the single masked-average prototype (the paper's
    baseline "global prototype", Table 4).
    """
    height, width = features.shape[-2:]
    counts = superpixel_counts(masks.flatten(1).sum(dim=1), superpixel_area(height, width))  # (N,)
    counts = torch.where(counts >= 2, counts, 0) if clustering else torch.zeros_like(counts)
    seeds, seeded = seed_table(masks, counts)  # (N, S, 2), (N, S)
    features, query_prototypes = features.float(), query_prototypes.float()
    global_prototype = masked_average_pooling(features, masks.long())  # (N, C)
    if seeds.shape[1] == 0:
        return global_prototype.unsqueeze(1), torch.ones(len(masks), 1, dtype=torch.bool, device=masks.device)
    with torch.autocast(features.device.type, enabled=False):  # float32 distances and weighted means
        moved = move_seeds(features, seeds, query_prototypes, grid)
        centres = cluster_prototypes(features, masks, moved, iterations, spatial_scale(height, width))  # (N, S, C)
    fallback = counts == 0  # (N,)
    centres[:, 0] = torch.where(fallback[:, None], global_prototype, centres[:, 0])
    valid = seeded.clone()
    valid[:, 0] |= fallback
    return centres, valid


def association_map(prototypes: torch.Tensor, valid: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Eq. 12 (with the query features, module docstring): ``sum_i cos(P_sc_i, F_q)`` over the valid prototypes.

    prototypes: (B, M, C); valid: (B, M) bool; query: (B, C, h, w). Returns (B, 1, h, w).
    """
    cosine = prototype_cosine(query, prototypes.to(query.dtype))  # (B, M, h, w)
    return (cosine * valid[:, :, None, None].to(cosine.dtype)).sum(dim=1, keepdim=True)
