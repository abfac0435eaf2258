"""Random views for self-supervised pretraining, batched: MoCo v2's aug-plus and DINO's multi-crop.

Every image of a (B, 3, H, W) batch in [0, 1] gets its own random parameters; the steps run on
the whole batch at once: the crops (with the flip folded in) as one ``grid_sample`` of
per-image affine grids, the colour jitter as per-image factors (brightness, contrast,
saturation; hue as a rotation of the colours about the grey axis, the smooth counterpart of
HSV's hue shift), grayscale by a per-image mask, the blur as one grouped convolution with a
per-image Gaussian kernel, solarisation by a per-image mask. The order of the jitter's four
parts is fixed (torchvision shuffles it per image). Blur sigmas are given for 224-pixel images
and scaled to the views' size (0.1-2 px at 224 is 0.03-0.57 px at 64).

* ``AUG_PLUS`` -- facebookresearch/moco ``main_moco.py --aug-plus``: ``RandomResizedCrop(224,
  scale=(0.2, 1.0))``, ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with p = 0.8, ``RandomGrayscale(p=0.2)``,
  ``GaussianBlur(sigma in [0.1, 2.0])`` with p = 0.5, horizontal flip with p = 0.5 (QGNet's prior extractor).
* ``DINO_GLOBAL_VIEWS`` / ``DINO_LOCAL_VIEW`` -- facebookresearch/dino ``main_dino.py``
  ``DataAugmentationDINO``: two global crops (scale 0.4-1) with flip, ``ColorJitter(0.4, 0.4, 0.2, 0.1)``
  with p = 0.8 and grayscale p = 0.2; the first always blurred, the second blurred with p = 0.1 and
  solarised with p = 0.2; local crops (scale 0.05-0.4) blurred with p = 0.5 (the toy DINO).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsslib.data.episodes import gaussian_blur

BLUR_IMAGE_SIZE = 224  # the size the blur sigmas are given for (MoCo, DINO)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale


@dataclass(frozen=True)
class ViewAugmentation:
    """The settings of one kind of random view (defaults: MoCo v2's aug-plus)."""

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # at 224 pixels
    blur_probability: float = 0.5
    flip_probability: float = 0.5
    solarize_probability: float = 0.0


AUG_PLUS = ViewAugmentation()
DINO_GLOBAL_VIEWS = (
    ViewAugmentation(crop_scale=(0.4, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_probability=1.0),
    ViewAugmentation(crop_scale=(0.4, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_probability=0.1, solarize_probability=0.2),
)
DINO_LOCAL_VIEW = ViewAugmentation(crop_scale=(0.05, 0.4), jitter=(0.4, 0.4, 0.2, 0.1), blur_probability=0.5)
SOLARIZE_THRESHOLD = 0.5  # torchvision's Solarize(128) on 8-bit images


def _uniform(low: float, high: float, count: int, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def _coins(probability: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count,) bool, each True with ``probability``."""
    return torch.rand(count, generator=generator) < probability


def crop_boxes(count: int, scale: tuple[float, float], ratio: tuple[float, float],
               generator: torch.Generator) -> torch.Tensor:
    """Random-resized-crop boxes (count, 4) as (centre x, centre y, width, height) fractions of the image.

    Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``; width and height
    are clipped to the image (torchvision retries instead) and the centre placed so the box fits.
    """
    area = _uniform(*scale, count, generator)
    aspect = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), count, generator))
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = width / 2 + (1 - width) * torch.rand(count, generator=generator)
    centre_y = height / 2 + (1 - height) * torch.rand(count, generator=generator)
    return torch.stack([centre_x, centre_y, width, height], dim=1)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Crop every image (B, 3, H, W) to its box (B, 4) (fractions, :func:`crop_boxes`), flip where ``flips``
    (B,) bool, resize to (size, size) bilinearly: one ``grid_sample``. Returns (B, 3, size, size)."""
    centre_x, centre_y, width, height = boxes.unbind(dim=1)
    centre_x, centre_y = 2 * centre_x - 1, 2 * centre_y - 1  # grid coordinates in [-1, 1]; the box spans centre +- size
    theta = torch.zeros(len(images), 2, 3)
    theta[:, 0, 0] = width * torch.where(flips, -1.0, 1.0)
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta.to(images), [len(images), 3, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    return torch.einsum("bchw,c->bhw", images, images.new_tensor(GRAY_WEIGHTS)).unsqueeze(1)


def rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Shift the hue of every image by ``turns`` (B,) of a full turn: rotate its colours about the grey axis.

    Rodrigues' rotation about (1, 1, 1) / sqrt(3); a third of a turn sends red to green, as a hue
    shift of 1/3 does, and greys stay put. (HSV's hue shift, torchvision's, is piecewise linear
    in the angle; this is its smooth counterpart.)
    """
    axis = images.new_full((3,), 3**-0.5)
    cross = images.new_tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    angle = 2 * math.pi * turns.to(images)[:, None, None]
    matrix = (torch.cos(angle) * torch.eye(3, dtype=images.dtype, device=images.device) + torch.sin(angle) * cross
              + (1 - torch.cos(angle)) * torch.outer(axis, axis))  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, images)


def colour_jitter(images: torch.Tensor, strengths: tuple[float, float, float, float], apply: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """torchvision's ColorJitter(b, c, s, h) on the images where ``apply`` (B,) bool, each with its own factors."""
    count = len(images)
    brightness, contrast, saturation, hue = strengths
    factors = [_uniform(1 - s, 1 + s, count, generator).to(images)[:, None, None, None] for s in (brightness, contrast, saturation)]
    jittered = (images * factors[0]).clamp(0, 1)
    mean_luma = grayscale(jittered).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    jittered = (mean_luma + factors[1] * (jittered - mean_luma)).clamp(0, 1)
    luma = grayscale(jittered)
    jittered = (luma + factors[2] * (jittered - luma)).clamp(0, 1)
    jittered = rotate_hue(jittered, _uniform(-hue, hue, count, generator)).clamp(0, 1)
    return torch.where(apply[:, None, None, None].to(images.device), jittered, images)


def solarize(images: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Invert the values at or above 0.5 of the images where ``apply`` (B,) bool (DINO's ``Solarization``)."""
    solarized = torch.where(images >= SOLARIZE_THRESHOLD, 1 - images, images)
    return torch.where(apply.to(images.device)[:, None, None, None], solarized, images)


def random_views(images: torch.Tensor, size: int, generator: torch.Generator,
                 settings: ViewAugmentation = AUG_PLUS) -> torch.Tensor:
    """One random view of every image: (B, 3, H, W) in [0, 1] -> (B, 3, size, size): :func:`random_crops`, then
    :func:`random_colours` (the draws in that order)."""
    return random_colours(random_crops(images, size, generator, settings), generator, settings)


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator,
                 settings: ViewAugmentation = AUG_PLUS) -> torch.Tensor:
    """The geometric part of a view: a random resized crop of every image, flipped with the settings'
    probability. (B, 3, H, W) -> (B, 3, size, size)."""
    boxes = crop_boxes(len(images), settings.crop_scale, settings.crop_ratio, generator)
    return resized_crops(images, boxes, _coins(settings.flip_probability, len(images), generator), size)


def random_colours(views: torch.Tensor, generator: torch.Generator,
                   settings: ViewAugmentation = AUG_PLUS) -> torch.Tensor:
    """The photometric part of a view, per image: colour jitter, grayscale, blur (and solarisation).
    (B, 3, size, size) in [0, 1] -> the same shape."""
    count, size = len(views), views.shape[-1]
    views = colour_jitter(views, settings.jitter, _coins(settings.jitter_probability, count, generator), generator)
    gray = _coins(settings.grayscale_probability, count, generator).to(views.device)[:, None, None, None]
    views = torch.where(gray, grayscale(views).expand_as(views), views)
    sigmas = _uniform(*settings.blur_sigma, count, generator) * size / BLUR_IMAGE_SIZE
    blurred = _coins(settings.blur_probability, count, generator)
    views = torch.where(blurred.to(views.device)[:, None, None, None], gaussian_blur(views, sigmas.to(views.device)), views)
    return solarize(views, _coins(settings.solarize_probability, count, generator)) if settings.solarize_probability else views
