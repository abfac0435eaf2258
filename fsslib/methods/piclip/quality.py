"""Prior quality: how well each training-free prior alone segments the query.

Each prior (PFENet's, VVP per block, VTP, refined VTP, and the official code's label-reading
VTP) is upsampled to the query's original label size, thresholded at 0.5 and scored exactly
like a prediction (:class:`fsslib.metrics.FewShotMeter`: per-class summed IoU, mean over
classes, label 255 ignored). No training is involved; the decoder is unused.
"""
from __future__ import annotations

import torch

from fsslib.config import Config
from fsslib.data.benchmarks import get_benchmark
from fsslib.data.episodes import EpisodeBatch, EpisodeDataset, collate_episodes
from fsslib.methods.pfenet.model import PFENet
from fsslib.metrics import FewShotMeter, score_at_label_size

PRIOR_THRESHOLD = 0.5


def _prior_maps(model, batch: EpisodeBatch, present: list[list[int]]) -> dict[str, torch.Tensor]:
    """Every prior of the batch as (B, h, w) maps in [0, 1]."""
    query_levels = model.backbone_levels(batch.query_images)
    support_levels = model.backbone_levels(batch.support_images.flatten(0, 1))
    maps = {"pfenet": PFENet.prior_masks(model, batch, query_levels, support_levels)[:, 0]}
    priors = model.clip_priors(batch)
    for index, block in enumerate(model.vvp_blocks):
        maps[f"vvp_block{block + 1}"] = priors["vvp"][:, index].mean(dim=1)  # mean over shots
    maps["vtp"] = priors["vtp"]
    maps["vtp_refined"] = priors["vtp_refined"]
    maps["vtp_present_labels"] = model.clip_priors(batch, present_indices=present)["vtp_refined"]
    return maps


def prior_quality(cfg: Config, episodes: int = 300, batch_size: int = 16) -> dict[str, float]:
    """mIoU (%) of each prior thresholded at 0.5 on ``episodes`` test episodes of ``cfg.fold``.

    ``cfg`` is a PI-CLIP config (``make_config(method="piclip", ...)``): its backbone gives the
    PFENet prior and its CLIP the VVP/VTP. Keys: ``pfenet``, ``vvp_block<i>`` (1-based block,
    shots averaged), ``vtp``, ``vtp_refined`` and ``vtp_present_labels`` (refined VTP with the
    official code's prompts of every class present in the query, i.e. reading its labels).
    """
    from fsslib.evaluate import open_source
    from fsslib.methods import build_method

    benchmark = get_benchmark(cfg.benchmark, cfg.coco_folds)
    source = open_source(cfg, benchmark.test_split)
    dataset = EpisodeDataset(source, cfg.fold, cfg.shots, cfg.image_size, episodes, cfg.seed, mode="test")
    model = build_method(cfg).eval()
    meters: dict[str, FewShotMeter] = {}
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = collate_episodes(items)
        present = [[c - 1 for c in classes] for classes in batch.query_classes]  # image-level labels, as rows
        with torch.no_grad():
            maps = _prior_maps(model, batch, present)
        for name, priors in maps.items():  # (B, h, w), scored exactly as the evaluator scores a prediction
            meter = meters.setdefault(name, FewShotMeter(dataset.classes))
            score_at_label_size(meter, priors[:, None], batch.query_labels, batch.class_ids.tolist(),
                                lambda up: (up[:, 0] > PRIOR_THRESHOLD).long())
    return {name: meter.summary()["miou"] for name, meter in meters.items()}
