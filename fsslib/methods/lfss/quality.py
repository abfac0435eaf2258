"""Pseudo-mask quality (the analogue of LFSS's Table 3): how well VLMD's masks segment the query.

The query's pseudo mask of the episode class, before (MaskCLIP, ``initial``) and after the
self-supported refiner (Eqs. 2-5, ``refined``), is upsampled from the feature grid to the
query's original label size (bilinear on the 0/1 mask, aligned corners), thresholded at 0.5
and scored exactly like a prediction (:class:`fsslib.metrics.FewShotMeter`: per-class summed
IoU, mean over the fold's classes, label 255 ignored). The refiner has no learned weights,
so an untrained LFSS gives the same masks as a trained one; nothing here trains.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from fsslib.data.episodes import EpisodeDataset, collate_episodes
from fsslib.metrics import FewShotMeter, score_at_label_size
from fsslib.methods.lfss.model import LFSS

MASK_THRESHOLD = 0.5


def pseudo_mask_quality(model: LFSS, episodes: EpisodeDataset, batch_size: int = 16,
                        progress: bool = False) -> dict[str, float]:
    """mIoU (%) of the query's ``initial`` and ``refined`` pseudo masks on the 1-way ``episodes``.

    ``model`` is an LFSS model (``build_method(make_config(method="lfss", ...))``); its options
    (``pseudo_mask``, ``refiner_attention``, ``refiner_level``, ``alpha``) decide the masks. The
    refined query mask uses the episode's supports (Eq. 3 mixes their prototype in).
    """
    model = model.eval()
    meters = {name: FewShotMeter(episodes.classes) for name in ("initial", "refined")}
    starts = range(0, len(episodes), batch_size)
    for start in tqdm(starts, desc="pseudo masks", disable=not progress, leave=False):
        batch = collate_episodes([episodes[i] for i in range(start, min(start + batch_size, len(episodes)))])
        one_way = batch.one_way()
        with torch.no_grad():
            masks = model.pseudo_masks_of(one_way, model.frozen_levels(one_way))
        for name, query_masks in (("initial", masks.initial_query), ("refined", masks.query)):  # (B, h, w) bool
            score_at_label_size(meters[name], query_masks[:, None].float(), batch.query_labels, batch.class_ids,
                                lambda up: (up[:, 0] > MASK_THRESHOLD).long())
    return {name: meter.summary()["miou"] for name, meter in meters.items()}
