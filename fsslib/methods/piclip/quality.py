"""Prior quality: how well each training-free prior alone segments the query, and where its mass falls.

Each prior (PFENet's, VVP per block, VTP, refined VTP, and the official code's label-reading
VTP) is upsampled to the query's original label size, thresholded at 0.5 and scored exactly
like a prediction (:class:`fsslib.metrics.FewShotMeter`: per-class summed IoU, mean over
classes, label 255 ignored). No training is involved; the decoder is unused. :func:`prior_mass_by_region` gives each prior's mean value
on the target, on objects sharing the target's fill or its shape, on other objects and on the background
(toy tier: the classes' shapes and fills exist there only).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fsslib.blocks.priors import MaskedSupportPrior
from fsslib.data.episodes import EpisodeDataset, OneWayInputs, collate_episodes
from fsslib.data.toyworld import class_attributes
from fsslib.errors import FsslibError
from fsslib.methods.pfenet import PFENet
from fsslib.methods.piclip.model import ClipPriors
from fsslib.metrics import FewShotMeter, score_at_label_size

PRIOR_THRESHOLD = 0.5


def _require_piclip(model: PFENet) -> torch.device:
    """The device of ``model``, a PI-CLIP model on PFENet; a clear error for any other model."""
    if not (isinstance(model, PFENet) and isinstance(model.prior, ClipPriors)):
        raise FsslibError(f"The prior analyses read PI-CLIP's CLIP priors beside PFENet's, and this model is a "
                          f"{type(model).__name__} with {type(getattr(model, 'prior', None)).__name__} priors.",
                          'build PI-CLIP on PFENet: build_method(make_config(method="piclip", ...)), or load its zoo '
                          'model (predict.load("piclip", fold=F))')
    return next(model.parameters()).device


def prior_maps(model: PFENet, batch: OneWayInputs, present: list[list[int]]) -> dict[str, torch.Tensor]:
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
    device = _require_piclip(model)  # a model on a GPU reads its batches there
    model = model.eval()
    meters: dict[str, FewShotMeter] = {}
    for start in range(0, len(episodes), batch_size):
        items = [episodes[i] for i in range(start, min(start + batch_size, len(episodes)))]
        batch = collate_episodes(items).to(device)  # 1-way: the labels hold 0, 1 and 255
        inputs = batch.inputs(image_labels=True).one_way()  # the labels feed vtp_present_labels only
        present = [[c - 1 for c in classes] for classes in inputs.query_classes]  # image-level labels, as rows
        with torch.no_grad():
            maps = prior_maps(model, inputs, present)
        for name, priors in maps.items():  # (B, h, w), scored exactly as the evaluator scores a prediction
            meter = meters.setdefault(name, FewShotMeter(episodes.classes))
            score_at_label_size(meter, priors[:, None], batch.query_labels, batch.class_ids,
                                lambda up: (up[:, 0] > PRIOR_THRESHOLD).long())
    return {name: meter.summary()["miou"] for name, meter in meters.items()}


REGIONS = ("target", "same fill", "same shape", "other object", "background")


def _regions(label: np.ndarray, class_id: int) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of a toy query's :data:`REGIONS` around the target class ``class_id``."""
    shape, fill = class_attributes(class_id)
    present = [int(c) for c in np.unique(label) if c not in (0, 255, class_id)]
    same_fill = [c for c in present if class_attributes(c)[1] == fill]
    same_shape = [c for c in present if class_attributes(c)[0] == shape]
    return {"target": label == class_id, "same fill": np.isin(label, same_fill), "same shape": np.isin(label, same_shape),
            "other object": np.isin(label, [c for c in present if c not in same_fill + same_shape]), "background": label == 0}


def prior_mass_by_region(model: PFENet, episodes: EpisodeDataset, batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Per prior (keys of :func:`prior_maps`) and region of :data:`REGIONS`: the prior's mean value on the
    region's pixels (upsampled to the label size as a prediction is), averaged over the episodes whose query
    holds that region (their count under ``"episodes"``), and under ``"<region> / target"`` that mean divided
    by the prior's mean on the target in the same episodes. 1-way toy test ``episodes``."""
    device = _require_piclip(model)
    model = model.eval()
    sums: dict[str, dict[str, float]] = {}
    target_sums: dict[str, dict[str, float]] = {}  # the target's value, summed over the episodes holding a region
    counts = dict.fromkeys(REGIONS, 0)
    for start in range(0, len(episodes), batch_size):
        indices = range(start, min(start + batch_size, len(episodes)))
        batch = collate_episodes([episodes[i] for i in indices]).to(device).inputs(image_labels=True).one_way()
        with torch.no_grad():
            maps = prior_maps(model, batch, [[c - 1 for c in classes] for classes in batch.query_classes])
        for row, index in enumerate(indices):
            query, _, (class_id,) = episodes.sample_names(index)
            label = episodes.source.load(query)[1]  # (H, W) class ids
            regions = {k: v for k, v in _regions(label, class_id).items() if v.any()}
            for region in regions:
                counts[region] += 1
            for name, prior in maps.items():
                up = F.interpolate(prior[row][None, None].float(), size=label.shape, mode="bilinear",
                                   align_corners=True)[0, 0].cpu().numpy()  # (H, W)
                on_target = float(up[regions["target"]].mean())
                for region, inside in regions.items():
                    sums.setdefault(name, dict.fromkeys(REGIONS, 0.0))[region] += float(up[inside].mean())
                    target_sums.setdefault(name, dict.fromkeys(REGIONS, 0.0))[region] += on_target
    result: dict[str, dict[str, float]] = {"episodes": {r: float(n) for r, n in counts.items()}}
    for name, total in sums.items():
        result[name] = {r: total[r] / counts[r] if counts[r] else float("nan") for r in REGIONS}
        result[f"{name} / target"] = {r: total[r] / target_sums[name][r] if counts[r] else float("nan") for r in REGIONS}
    return result
