"""QGNet's local patches (Sec. IV-A2): superpixels of each training image, computed once, and their crops.

* Patch generation method 1, Felzenszwalb's graph segmentation (Algorithm 1):
  :func:`skimage.segmentation.felzenszwalb` (``scale``, ``sigma``, ``min_size``).
* Patch generation method 2, SLIC (Algorithm 2): :func:`skimage.segmentation.slic` in Lab space
  (skimage converts RGB images), ``n_segments`` = K centres on a regular grid, ``compactness`` = m of
  Eq. 2, connectivity enforced (the paper's last step). Three differences from the paper's text:
  skimage's distance is Achanta et al.'s ``sqrt(D_lab^2 + (m D_xy / S)^2)``, not Eq. 2's sum
  ``D_lab + m D_xy / S``; the centres are not moved to the lowest gradient of their 3 x 3 neighbourhood
  (Eq. 5); and the clustering stops after ``max_num_iter`` = 10 rounds, not at a convergence threshold.

**Are the patches objects?** (:func:`patch_object_share`, on labelled held-out scenes; the labels
never reach pretraining) The share of sampled patches that are at least half object, and the share of
object pixels in segments at least 90% one class: the two numbers the toy settings were chosen by
(``benchmarks/qgnet_superpixels.py``; every prior extractor's ``.json`` records them).

The superpixels of a pool are computed once, in worker processes, and cached on disk beside
the images (:func:`superpixel_table`), never on the main thread at every epoch. Each segment
is kept as its bounding box and area; training picks one segment per image.

**A patch as input.** The paper feeds "local patches as input" without saying how a patch
becomes an encoder input. fsslib takes the literal reading: the patch is cropped to its
bounding box and encoded as an image, the pixels of the box that lie outside the segment
filled with the segment's mean colour (so the encoder sees the segment, not its neighbours).
The crop is one batched ``grid_sample`` (:func:`patch_crops`).
"""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from skimage.segmentation import felzenszwalb, slic

from fsslib.data.layout import IGNORE
from fsslib.errors import unknown
from fsslib.paths import atomic_path
from fsslib.pretrain.views import resized_crops

PATCH_METHODS = ("slic", "felzenszwalb")
# settings for 64 x 64 toy scenes (the paper gives none for its images), chosen by patch_object_share among the
# candidates of benchmarks/qgnet_superpixels.py (results/qgnet_superpixels_toy.md): Felzenszwalb's best, 0.51 of
# the sampled patches mostly object; SLIC's best, 0.28 (no setting reaches half: its near-equal segments tile
# the background as finely as the objects). The first extractors used n_segments 16, compactness 10 (0.10)
# and scale 100, min_size 30 (0.44).
TOY_SUPERPIXELS = {
    "slic": {"n_segments": 128, "compactness": 1.0},
    "felzenszwalb": {"scale": 400.0, "sigma": 0.5, "min_size": 10},
}
MAX_SEGMENTS = 64  # segments kept per image (the largest ones)


def superpixels(image: np.ndarray, method: str, settings: dict) -> np.ndarray:
    """(H, W) int32 segment ids 0..S-1 of one (H, W, 3) uint8 image."""
    if method == "slic":
        return slic(image, n_segments=int(settings["n_segments"]), compactness=float(settings["compactness"]),
                    start_label=0, convert2lab=True, enforce_connectivity=True).astype(np.int32)
    if method == "felzenszwalb":
        return felzenszwalb(image, scale=float(settings["scale"]), sigma=float(settings["sigma"]),
                            min_size=int(settings["min_size"])).astype(np.int32)
    raise unknown("patch method", method, PATCH_METHODS)


def segment_purity(segments: np.ndarray, mask: np.ndarray, min_area: int, n_classes: int) -> tuple[float, float, int]:
    """For one image: (share of its segments of at least ``min_area`` pixels (its largest when none is) that are
    at least half object, object pixels in segments at least 90% one class, object pixels), from (H, W) segment
    ids and the (H, W) class-index mask (0 background, 1..n_classes, 255 left out)."""
    labelled = mask != IGNORE
    ids, classes = segments[labelled], mask[labelled].astype(np.int64)
    n_segments = int(segments.max()) + 1
    counts = np.bincount(ids * (n_classes + 1) + classes, minlength=n_segments * (n_classes + 1))
    counts = counts.reshape(n_segments, n_classes + 1)  # (S, 1 + C): pixels of each class in each segment
    size, objects = counts.sum(axis=1), counts[:, 1:].sum(axis=1)
    area = np.bincount(segments.ravel(), minlength=n_segments)
    eligible = area >= min_area
    if not eligible.any():
        eligible = area == area.max()
    half_object = (objects >= 0.5 * size) & (size > 0)
    pure = counts[:, 1:].max(axis=1) >= 0.9 * np.maximum(size, 1)
    return float(half_object[eligible].mean()), float(objects[pure].sum()), int(objects.sum())


