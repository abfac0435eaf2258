"""The base learner's data: whole images labelled with a fold's base classes, BAM's ``util/dataset.py`` ``BaseData``.

* Labels (:func:`base_labels`): base class ``c`` becomes its 1-based index among the fold's base classes, every
  other class (the novel ones) background 0, ignore stays 255. The official ``BaseData`` does this.
* Images (:func:`training_names`): ``novel_rule="pfenet"`` keeps every image of the training split, an image of
  novel objects only then being all background (the official ``BaseData`` reads the whole training list);
  ``"bam"`` drops every image holding a novel class (the rule of BAM's meta-training, a control here).
* Augmentation (:func:`random_crop`): the official stage-1 transform -- random scale, rotation (half the time),
  Gaussian blur (half the time), horizontal flip (half the time), random crop padded with the mean colour and
  label 255 -- as one affine warp per image (the blur is applied to the crop).
* Evaluation images (:class:`HeldOutImages`): the longer side resized to the crop size and padded to a square
  (:func:`~fsslib.data.episodes.resize_pad`), scored at that size.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fsslib.data.episodes import IMAGENET_MEAN, NOVEL_RULES, Source, gaussian_blur, resize_pad
from fsslib.data.layout import IGNORE
from fsslib.errors import DatasetNotFoundError, unknown

BLUR_KERNEL, BLUR_SIGMA = 5, 1.1  # cv2.GaussianBlur(image, (5, 5), 0): sigma 0.3 * ((5 - 1) / 2 - 1) + 0.8


def base_labels(label: np.ndarray, base_classes: Sequence[int]) -> np.ndarray:
    """(H, W) class ids -> (H, W) base-class labels: ``base_classes[i]`` -> i + 1, other classes 0, 255 kept."""
    lookup = np.zeros(256, dtype=np.uint8)
    lookup[IGNORE] = IGNORE
    lookup[np.asarray(base_classes)] = np.arange(1, len(base_classes) + 1)
    return lookup[label]


def training_names(source: Source, novel_classes: Sequence[int], novel_rule: str) -> list[str]:
    """The training images of ``source`` under ``novel_rule`` (module docstring), sorted."""
    if novel_rule not in NOVEL_RULES:
        raise unknown("novel-class rule", novel_rule, NOVEL_RULES)
    if novel_rule == "pfenet":
        return list(source.names)
    novel = set(novel_classes)
    return [name for name in source.names if not novel & set(source.presence.get(name, {}))]


def _affine(rows: list[list[float]]) -> np.ndarray:
    return np.array([*rows, [0.0, 0.0, 1.0]])


def random_crop(image: torch.Tensor, label: torch.Tensor, crop: int, scale_range: tuple[float, float],
                max_angle: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (crop, crop) view of an image (3, H, W) in [0, 1] and its label (H, W): scale in ``scale_range``,
    rotation up to ``max_angle`` degrees half the time, horizontal flip half the time, a crop at a random place (a
    scaled image smaller than the crop is padded on both sides with the mean colour / 255), Gaussian blur half the
    time. Points map back by one affine transform, composed below in pixel coordinates (corners at 0 and size)."""
    height, width = label.shape
    scale = rng.uniform(*scale_range)
    angle = math.radians(rng.uniform(-max_angle, max_angle)) if rng.random() < 0.5 else 0.0
    blur, flip = rng.random() < 0.5, rng.random() < 0.5
    scaled_h, scaled_w = height * scale, width * scale
    top = rng.uniform(0, max(scaled_h - crop, 0)) - max(crop - scaled_h, 0) / 2  # the crop's corner in the scaled image
    left = rng.uniform(0, max(scaled_w - crop, 0)) - max(crop - scaled_w, 0) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    centre_x, centre_y = scaled_w / 2, scaled_h / 2
    from_grid = _affine([[crop / 2, 0, crop / 2], [0, crop / 2, crop / 2]])  # crop's [-1, 1] grid -> its pixels
    shift = _affine([[1, 0, left], [0, 1, top]])  # -> the scaled image's pixels
    mirror = _affine([[-1, 0, scaled_w], [0, 1, 0]]) if flip else np.eye(3)
    turn = (_affine([[1, 0, centre_x], [0, 1, centre_y]]) @ _affine([[cos, -sin, 0], [sin, cos, 0]])
            @ _affine([[1, 0, -centre_x], [0, 1, -centre_y]]))
    unscale = _affine([[1 / scale, 0, 0], [0, 1 / scale, 0]])
    to_grid = _affine([[2 / width, 0, -1], [0, 2 / height, -1]])  # image pixels -> its [-1, 1] grid
    theta = torch.from_numpy(to_grid @ unscale @ turn @ mirror @ shift @ from_grid)[:2].float().unsqueeze(0)
    grid = F.affine_grid(theta, [1, 3, crop, crop], align_corners=False)  # (1, crop, crop, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    view = F.grid_sample(image[None] - mean, grid, mode="bilinear", align_corners=False)[0] + mean[0]  # (3, c, c)
    # nearest sampling of (label + 1), so that positions outside the image (0) become the ignore label
    shifted = F.grid_sample(label[None, None].float() + 1, grid, mode="nearest", align_corners=False)[0, 0]
    view_label = torch.where(shifted == 0, torch.full_like(shifted, IGNORE), shifted - 1).long()  # (c, c)
    if blur:
        view = gaussian_blur(view[None], torch.tensor([BLUR_SIGMA]), radius=BLUR_KERNEL // 2)[0]
    return view.clamp(0, 1), view_label


def _tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) uint8 and (H, W) uint8 -> (3, H, W) float in [0, 1] and (H, W) long."""
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255), torch.from_numpy(label.astype(np.int64))


class BaseTrainingImages(Dataset):
    """Augmented training views (3, crop, crop) with their base-class labels (crop, crop); item ``index`` of epoch
    ``epoch`` is a pure function of (seed, epoch, index), the images shuffled per epoch."""

    def __init__(self, source: Source, names: list[str], base_classes: Sequence[int], crop: int,
                 scale_range: tuple[float, float], max_angle: float, seed: int) -> None:
        if not names:
            raise DatasetNotFoundError(f"No training image for the base learner in {source.root}.",
                                       "check that the dataset was prepared completely, or use novel_rule='pfenet'.")
        self.source, self.names, self.base_classes = source, names, list(base_classes)
        self.crop, self.scale_range, self.max_angle, self.seed = crop, scale_range, max_angle, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order = np.random.default_rng([self.seed, epoch]).permutation(len(self.names))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.source.load(self.names[self.order[index]])
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return random_crop(*_tensors(image, base_labels(label, self.base_classes)), self.crop, self.scale_range,
                           self.max_angle, rng)


class HeldOutImages(Dataset):
    """Evaluation images (3, size, size) with their base-class labels (size, size): every image of ``source``
    (the first ``limit``), the longer side resized to ``size`` and padded (label 255)."""

    def __init__(self, source: Source, base_classes: Sequence[int], size: int, limit: int | None = None) -> None:
        self.source, self.base_classes, self.size = source, list(base_classes), size
        self.names = source.names[:limit] if limit else list(source.names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.source.load(self.names[index])
        return resize_pad(*_tensors(image, base_labels(label, self.base_classes)), self.size)
