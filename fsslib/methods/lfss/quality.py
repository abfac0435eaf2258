"""Pseudo-mask quality (the analogue of LFSS's Table 3): how well VLMD's masks segment the images.

The pseudo masks of the episode class, before (MaskCLIP, ``initial``) and after the
self-supported refiner (Eqs. 2-5, ``refined``), are upsampled from the feature grid to the
label size (bilinear on the 0/1 mask, aligned corners), thresholded at 0.5 and scored
exactly like a prediction (:class:`fsslib.metrics.FewShotMeter`: per-class summed IoU, mean
over the fold's classes, label 255 ignored): the query's against its original label, the
supports' against their masks. The refiner has no learned weights, so an untrained LFSS
gives the same pseudo masks as a trained one. With ``circle=True`` a trained model's first
circle pass is scored too: the support masks it predicts are what supports the query.
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from fsslib.data.episodes import EpisodeDataset, episode_batches
from fsslib.metrics import FewShotMeter, score_at_label_size
from fsslib.methods.lfss.model import LFSS

MASK_THRESHOLD = 0.5


def threshold(masks: torch.Tensor) -> torch.Tensor:
    """(b, 1, H, W) upsampled 0/1 masks -> (b, H, W) predictions: foreground above :data:`MASK_THRESHOLD`."""
    return (masks[:, 0] > MASK_THRESHOLD).long()


def pseudo_mask_quality(model: LFSS, episodes: EpisodeDataset, batch_size: int = 16, progress: bool = False,
                        circle: bool = False) -> dict[str, float]:
    """mIoU (%) of the pseudo masks on the 1-way ``episodes``.

    Keys: ``initial`` and ``refined`` (the query's), ``support_initial`` and ``support_refined``;
    with ``circle``, ``support_predicted``: the first circle pass's prediction of every support
    (Sec. 3.6), which supports the query in the second pass. ``model`` is an LFSS model
    (``build_method(make_config(method="lfss", ...))``); its options (``pseudo_mask``,
    ``refiner_attention``, ``refiner_level``, ``alpha``) decide the masks. The refined masks use
    the whole episode (Eq. 3 mixes the support and query prototypes).
    """
    model = model.eval()
    names = ("initial", "refined", "support_initial", "support_refined") + (("support_predicted",) if circle else ())
    meters = {name: FewShotMeter(episodes.classes) for name in names}
    batches = episode_batches(episodes, batch_size)
    device = next(model.parameters()).device  # the model's device: a model on a GPU scores there
    for batch in tqdm(batches, total=math.ceil(len(episodes) / batch_size), desc="pseudo masks", disable=not progress,
                      leave=False):
        batch = batch.to(device)
        inputs = batch.inputs().one_way()  # what the model reads; the batch keeps the targets for scoring
        shots = inputs.support_images.shape[1]
        support_labels = list(inputs.support_masks.flatten(0, 1))  # (B*K) x (H, W): the supports' ground truth
        support_classes = inputs.class_ids.repeat_interleave(shots)  # (B*K,)
        with torch.no_grad():
            masks = model.pseudo_masks_of(inputs, model.frozen_levels(inputs))
            support_logits = model.circle(inputs)[0] if circle else None  # (B*K, 2, h, w)
        for name, query_masks in (("initial", masks.initial_query), ("refined", masks.query)):  # (B, h, w) bool
            score_at_label_size(meters[name], query_masks[:, None].float(), batch.query_labels, batch.class_ids, threshold)
        for name, support_masks in (("support_initial", masks.initial_support), ("support_refined", masks.support)):
            score_at_label_size(meters[name], support_masks.flatten(0, 1)[:, None].float(), support_labels,
                                support_classes, threshold)
        if support_logits is not None:
            score_at_label_size(meters["support_predicted"], support_logits, support_labels, support_classes,
                                lambda up: up.argmax(dim=1))
    return {name: meter.summary()["miou"] for name, meter in meters.items()}
