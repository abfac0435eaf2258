"""Acceptance of a toy DINO: do its patch correlations group objects better than the toy CLIP's own?

That difference is why CLIP-DINOiser exists. On held-out toy scenes (``default_rng([0, 96, index])``)
every 8 x 8 feature cell gets the label covering most of its pixels. For a cell p of an object of
class c (at least half its pixels), the *group* of p is the set of cells q with
``cos(f_p, f_q) >= gamma``; its IoU with the cells of class c is averaged over all such p. Reported
at CLIP-DINOiser's gamma = 0.2 and at the best gamma of a grid (features differ in how spread
their cosines are), for:

* the toy DINO's last-block values (what CLIP-DINOiser distils) and keys (what FOUND reads),
  and an untrained toy DINO's values (the scale);
* the toy CLIP ViT's patch tokens after each block (the correlation head reads one of them) and
  its MaskCLIP features.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fsslib.clip import block_taps, load_clip, maskclip_features
from fsslib.models.vit import load_dino, last_block_taps
from fsslib.pretrain.scenes import patch_label_counts, render_scenes, to_unit_tensor

HELD_OUT_SEED, HELD_OUT_STREAM = 0, 96
GAMMA = 0.2  # CLIP-DINOiser's binarisation of the teacher's correlations
GAMMAS = tuple(round(0.1 * i, 1) for i in range(10))
FEATURE_STRIDE = 8


def cell_labels(masks: np.ndarray, stride: int = FEATURE_STRIDE) -> torch.Tensor:
    """(N, S, S) masks -> (N, S/stride * S/stride) label of each cell: its majority label when it holds
    at least half the cell's pixels, else -1 (mixed); row-major like the token grids."""
    counts = torch.from_numpy(np.stack([patch_label_counts(mask, stride) for mask in masks])).flatten(1, 2).float()
    share, label = counts.max(dim=-1)  # (N, g*g)
    label[label == counts.shape[-1] - 1] = -1  # ignored pixels
    return torch.where(share >= counts.sum(-1) / 2, label, torch.full_like(label, -1))


def grouping_iou(features: torch.Tensor, labels: torch.Tensor, gammas: tuple[float, ...] = GAMMAS) -> dict[float, float]:
    """Mean IoU of each object cell's thresholded correlation map with its class's cells, per gamma.

    features (N, T, C) tokens, labels (N, T) from :func:`cell_labels` (0 = background, -1 = mixed).
    """
    unit = F.normalize(features.float(), dim=-1)
    correlation = unit @ unit.transpose(1, 2)  # (N, T, T)
    same = labels[:, :, None] == labels[:, None, :]  # (N, T, T)
    anchors = labels > 0  # (N, T): object cells
    scores = {}
    for gamma in gammas:
        grouped = correlation >= gamma
        intersection = (grouped & same).sum(-1).float()
        union = (grouped | same).sum(-1).float()
        scores[gamma] = float((intersection / union)[anchors].mean())
    return scores


def summary(scores: dict[float, float]) -> dict[str, float]:
    """IoU at gamma = 0.2, and the best IoU with its gamma."""
    best = max(scores, key=scores.get)
    return {"iou_at_0.2": round(scores[GAMMA], 4), "best_iou": round(scores[best], 4), "best_gamma": best}


@torch.no_grad()
def feature_sets(dino_checkpoint: str | Path | None, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """(N, T, C) tokens of every compared feature on images (N, 3, 64, 64) in [0, 1]."""
    torch.manual_seed(0)
    dino, untrained = load_dino("toy-dino", dino_checkpoint), load_dino("toy-dino", "random")
    taps, untrained_taps = last_block_taps(dino, images), last_block_taps(untrained, images)
    clip = load_clip("toy-vit")
    blocks = list(range(len(clip.visual.transformer.resblocks)))
    clip_taps = block_taps(clip, images, blocks, with_attention=False)
    features = {"dino_values": taps.values, "dino_keys": taps.keys, "untrained_dino_values": untrained_taps.values}
    features.update({f"clip_block_{block}": clip_taps.tokens[block] for block in blocks})
    features["clip_maskclip"] = maskclip_features(clip, images).flatten(2).transpose(1, 2)
    return features


def acceptance_metrics(checkpoint: str | Path | None = None, n_images: int = 300) -> dict:
    """Grouping IoU of the toy DINO's correlations against the toy CLIP's, on held-out scenes."""
    scenes = render_scenes(n_images, HELD_OUT_SEED, HELD_OUT_STREAM)
    labels = cell_labels(scenes.masks)
    features = feature_sets(checkpoint, to_unit_tensor(scenes.images))
    grouping = {name: summary(grouping_iou(tokens, labels)) for name, tokens in features.items()}
    return {
        "held_out_scenes": f"np.random.default_rng([{HELD_OUT_SEED}, {HELD_OUT_STREAM}, index]), index < {n_images}",
        "object_cells": int((labels > 0).sum()),
        "grouping_iou": grouping,
        "dino_minus_best_clip_at_0.2": round(grouping["dino_values"]["iou_at_0.2"] - max(
            v["iou_at_0.2"] for k, v in grouping.items() if k.startswith("clip")), 4),
    }
