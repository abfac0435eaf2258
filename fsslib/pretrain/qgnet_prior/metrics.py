"""Acceptance metrics of a toy prior extractor on held-out toy scenes (``default_rng([0, 93, index])``).

* **kNN multi-label mAP** of the representation: layer4 globally pooled and L2-normalised; each
  of the second half of the scenes is scored per class by the summed cosine of its k = 20
  nearest scenes of the first half that contain the class; mean over classes of the AP. The
  random-init toy ResNet and the shipped supervised toy ResNet give the scale.
* **View retrieval**, the pretext task itself: two MoCo v2 views of each held-out scene; the share
  of first views whose most similar second view (cosine of the pooled layer4) is of the same scene
  (chance: one over the number of scenes).
* **Plateau**: the kNN mAP gained over the last quarter of a learning curve (the budget rule: below
  :data:`PLATEAU_GAIN`), beside the bootstrap standard error of one curve point (:func:`knn_map_se`);
  or a run at twice the budget that moves the kNN mAP by less than :data:`PLATEAU_GAIN`, measured on the
  same scenes with a paired bootstrap (:func:`knn_map_difference`). Under a cosine schedule the last
  quarter runs at a small learning rate, so only the second rule tells a plateau from a schedule's end
  (``benchmarks/results/qgnet_prior_curves_toy.md``).
* **Prior region map** (QGNet Eqs. 9-12) with the shipped toy ResNet as the bridge: its recall
  at 0.5 (share of object pixels where the map is above 0.5, Eq. 16), the share of background
  pixels above 0.5, and the same for the inverted map (QGNet Sec. IV-C finds the objects
  *low* in the prior region map).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fsslib.blocks import prior_region_map
from fsslib.metrics import RegionMapMeter
from fsslib.models.backbones import MultiLevelBackbone, ToyResNet, load_toy_resnet
from fsslib.pretrain.scenes import render_scenes, to_unit_tensor
from fsslib.pretrain.views import random_views
from fsslib.pretrain.toy_resnet.metrics import average_precision
from fsslib.pretrain.toy_resnet.model import N_CLASSES, multi_hot

HELD_OUT_SEED, HELD_OUT_STREAM = 0, 93
NEIGHBOURS = 20
RETRIEVAL_SCENES = 500  # the view-retrieval metric's held-out scenes (the first ones)
PLATEAU_GAIN = 0.005  # a kNN mAP curve whose last quarter gains less is at its plateau (the prior extractors' budget rule, docs/methods/qgnet.md)
MAP_THRESHOLD = 0.5


@torch.no_grad()
def pooled_features(extractor: MultiLevelBackbone, images: np.ndarray | torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    """(N, C) L2-normalised global average of layer4 of (N, H, W, 3) uint8 images or (N, 3, H, W) tensors in [0, 1],
    on the CPU (the images go to the extractor's device in batches)."""
    extractor.eval()
    device = next(extractor.parameters()).device
    tensors = to_unit_tensor(images) if isinstance(images, np.ndarray) else images
    pooled = [extractor(tensors[i:i + batch_size].to(device))["layer4"].float().mean(dim=(2, 3)).cpu()
              for i in range(0, len(tensors), batch_size)]
    return F.normalize(torch.cat(pooled), dim=1)


@torch.no_grad()
def view_retrieval(extractor: MultiLevelBackbone, images: np.ndarray, seed: int = 0) -> float:
    """Top-1 retrieval of a scene's other view among the (N, H, W, 3) scenes (the pretext task; chance 1 / N)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = to_unit_tensor(images)
    size = tensors.shape[-1]
    first, second = (pooled_features(extractor, random_views(tensors, size, generator)) for _ in range(2))  # (N, C) each
    return float(((first @ second.T).argmax(dim=1) == torch.arange(len(first))).float().mean())


def last_quarter_gain(curve: list[list[float]]) -> float:
    """kNN mAP gained over the last quarter of a ``[[step, kNN mAP], ...]`` curve: the last point minus the
    point at three quarters of the last step (the nearest recorded step at or before it)."""
    final_step, final = curve[-1]
    before = [value for step, value in curve if step <= 0.75 * final_step]
    return float(final - before[-1]) if before else float("nan")


def knn_scores(features: torch.Tensor, labels: torch.Tensor, neighbours: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """(Q, 20) class scores of the query scenes (second half of (N, C) features) from their k nearest reference
    scenes (first half): the summed cosine of the neighbours holding each class; and the queries' (Q, 20) labels."""
    half = len(features) // 2
    similarity = features[half:] @ features[:half].T  # (Q, R)
    top, index = similarity.topk(neighbours, dim=1)  # (Q, k)
    scores = torch.einsum("qk,qkc->qc", top, labels[:half][index])  # (Q, 20)
    return scores.numpy(), labels[half:].numpy().astype(bool)


def mean_average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the classes present in ``truth`` (Q, 20) of the AP of ``scores`` (Q, 20)."""
    return float(np.mean([average_precision(scores[:, c], truth[:, c]) for c in range(N_CLASSES) if truth[:, c].any()]))


def knn_map(features: torch.Tensor, labels: torch.Tensor, neighbours: int = NEIGHBOURS) -> float:
    """Multi-label kNN mAP: queries = second half, references = first half of (N, C) features, (N, 20) labels."""
    return mean_average_precision(*knn_scores(features, labels, neighbours))


def bootstrap_draws(n: int, resamples: int, seed: int) -> list[np.ndarray]:
    """``resamples`` index arrays of ``n`` query scenes drawn with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, n) for _ in range(resamples)]


