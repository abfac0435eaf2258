"""Few-shot segmentation metrics, exactly as PFENet and HSNet define them.

For every episode the prediction is set to 255 wherever the label is 255, then the
intersections and unions are counted. Predictions and labels hold 0 = background and
n = way n (1..N; N = 1 for the usual 1-way episodes).

* mIoU: per class ``c``, ``IoU_c = sum_episodes(I_c) / sum_episodes(U_c)`` over the
  episodes in which ``c`` is one of the ways (I and U of the pixels predicted / labelled as
  that way); mIoU is the mean of ``IoU_c`` over the fold's classes (not a mean of
  per-episode IoUs).
* FB-IoU: foreground (any way) IoU and background IoU, each accumulated over all episodes,
  averaged.

Scoring at the label's resolution: logits are upsampled bilinearly with aligned corners, as
PFENet's ``test.py`` and HSNet's ``Evaluator`` do.

The plateau rule of ``docs/protocol.md`` (:func:`plateau_verdicts`) lives here too, below the tables and the
pretraining loops that both judge validation curves by it.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from fsslib.data.layout import IGNORE
from fsslib.errors import EpisodeShapeError, unknown


def intersection_union(prediction: torch.Tensor, label: torch.Tensor, ways: int = 1) -> torch.Tensor:
    """Counts ``[I, U]`` of every value 0..N of each episode: (..., H, W) -> (..., 1 + N, 2).

    Row 0 is the background, row n is way n; label 255 is ignored (the prediction is 'set to
    255' there).
    """
    valid = (label != IGNORE).unsqueeze(-3)  # (..., 1, H, W)
    values = torch.arange(ways + 1, device=label.device).view(-1, 1, 1)  # (1+N, 1, 1)
    predicted = (prediction.unsqueeze(-3) == values) & valid  # (..., 1+N, H, W)
    actual = (label.unsqueeze(-3) == values) & valid  # (..., 1+N, H, W)
    return torch.stack([(predicted & actual).sum((-2, -1)), (predicted | actual).sum((-2, -1))], dim=-1).double()


def check_scorable(predictions: torch.Tensor, labels: torch.Tensor, ways: int) -> None:
    """Raise :class:`EpisodeShapeError` unless predictions hold 0..N and labels 0..N or 255, at the same size."""
    if predictions.shape != labels.shape:
        raise EpisodeShapeError(f"Predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape.",
                                "upsample the predictions to the label size before scoring (score_at_label_size does).")
    bad_prediction = (predictions < 0) | (predictions > ways)
    bad_label = ((labels < 0) | (labels > ways)) & (labels != IGNORE)
    if bad_prediction.any() or bad_label.any():
        found = torch.unique(torch.cat([predictions[bad_prediction], labels[bad_label]])).tolist()[:10]
        raise EpisodeShapeError(
            f"Values {found} cannot be scored in {ways}-way episodes (predictions: 0..{ways}; labels: 0..{ways} or 255).",
            "pass predictions with one value per way (the argmax of (B, 1+N, H, W) logits) and the episodes' own "
            "labels; for N-way episodes build the meter updates with class ids of shape (B, N).")


class FewShotMeter:
    """Accumulates N-way episodes and reports mIoU, per-class IoU and FB-IoU."""

    def __init__(self, class_ids: list[int], class_names: dict[int, str] | None = None, keep_episodes: bool = False) -> None:
        """``keep_episodes``: also keep every episode's counts, e.g. to score strata of episodes (:meth:`kept_episodes`)."""
        self.kept: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if keep_episodes else None
        self.class_ids = list(class_ids)
        self.class_names = class_names or {c: str(c) for c in class_ids}
        self._row = {c: row for row, c in enumerate(self.class_ids)}
        self.per_class = torch.zeros(len(self.class_ids), 2, dtype=torch.float64)  # [I_c, U_c] summed over episodes
        self.seen = torch.zeros(len(self.class_ids), dtype=torch.bool)
        self.binary = torch.zeros(2, 2, dtype=torch.float64)  # [[I_bg, U_bg], [I_fg, U_fg]]
        self.episodes = 0

    def update(self, predictions: torch.Tensor, labels: torch.Tensor, class_ids: int | Sequence[int] | torch.Tensor) -> None:
        """Add episodes at the label's resolution: (B, H, W) predictions and labels with values 0..N
        (labels also 255) and the (B, N) class ids of their ways; 1-way batches may pass B class ids,
        a single (H, W) episode one int."""
        if isinstance(class_ids, int):
            predictions, labels, class_ids = predictions[None], labels[None], [class_ids]
        ids = torch.as_tensor(class_ids, dtype=torch.long).cpu()
        ids = ids.view(-1, 1) if ids.dim() == 1 else ids  # (B, N)
        if ids.shape[0] != labels.shape[0]:
            raise EpisodeShapeError(f"{ids.shape[0]} rows of class ids for {labels.shape[0]} episodes.",
                                    "pass one row of N class ids per episode.")
        unknown_ids = sorted({int(c) for c in ids.flatten().tolist()} - set(self._row))
        if unknown_ids:
            raise EpisodeShapeError(f"Class ids {unknown_ids} are not among this meter's classes {self.class_ids}.",
                                    "score each fold with a meter built from that fold's classes.")
        ways = ids.shape[1]
        check_scorable(predictions, labels, ways)
        counts = intersection_union(predictions, labels, ways).cpu()  # (B, 1+N, 2)
        if self.kept is not None:
            self.kept.append((counts, ids))
        rows = torch.tensor([self._row[int(c)] for c in ids.flatten().tolist()])  # (B*N,)
        self.per_class.index_add_(0, rows, counts[:, 1:].flatten(0, 1))
        self.seen[rows] = True
        background = counts[:, 0].sum(0)  # (2,)
        valid = labels != IGNORE
        foreground_i = ((predictions >= 1) & (labels >= 1) & valid).sum()
        foreground_u = (((predictions >= 1) | (labels >= 1)) & valid).sum()
        self.binary += torch.stack([background, torch.tensor([float(foreground_i), float(foreground_u)], dtype=torch.float64)])
        self.episodes += ids.shape[0]

    def kept_episodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every episode's counts (E, 1+N, 2) (``[I, U]`` of the background and each way, as
        :func:`intersection_union`) and class ids (E, N), in the order they were added."""
        if self.kept is None:
            raise EpisodeShapeError("This meter keeps no episodes.", "build it with FewShotMeter(..., keep_episodes=True).")
        if not self.kept:
            return torch.zeros(0, 2, 2, dtype=torch.float64), torch.zeros(0, 1, dtype=torch.long)
        return torch.cat([c for c, _ in self.kept]), torch.cat([i for _, i in self.kept])

    def class_iou(self) -> dict[int, float]:
        """IoU of each fold class that has occurred (a class never seen is left out)."""
        return {c: float(self.per_class[row, 0] / self.per_class[row, 1].clamp(min=1))
                for c, row in self._row.items() if self.seen[row]}

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


SCORE_RESIZES = ("aligned", "probabilities")  # Config.score_resize: how maps reach the label size (below)


def score_at_label_size(meter: FewShotMeter, maps: torch.Tensor, labels: Sequence[torch.Tensor],
                        class_ids: torch.Tensor | Sequence, predict: Callable[[torch.Tensor], torch.Tensor],
                        resize: str = "aligned") -> None:
    """Score a batch of (B, C, h, w) maps at each query's original label size, as PFENet/HSNet do.

    The maps are resized bilinearly to the label size (one call per distinct size: real images differ, the toy
    world's do not) and ``predict`` turns the resized (b, C, H, W) maps into (b, H, W) predictions 0..N (e.g. the
    argmax of (b, 1+N, H, W) logits, a prior > 0.5). ``class_ids``: (B, N), or (B,) for 1-way episodes.
    ``resize``: ``"aligned"`` (the protocol, PFENet's and HSNet's): the maps themselves, with aligned corners;
    ``"probabilities"`` (CLIP-DINOiser's official evaluation, mmseg's resize): ``exp`` of the maps, log-probabilities
    for CLIP-DINOiser, without aligned corners.
    """
    if resize not in SCORE_RESIZES:
        raise unknown("score resize", resize, SCORE_RESIZES)
    ids = torch.as_tensor(class_ids, dtype=torch.long)
    by_size: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_size[tuple(label.shape)].append(index)
    for size, indices in by_size.items():
        stacked = torch.stack([labels[i] for i in indices]).to(maps.device)  # (b, H, W)
        chosen = maps[indices].float()  # (b, C, h, w)
        if resize == "aligned":
            resized = F.interpolate(chosen, size=size, mode="bilinear", align_corners=True)
        else:
            resized = F.interpolate(chosen.exp(), size=size, mode="bilinear", align_corners=False)
        meter.update(predict(resized), stacked, ids[indices])


REGION_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class RegionMapMeter:
    """What a region map in [0, 1] covers (QGNet Table VII and Sec. IV-C), accumulated over episodes.

    * Eq. 16: the object region at threshold alpha is ``R = [V > alpha]``; recall ``|R n R_GT| / |R_GT|``
      (pixels summed over all episodes), R_GT the labelled object pixels (any way). Recall alone rises as the
      map spreads, so the share of background pixels in R is counted beside it.
    * Sec. IV-C ("opposite region maps"): the mean map value on object pixels and on background pixels.

    Pixels labelled 255 are left out. Maps are scored at the label's resolution (upsampled as
    :func:`score_at_label_size` does).
    """

    def __init__(self, thresholds: Sequence[float] = REGION_THRESHOLDS) -> None:
        self.thresholds = torch.tensor(thresholds, dtype=torch.float64)
        self.covered = torch.zeros(2, len(thresholds), dtype=torch.float64)  # [object, background] pixels in R
        self.pixels = torch.zeros(2, dtype=torch.float64)  # object, background pixels
        self.value_sums = torch.zeros(2, dtype=torch.float64)  # summed map values on object, background pixels

    def update(self, maps: torch.Tensor, labels: torch.Tensor) -> None:
        """Add (B, H, W) maps in [0, 1] and their (B, H, W) labels (0 background, 1..N objects, 255 ignored)."""
        if maps.shape != labels.shape:
            raise EpisodeShapeError(f"Region maps {tuple(maps.shape)} and labels {tuple(labels.shape)} differ in shape.",
                                    "upsample the maps to the label size first (bilinear, aligned corners).")
        maps = maps.detach().double().cpu()
        labels = labels.cpu()
        regions = [(labels != 0) & (labels != IGNORE), labels == 0]  # object, background pixels
        for row, region in enumerate(regions):
            values = maps[region]  # (P,)
            self.covered[row] += (values[:, None] > self.thresholds).sum(dim=0)
            self.pixels[row] += values.numel()
            self.value_sums[row] += values.sum()

    def summary(self) -> dict:
        """``recall`` and ``background_share`` (in %) per threshold, ``mean_on_objects`` and ``mean_on_background``;
        NaN for a kind of pixel (object or background) that no update contained."""
        pixels = torch.where(self.pixels > 0, self.pixels, torch.nan)  # (2,): nothing scored gives NaN, not 0
        shares = 100 * self.covered / pixels[:, None]
        means = self.value_sums / pixels
        return {"thresholds": self.thresholds.tolist(), "recall": shares[0].tolist(),
                "background_share": shares[1].tolist(), "mean_on_objects": float(means[0]),
                "mean_on_background": float(means[1])}


def episodes_miou(counts: torch.Tensor, class_ids: torch.Tensor, n_classes: int) -> torch.Tensor:
    """mIoU (in [0, 1]) of sets of episodes at once, as :class:`FewShotMeter` computes it.

    counts: (..., E, 2) ``[I, U]`` of each 1-way episode's object; class_ids: (..., E) its class as an index
    0..n_classes-1. Per class the intersections and unions are summed over its episodes, and the IoUs of the
    classes that occur are averaged. Returns (...,).
    """
    one_hot = F.one_hot(class_ids, n_classes).to(counts.dtype)  # (..., E, C)
    per_class = torch.einsum("...ec,...ek->...ck", one_hot, counts)  # (..., C, 2): [I_c, U_c]
    seen = one_hot.sum(-2) > 0  # (..., C)
    iou = per_class[..., 0] / per_class[..., 1].clamp(min=1)
    return (iou * seen).sum(-1) / seen.sum(-1).clamp(min=1)


def resampled_miou(counts: torch.Tensor, class_ids: torch.Tensor, n_classes: int, resamples: int,
                   generator: torch.Generator) -> torch.Tensor:
    """(resamples,) mIoUs of the 1-way episodes (counts (E, 2), class_ids (E,) as in :func:`episodes_miou`)
    resampled with replacement: the bootstrap distribution of their mIoU."""
    picks = torch.randint(len(class_ids), (resamples, len(class_ids)), generator=generator)  # (R, E)
    return episodes_miou(counts[picks], class_ids[picks], n_classes)


def percentile_interval(resampled: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of a bootstrap distribution (R,)."""
    tail = (1 - level) / 2
    low, high = torch.quantile(resampled, torch.tensor([tail, 1 - tail], dtype=resampled.dtype)).tolist()
    return low, high


