"""Acceptance metrics of the toy ResNet on held-out scenes: classification mAP and class-activation IoU.

Held-out scenes come from ``np.random.default_rng([0, 98, index])``, a stream no split and
no training pool uses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fsslib.errors import CheckpointError
from fsslib.models.backbones import load_toy_checkpoint, load_toy_resnet
from fsslib.pretrain.scenes import render_scenes, to_unit_tensor
from fsslib.pretrain.toy_resnet.model import N_CLASSES, ToyClassifier, multi_hot

HELD_OUT_SEED = 0
HELD_OUT_STREAM = 98  # held-out scenes: default_rng([HELD_OUT_SEED, 98, index])


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one class: mean precision at the rank of each positive (scores, labels: (N,))."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order].astype(bool)
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.mean())


@torch.no_grad()
def classification_metrics(model: ToyClassifier, images: np.ndarray, masks: np.ndarray, batch_size: int = 100) -> dict:
    """mAP, exact match (sigmoid > 0.5), top-1 and top-k set accuracy (k = classes present)."""
    model.eval()
    logits = torch.cat([model(to_unit_tensor(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])
    scores, labels = logits.numpy(), multi_hot(masks).numpy().astype(bool)  # (N, 20) each
    per_class_ap = [average_precision(scores[:, c], labels[:, c]) for c in range(N_CLASSES) if labels[:, c].any()]
    ranked = np.argsort(-scores, axis=1)  # (N, 20)
    n_present = labels.sum(1)
    top_k_correct = [set(ranked[i, :k]) == set(np.flatnonzero(labels[i])) for i, k in enumerate(n_present)]
    return {
        "n_images": len(images),
        "mAP": float(np.mean(per_class_ap)),
        "exact_match": float(((scores > 0) == labels).all(1).mean()),
        "top1_accuracy": float(labels[np.arange(len(labels)), ranked[:, 0]].mean()),
        "topk_set_accuracy": float(np.mean(top_k_correct)),
    }


@torch.no_grad()
def class_activation_iou(model: ToyClassifier, images: np.ndarray, masks: np.ndarray) -> dict:
    """IoU of class activation maps (layer4 . head weight, upsampled, > half max) vs class masks.

    One pair per (image, present class); ``all_foreground_iou`` is the IoU of predicting
    the whole image, the score of a map that knows nothing about where the object is.
    """
    model.eval()
    weights = model.head.weight  # (20, C)
    cam_ious, full_ious = [], []
    for start in range(0, len(images), 100):
        features = model.backbone(to_unit_tensor(images[start:start + 100]))["layer4"]  # (B, C, h, w)
        cams = torch.einsum("bchw,kc->bkhw", features, weights).relu()  # (B, 20, h, w)
        cams = F.interpolate(cams, size=masks.shape[-2:], mode="bilinear", align_corners=False)  # (B, 20, H, W)
        for cam, mask in zip(cams.numpy(), masks[start:start + 100]):
            for class_id in np.unique(mask[mask > 0]):
                activation = cam[class_id - 1]  # (H, W)
                predicted = (activation >= 0.5 * activation.max()) & (activation > 0)  # empty if nothing fires
                target = mask == class_id
                cam_ious.append((predicted & target).sum() / (predicted | target).sum())
                full_ious.append(target.mean())
    return {"n_images": len(images), "n_pairs": len(cam_ious),
            "cam_iou": float(np.mean(cam_ious)), "all_foreground_iou": float(np.mean(full_ious))}


def evaluate_classifier(model: ToyClassifier, n_images: int = 1000, n_cam_images: int = 300) -> dict:
    """Held-out metrics on scenes ``default_rng([0, 98, index])``: classification and CAM IoU."""
    scenes = render_scenes(max(n_images, n_cam_images), HELD_OUT_SEED, HELD_OUT_STREAM)
    images, masks = scenes.images, scenes.masks
    return {
        "held_out_scenes": f"np.random.default_rng([{HELD_OUT_SEED}, {HELD_OUT_STREAM}, index]), index < {len(images)}",
        "classification": classification_metrics(model, images[:n_images], masks[:n_images]),
        "class_activation": class_activation_iou(model, images[:n_cam_images], masks[:n_cam_images]),
    }


def evaluate_checkpoint(checkpoint: str | Path, n_images: int = 1000, n_cam_images: int = 300) -> dict:
    """Recompute the held-out metrics of a checkpoint written by ``train_toy_backbone``."""
    _, classifier_state = load_toy_checkpoint(checkpoint)
    if classifier_state is None:
        raise CheckpointError(f"{checkpoint} holds no classifier head, so its metrics cannot be recomputed.",
                              f"evaluate a checkpoint written by `python -m fsslib.pretrain toy-resnet --steps N "
                              f"--out {checkpoint}`.")
    model = ToyClassifier(load_toy_resnet(checkpoint))
    model.head.load_state_dict({k: v.float() for k, v in classifier_state.items()})
    return evaluate_classifier(model, n_images, n_cam_images)