def knn_map_se(features: torch.Tensor, labels: torch.Tensor, resamples: int = 200, seed: int = 0) -> float:
    """The standard error of :func:`knn_map` over its query scenes (bootstrap): the noise of one curve point."""
    scores, truth = knn_scores(features, labels)
    return float(np.std([mean_average_precision(scores[d], truth[d]) for d in bootstrap_draws(len(scores), resamples, seed)],
                        ddof=1))


def knn_map_difference(first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor, resamples: int = 200,
                       seed: int = 0) -> dict[str, float]:
    """kNN mAP of ``second`` minus that of ``first`` (both (N, C) features of the same scenes, (N, 20) labels)
    with its paired bootstrap standard error: the same resampled query scenes score both."""
    (scores_first, truth), (scores_second, _) = knn_scores(first, labels), knn_scores(second, labels)
    differences = [mean_average_precision(scores_second[d], truth[d]) - mean_average_precision(scores_first[d], truth[d])
                   for d in bootstrap_draws(len(truth), resamples, seed)]
    return {"difference": mean_average_precision(scores_second, truth) - mean_average_precision(scores_first, truth),
            "se": float(np.std(differences, ddof=1))}


@torch.no_grad()
def region_map_scores(bridge: MultiLevelBackbone, extractor: MultiLevelBackbone, images: np.ndarray,
                      masks: np.ndarray) -> dict[str, float]:
    """Recall at 0.5 of the prior region map (and of 1 - map) on object pixels, and its rate on background
    pixels: Table VII's Eq. 16 as :class:`~fsslib.metrics.RegionMapMeter` counts it (map > 0.5), as fractions."""
    bridge.eval(), extractor.eval()
    tensors = to_unit_tensor(images)
    maps = prior_region_map(bridge(tensors)["layer4"], extractor(tensors)["layer4"])  # (N, h, w)
    maps = F.interpolate(maps[:, None], size=masks.shape[-2:], mode="bilinear", align_corners=True)[:, 0]
    meter = RegionMapMeter(thresholds=(MAP_THRESHOLD,))
    meter.update(maps, torch.from_numpy(masks))
    summary = meter.summary()
    recall, background = summary["recall"][0] / 100, summary["background_share"][0] / 100
    return {"recall_at_0.5": recall, "background_at_0.5": background,
            "inverted_recall_at_0.5": 1 - recall, "inverted_background_at_0.5": 1 - background}


def acceptance_metrics(checkpoint: str | Path, n_images: int = 1000, n_map_images: int = 300) -> dict:
    """Held-out metrics of a prior extractor checkpoint, beside the random-init and supervised toy ResNets."""
    scenes = render_scenes(n_images, HELD_OUT_SEED, HELD_OUT_STREAM)
    labels = multi_hot(scenes.masks)
    torch.manual_seed(0)
    extractors = {"this": load_toy_resnet(checkpoint), "random_init": ToyResNet(), "supervised_toy_resnet": load_toy_resnet()}
    bridge = load_toy_resnet()
    return {
        "held_out_scenes": f"np.random.default_rng([{HELD_OUT_SEED}, {HELD_OUT_STREAM}, index]), index < {n_images}",
        "knn_map": {name: knn_map(pooled_features(model, scenes.images), labels) for name, model in extractors.items()},
        "view_retrieval": {name: view_retrieval(model, scenes.images[:RETRIEVAL_SCENES]) for name, model in extractors.items()},
        "prior_region_map": region_map_scores(bridge, extractors["this"], scenes.images[:n_map_images],
                                              scenes.masks[:n_map_images]),
    }