# ---- the plateau rule of docs/protocol.md: is a run's validation curve at its plateau?

PLATEAU_GAIN = 1.0  # points of validation mIoU over the last quarter of training below which a run is flat


NOISE_MULTIPLE = 2.0  # a gain under this many of its standard errors is within the curve's noise


def plateau_gains(curves: dict[str, list[dict]]) -> dict[str, float]:
    """Each run's validation mIoU gained in the last quarter of its training: the mean over the last
    quarter's epochs minus the mean over the quarter before (means, so that one noisy validation
    does not decide)."""
    gains = {}
    for label, history in curves.items():
        values = [h["val_miou"] for h in history if h.get("val_miou") is not None]
        quarter = len(values) // 4
        if quarter:
            last, before = values[-quarter:], values[-2 * quarter:-quarter]
            gains[label] = sum(last) / quarter - sum(before) / quarter
    return gains


def gain_standard_error(history: list[dict]) -> float | None:
    """The standard error of a run's last-quarter gain from its curve's own epoch-to-epoch noise: the noise
    variance of one validation is half the variance of the curve's first differences over its last half
    (differences, so that a slow rise is not counted as noise), and the gain is a difference of two means of
    ``quarter`` validations. The validation episodes are the same every epoch, so this is the model's
    fluctuation; what the episode sample adds to a gain is measured apart (``benchmarks/validation_noise.py``)."""
    values = [h["val_miou"] for h in history if h.get("val_miou") is not None]
    quarter = len(values) // 4
    if quarter < 2:
        return None
    half = values[-2 * quarter:]
    steps = [b - a for a, b in zip(half, half[1:])]
    mean = sum(steps) / len(steps)
    noise_variance = sum((d - mean) ** 2 for d in steps) / (len(steps) - 1) / 2
    return (noise_variance * 2 / quarter) ** 0.5


