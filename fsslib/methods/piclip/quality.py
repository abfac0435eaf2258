"""Prior quality: how well each training-free prior alone segments the query.

Each prior (PFENet's, VVP per block, VTP, refined VTP, and the official code's label-reading
VTP) is upsampled to the query's original label size, thresholded at 0.5 and scored exactly
like a prediction (:class:`fsslib.metrics.FewShotMeter`: per-class summed IoU, mean over
classes, label 255 ignored). No training is involved; the decoder is unused.
"""
from __future__ import annotations

import torch

from fsslib.blocks.priors import MaskedSupportPrior
from fsslib.data.episodes import EpisodeDataset, OneWayBatch, collate_episodes
from fsslib.metrics import FewShotMeter, score_at_label_size
from fsslib.methods.pfenet import PFENet

PRIOR_THRESHOLD = 0.5


def _prior_maps(model: PFENet, batch: OneWayBatch, present: list[list[int]]) -> dict[str, torch.Tensor]:
    """Every prior of the batch as (B, h, w) maps in [0, 1]: PFENet's from the model's backbone, the CLIP ones from its prior source."""
    query_levels = model.backbone_levels(batch.query_images)
    support_levels = model.backbone_levels(batch.support_images.flatten(0, 1))
    maps = {"pfenet": MaskedSupportPrior()(batch, query_levels, support_levels, model.backbone)[:, 0]}
    clip = model.prior  # ClipPriors
    priors = clip.clip_priors(batch)
    for index, block in enumerate(clip.vvp_blocks):
        maps[f"vvp_block{block + 1}"] = priors["vvp"][:, index].mean(dim=1)  # mean over shots
    maps["vtp"] = priors["vtp"]
    maps["vtp_refined"] = priors["vtp_refined"]
    maps["vtp_present_labels"] = clip.clip_priors(batch, present_indices=present)["vtp_refined"]
    return maps


def prior_quality(model: PFENet, episodes: EpisodeDataset, batch_size: int = 16) -> dict[str, float]:
    """mIoU (%) of each prior thresholded at 0.5 on the 1-way test ``episodes``.

    ``model`` is a PI-CLIP model (``build_method(make_config(method="piclip", ...))``): its backbone
    gives the PFENet prior and its CLIP prior source the VVP/VTP. Keys: ``pfenet``, ``vvp_block<i>``
    (1-based block, shots averaged), ``vtp``, ``vtp_refined`` and ``vtp_present_labels`` (refined VTP
    with the official code's prompts of every class present in the query, i.e. reading its labels).
    """
    model = model.eval()
    meters: dict[str, FewShotMeter] = {}
    for start in range(0, len(episodes), batch_size):
        items = [episodes[i] for i in range(start, min(start + batch_size, len(episodes)))]
        batch = collate_episodes(items)  # 1-way: the labels hold 0, 1 and 255
        one_way = batch.one_way()
        present = [[c - 1 for c in classes] for classes in one_way.query_classes]  # image-level labels, as rows
        with torch.no_grad():
            maps = _prior_maps(model, one_way, present)
        for name, priors in maps.items():  # (B, h, w), scored exactly as the evaluator scores a prediction
            meter = meters.setdefault(name, FewShotMeter(episodes.classes))
            score_at_label_size(meter, priors[:, None], batch.query_labels, batch.class_ids,
                                lambda up: (up[:, 0] > PRIOR_THRESHOLD).long())
    return {name: meter.summary()["miou"] for name, meter in meters.items()}
