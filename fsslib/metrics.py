"""Few-shot segmentation metrics, exactly as PFENet and HSNet define them.

For every episode the prediction is set to 255 wherever the label is 255, then the
foreground and background intersections and unions are counted.

* mIoU: per class ``c``, ``IoU_c = sum_episodes(I_fg) / sum_episodes(U_fg)`` over the
  episodes of class ``c``; mIoU is the mean of ``IoU_c`` over the fold's classes (not a
  mean of per-episode IoUs).
* FB-IoU: foreground IoU and background IoU, each accumulated over all episodes,
  averaged.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fsslib.data.layout import IGNORE


def intersection_union(prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Counts ``[[I_bg, U_bg], [I_fg, U_fg]]`` of each episode: (..., H, W) -> (..., 2, 2).

    prediction, label: values in {0, 1} (label also 255 = ignore).
    """
    valid = label != IGNORE  # (..., H, W): the prediction is 'set to 255' where the label is
    counts = []
    for value in (0, 1):
        predicted, actual = (prediction == value) & valid, (label == value) & valid
        counts.append(torch.stack([(predicted & actual).sum((-2, -1)), (predicted | actual).sum((-2, -1))], dim=-1))
    return torch.stack(counts, dim=-2).double()


class FewShotMeter:
    """Accumulates episodes and reports mIoU, per-class IoU and FB-IoU."""

    def __init__(self, class_ids: list[int], class_names: dict[int, str] | None = None) -> None:
        self.class_ids = list(class_ids)
        self.class_names = class_names or {c: str(c) for c in class_ids}
        self.per_class = defaultdict(lambda: torch.zeros(2, dtype=torch.float64))  # class -> [I_fg, U_fg]
        self.binary = torch.zeros(2, 2, dtype=torch.float64)  # [[I_bg, U_bg], [I_fg, U_fg]]
        self.episodes = 0

    def update(self, predictions: torch.Tensor, labels: torch.Tensor, class_ids: int | Sequence[int]) -> None:
        """Add episodes at the label's resolution: one ((H, W) maps and an int class id) or a
        batch ((B, H, W) maps and B class ids); the counts are computed where the maps are."""
        if isinstance(class_ids, int):
            predictions, labels, class_ids = predictions[None], labels[None], [class_ids]
        counts = intersection_union(predictions, labels).cpu()  # (B, 2, 2)
        for class_id, episode_counts in zip(class_ids, counts):
            self.per_class[int(class_id)] += episode_counts[1]
        self.binary += counts.sum(dim=0)
        self.episodes += len(class_ids)

    def class_iou(self) -> dict[int, float]:
        """IoU of each fold class that has occurred (a class never seen is left out)."""
        return {c: float(self.per_class[c][0] / self.per_class[c][1].clamp(min=1)) for c in self.class_ids if c in self.per_class}

    @property
    def miou(self) -> float:
        ious = self.class_iou()
        return float(sum(ious.values()) / len(ious)) if ious else 0.0

    @property
    def fbiou(self) -> float:
        return float((self.binary[:, 0] / self.binary[:, 1].clamp(min=1)).mean())

    def summary(self) -> dict:
        """mIoU, FB-IoU (both in %), per-class IoU by name and the episode count."""
        return {
            "miou": 100 * self.miou,
            "fbiou": 100 * self.fbiou,
            "per_class_iou": {self.class_names[c]: 100 * iou for c, iou in self.class_iou().items()},
            "episodes": self.episodes,
        }


def score_at_label_size(meter: FewShotMeter, maps: torch.Tensor, labels: Sequence[torch.Tensor],
                        class_ids: Sequence[int], predict: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Score a batch of (B, K, h, w) maps at each query's original label size, as PFENet/HSNet do.

    The maps are bilinearly upsampled to the label size (one call per distinct size: real
    images differ, the toy world's do not) and ``predict`` turns the upsampled (b, K, H, W)
    maps into (b, H, W) {0, 1} predictions (e.g. the argmax of logits, a prior > 0.5).
    """
    by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_size[tuple(label.shape)].append(index)
    for size, indices in by_size.items():
        stacked = torch.stack([labels[i] for i in indices]).to(maps.device)  # (b, H, W)
        upsampled = F.interpolate(maps[indices].float(), size=size, mode="bilinear", align_corners=False)
        meter.update(predict(upsampled), stacked, [class_ids[i] for i in indices])