def patch_object_share(images: np.ndarray, masks: np.ndarray, method: str, settings: dict, min_area: int,
                       n_classes: int) -> dict[str, float]:
    """How much of the patches of one superpixel setting is object, over (N, H, W, 3) images with their masks.

    ``patch_object_share``: the mean over images of the share of eligible segments (pretraining samples one
    uniformly among them, :func:`sample_segments`) that are at least half object, with its standard error over
    the images (``patch_object_share_se``); ``pure_object_pixels``:
    the share of object pixels that lie in segments at least 90% one class; ``segments_per_image``.
    """
    shares, pure, total, counts = [], 0.0, 0, []
    for image, mask in zip(images, masks):
        segments = superpixels(image, method, settings)
        share, pure_pixels, object_pixels = segment_purity(segments, mask, min_area, n_classes)
        shares.append(share)
        pure += pure_pixels
        total += object_pixels
        counts.append(int(segments.max()) + 1)
    return {"patch_object_share": float(np.mean(shares)),
            "patch_object_share_se": float(np.std(shares, ddof=1) / np.sqrt(len(shares))) if len(shares) > 1 else 0.0,
            "pure_object_pixels": pure / max(total, 1), "segments_per_image": float(np.mean(counts))}


@dataclass
class SuperpixelTable:
    """The segments of N images: ids (N, H, W), boxes (N, S, 4) as (centre x, centre y, width, height)
    fractions, areas (N, S) in pixels (0 = no such segment), S = :data:`MAX_SEGMENTS` at most."""

    segments: np.ndarray  # (N, H, W) int16
    boxes: np.ndarray  # (N, S, 4) float32
    areas: np.ndarray  # (N, S) int32


def segment_table(segments: np.ndarray, max_segments: int = MAX_SEGMENTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segments relabelled so that 0..S-1 are the largest and the others -1, boxes (S, 4), areas (S,)) of one
    image, S = ``max_segments``."""
    height, width = segments.shape
    ids, areas = np.unique(segments, return_counts=True)
    order = np.argsort(-areas, kind="stable")[:max_segments]
    relabel = np.full(int(ids.max()) + 1, -1, dtype=np.int32)
    relabel[ids[order]] = np.arange(len(order))
    segments = relabel[segments]
    rows, cols = np.indices(segments.shape)
    boxes = np.zeros((max_segments, 4), dtype=np.float32)
    kept = np.zeros(max_segments, dtype=np.int32)
    for index in range(len(order)):
        inside = segments == index
        top, bottom = rows[inside].min(), rows[inside].max() + 1
        left, right = cols[inside].min(), cols[inside].max() + 1
        boxes[index] = ((left + right) / 2 / width, (top + bottom) / 2 / height, (right - left) / width,
                        (bottom - top) / height)
        kept[index] = inside.sum()
    return segments.astype(np.int16), boxes, kept


def _image_table(args: tuple[np.ndarray, str, dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image, method, settings = args
    return segment_table(superpixels(image, method, settings))


def compute_table(images: np.ndarray, method: str, settings: dict, workers: int = 2) -> SuperpixelTable:
    """Superpixels of (N, H, W, 3) uint8 images, in ``workers`` processes (1: in this one)."""
    jobs = [(image, method, settings) for image in images]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_image_table, jobs, chunksize=64))
    else:
        results = [_image_table(job) for job in jobs]
    segments, boxes, areas = (np.stack(parts) for parts in zip(*results))
    return SuperpixelTable(segments, boxes, areas)


def superpixel_table(images: np.ndarray, method: str, settings: dict, cache: str | Path | None = None,
                     workers: int = 2) -> SuperpixelTable:
    """:func:`compute_table` through an on-disk cache keyed by the images' bytes, the method and its settings."""
    if cache is None:
        return compute_table(images, method, settings, workers)
    key = hashlib.sha256(images.tobytes() + json.dumps([method, settings], sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache) / f"superpixels_{method}_{key}.npz"
    if path.is_file():
        arrays = np.load(path)
        return SuperpixelTable(arrays["segments"], arrays["boxes"], arrays["areas"])
    table = compute_table(images, method, settings, workers)
    with atomic_path(path) as temporary:
        np.savez(temporary, segments=table.segments, boxes=table.boxes, areas=table.areas)
    return table


def sample_segments(areas: torch.Tensor, min_area: int, generator: torch.Generator) -> torch.Tensor:
    """One segment per image (N,), uniformly among its segments of at least ``min_area`` pixels (its largest
    when none is that large). areas: (N, S)."""
    eligible = areas >= min_area  # (N, S)
    eligible[:, 0] |= ~eligible.any(dim=1)  # segment 0 is the largest
    scores = torch.rand(areas.shape, generator=generator).masked_fill(~eligible, -1.0)
    return scores.argmax(dim=1)


def patch_crops(images: torch.Tensor, segments: torch.Tensor, boxes: torch.Tensor, chosen: torch.Tensor,
                size: int) -> torch.Tensor:
    """The chosen segment of every image as a (B, 3, size, size) image: its bounding box, resized, with the
    pixels outside the segment set to the segment's mean colour.

    images: (B, 3, H, W) in [0, 1]; segments: (B, H, W) ids; boxes: (B, S, 4); chosen: (B,) segment ids.
    """
    rows = torch.arange(len(images))
    inside = (segments == chosen.to(segments.device)[:, None, None]).unsqueeze(1).to(images.dtype)  # (B, 1, H, W)
    mean = (images * inside).sum(dim=(2, 3)) / inside.sum(dim=(2, 3)).clamp(min=1)  # (B, 3)
    filled = images * inside + mean[:, :, None, None] * (1 - inside)
    no_flip = torch.zeros(len(images), dtype=torch.bool)
    return resized_crops(filled, torch.as_tensor(boxes)[rows, chosen], no_flip, size).clamp(0, 1)

