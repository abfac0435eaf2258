"""Sliding-window inference: dense scores of a large image as the average of overlapping windows.

mmsegmentation's ``EncoderDecoder.slide_inference`` (``test_cfg=dict(mode="slide", crop_size, stride)``),
which CLIP-DINOiser's evaluation runs with 448 x 448 windows and stride 224 on images whose short side
was resized to 448 (wysoczanska/clip_dinoiser, ``segmentation/configs/_base_/datasets/pascal_voc12.py``
and ``segmentation/evaluation/clip_dinoiser_eval.py``):

* along each axis of length L, ``max(L - window + stride - 1, 0) // stride + 1`` windows start every
  ``stride`` pixels, the last one moved back so that it ends at the border (it then overlaps its
  neighbour more than the others do); an axis shorter than the window gets one window of its length;
* each window's scores, at the window's size, are added into the image's frame, and every pixel is
  divided by the number of windows that cover it. The sum is kept in float32 whatever the scores' dtype
  (bfloat16 under autocast), as mmseg's ``preds`` buffer is.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from fsslib.errors import unknown


def check_window(window: int, stride: int) -> None:
    """Refuse a window or stride below one pixel, naming the fix."""
    if window < 1 or stride < 1:
        raise unknown("sliding window / stride", f"{window} / {stride}", ["positive integers, e.g. 448 / 224"])


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis of ``length`` pixels (mmseg's grid)."""
    check_window(window, stride)
    count = max(length - window + stride - 1, 0) // stride + 1
    return [max(min(index * stride + window, length) - window, 0) for index in range(count)]


def slide(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """(B, C, H, W) average of ``predict`` over the windows of ``images`` (B, 3, H, W).

    ``predict`` maps a crop (B, 3, h, w) to scores (B, C, h, w) at the crop's size; every pixel
    gets the mean of the scores of the windows that cover it, summed and returned in float32.
    """
    height, width = images.shape[-2:]
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, height, width, device=images.device)  # (1, 1, H, W): windows covering each pixel
    for top in window_starts(height, window, stride):
        for left in window_starts(width, window, stride):
            bottom, right = min(top + window, height), min(left + window, width)
            scores = predict(images[:, :, top:bottom, left:right])  # (B, C, h, w)
            if total is None:
                total = torch.zeros(*scores.shape[:2], height, width, device=scores.device)
            total[:, :, top:bottom, left:right] += scores.float()
            count[:, :, top:bottom, left:right] += 1
    return total / count