def plateau_verdicts(curves: dict[str, list[dict]]) -> dict[str, tuple[float, float | None, str]]:
    """Per run: (last-quarter gain, its standard error, verdict). ``flat``: it gains under
    :data:`PLATEAU_GAIN` point; ``within noise``: under :data:`NOISE_MULTIPLE` standard errors of the curve's
    own noise (:func:`gain_standard_error`); ``rising``: neither, so its budget needs a run at twice the
    budget to show that the test mIoU no longer moves (each such control is named in the grid's notes)."""
    verdicts = {}
    for label, gain in plateau_gains(curves).items():
        error = gain_standard_error(curves[label])
        verdicts[label] = (gain, error, plateau_verdict(gain, error))
    return verdicts


def plateau_verdict(gain: float, error: float | None) -> str:
    """The plateau rule for one run's last-quarter ``gain`` and its standard ``error`` (:func:`plateau_verdicts`)."""
    return ("flat" if gain < PLATEAU_GAIN else
            "within noise" if error is not None and gain < NOISE_MULTIPLE * error else "rising")


def verdict_decimals(gain: float, error: float | None, most: int = 3) -> int:
    """The fewest decimals (one at least, ``most`` at most) at which a gain and its error, as printed, give the
    verdict the unrounded values give: a gain of 0.96 is flat and 1.04 rising, though both print as +1.0."""
    verdict = plateau_verdict(gain, error)
    for decimals in range(1, most):
        shown = float(f"{gain:.{decimals}f}"), None if error is None else float(f"{error:.{decimals}f}")
        if plateau_verdict(*shown) == verdict:
            return decimals
    return most
