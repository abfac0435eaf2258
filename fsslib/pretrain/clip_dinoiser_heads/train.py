"""Training of CLIP-DINOiser's heads (wysoczanska/clip_dinoiser ``train.py``, scaled to the toy world).

The official recipe: 1000 ImageNet images, crops of 448, horizontal flip, ``ColorJitter(0.5)``
(brightness); batch 16, ~6.3k iterations; AdamW, lr 5e-5 for the correlation head and 1e-2 for
the background head, x0.1 at iteration 5000 (79% of the run); the teachers are DINO ViT-B/16's
last-block values (correlations binarised at gamma = 0.2) and FOUND's saliency (> 0.5) resized to
the CLIP grid. Here: toy scenes from ``np.random.default_rng([seed, 99, index])`` (no label read),
random crops of 50-100% of the image resized to 64, the same flip and brightness jitter, the toy
DINO and toy FOUND as teachers, the frozen toy CLIP ViT tapped at ``feature_block``.

Held-out acceptance (``default_rng([0, 100, index])``): how well the learned correlations group
objects (the toy DINO metric's grouping IoU, beside the raw tapped CLIP features and the
teacher) and the background head's foreground IoU (beside its teacher and all-foreground).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fsslib.clip import ClipBundle, load_clip, maskclip_features_and_tap
from fsslib.methods.clip_dinoiser.model import (GAMMA, DinoiserHeads, background_loss, correlation_loss, load_heads,
                                                teacher_targets)
from fsslib.models.vit import VisionTransformer, last_block_taps
from fsslib.errors import FsslibError
from fsslib.models.files import read_weights
from fsslib.pretrain.saving import RunRecord, check_teacher, file_sha256, half_precision, save_checkpoint, write_metadata
from fsslib.pretrain.scenes import render_scenes, to_unit_tensor
from fsslib.pretrain.toy_dino.metrics import cell_labels, grouping_iou, summary
from fsslib.pretrain.toy_found import FoundHead, load_found
from fsslib.pretrain.toy_found.train import TOY_FOUND_CHECKPOINT, foreground_iou
from fsslib.pretrain.views import ViewAugmentation, random_views

CLI = "python -m fsslib.pretrain toy-clip-dinoiser"
TRAIN_STREAM, HELD_OUT_SEED, HELD_OUT_STREAM = 99, 0, 100
TRAINING_VIEW = ViewAugmentation(crop_scale=(0.5, 1.0), jitter=(0.5, 0.0, 0.0, 0.0), jitter_probability=1.0,
                                 grayscale_probability=0.0, blur_probability=0.0)


@dataclass
class HeadSettings:
    """One training run of the toy heads (defaults: the recipe of the shipped `toy_clip_dinoiser_heads.pt`)."""

    steps: int = field(default=4000, metadata={"help": "optimiser steps (official: ~6.3k; 8000 gain < 1 point)"})
    seed: int = field(default=0, metadata={"help": "scenes, initialisation and views"})
    batch_size: int = field(default=16, metadata={"help": "images per step (official: 16)"})
    pool_size: int = field(default=4000, metadata={"help": "training scenes (official: 1000 images)"})
    feature_block: int = field(default=1, metadata={"help": "toy CLIP block whose ln_2 features feed the heads"})
    correlation_lr: float = field(default=5e-5, metadata={"help": "AdamW lr of the correlation head (official)"})
    background_lr: float = field(default=1e-2, metadata={"help": "AdamW lr of the background head (official)"})
    decay_at: float = field(default=0.79, metadata={"help": "fraction of the run where both lrs drop x0.1"})
    gamma: float = field(default=GAMMA, metadata={"help": "binarisation of the teacher's correlations"})
    found: str = field(default="", metadata={"help": "toy FOUND checkpoint ('' = the shipped one)"})


@dataclass
class Teachers:
    """The frozen models the heads learn from and read."""

    clip: ClipBundle
    dino: VisionTransformer
    found: FoundHead


@torch.no_grad()
def teacher_signals(teachers: Teachers, images: torch.Tensor, feature_block: int,
                    gamma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tapped CLIP features (B, C, h, w), correlation targets (B, N, N) and FOUND saliency (B, 1, h, w)."""
    _, features = maskclip_features_and_tap(teachers.clip, images, feature_block)
    taps = last_block_taps(teachers.dino, images)
    if taps.grid != tuple(features.shape[-2:]):
        raise FsslibError(f"The DINO teacher's grid {taps.grid} differs from the CLIP's {tuple(features.shape[-2:])}: "
                          "their correlations cannot be compared cell by cell.",
                          "use a DINO and a CLIP with the same patch size (8 on the toy tier, 16 for ViT-B/16).")
    saliency = teachers.found(taps.as_map(taps.keys)).sigmoid()
    saliency = F.interpolate(saliency, size=features.shape[-2:], mode="bilinear", align_corners=False)
    return features, teacher_targets(taps.values, gamma), saliency


def load_teachers(found: str | Path | None = None) -> Teachers:
    """The toy CLIP ViT, and the toy DINO and FOUND head of the toy FOUND checkpoint."""
    dino, head = load_found(found or None)
    return Teachers(load_clip("toy-vit"), dino, head)


@torch.no_grad()
def acceptance_metrics(heads: DinoiserHeads, teachers: Teachers, feature_block: int, n_images: int = 300) -> dict:
    """Grouping IoU of the learned correlations and foreground IoU of the background head, on held-out scenes."""
    scenes = render_scenes(n_images, HELD_OUT_SEED, HELD_OUT_STREAM)
    images = to_unit_tensor(scenes.images)
    features, _, saliency = teacher_signals(teachers, images, feature_block, GAMMA)
    labels = cell_labels(scenes.masks)
    projected = heads.correlation.proj(features).flatten(2).transpose(1, 2)  # (N, T, 256)
    dino_values = last_block_taps(teachers.dino, images).values
    grouping = {"learned_correlations": summary(grouping_iou(projected, labels)),
                "clip_tapped_features": summary(grouping_iou(features.flatten(2).transpose(1, 2), labels)),
                "dino_values_teacher": summary(grouping_iou(dino_values, labels))}
    return {
        "held_out_scenes": f"np.random.default_rng([{HELD_OUT_SEED}, {HELD_OUT_STREAM}, index]), index < {n_images}",
        "grouping_iou": grouping,
        "foreground_iou": {"background_head": round(foreground_iou(heads.background(features).sigmoid(), scenes.masks), 4),
                           "found_teacher": round(foreground_iou(saliency, scenes.masks), 4),
                           "all_foreground": round(foreground_iou(torch.ones_like(saliency), scenes.masks), 4)},
    }


def evaluate_checkpoint(checkpoint: str | Path, n_images: int = 300) -> dict:
    """The acceptance metrics of a heads checkpoint, with the teachers it was trained with (checked by sha256)."""
    meta = Path(checkpoint).with_suffix(".json")
    found = json.loads(meta.read_text())["settings"]["found"] if meta.is_file() else ""
    recorded = read_weights(checkpoint, "CLIP-DINOiser heads", f"re-create it with `{CLI} --out {checkpoint}`.")
    check_teacher(found or TOY_FOUND_CHECKPOINT, recorded.get("found_sha256"), "The toy FOUND head",
                  f"re-create the heads with `{CLI} --out {checkpoint}` against the current teachers.")
    heads, block, _ = load_heads(checkpoint)
    return acceptance_metrics(heads, load_teachers(found), block, n_images)


def train_dinoiser_heads(out: str | Path, settings: HeadSettings, progress: bool = True, command: str | None = None,
                         n_eval_images: int = 300) -> dict:
    """Train the correlation and background heads; write ``out`` and ``out.json``; return the metadata."""
    out = Path(out)
    record = RunRecord(command or f"{CLI} --out {out}", settings.seed)
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    teachers = load_teachers(settings.found)
    images = render_scenes(settings.pool_size, settings.seed, TRAIN_STREAM).images
    prepare_seconds = time.perf_counter() - start
    heads = DinoiserHeads(teachers.clip.visual.transformer.width)
    optimizer = torch.optim.AdamW([{"params": heads.correlation.parameters(), "lr": settings.correlation_lr},
                                   {"params": heads.background.parameters(), "lr": settings.background_lr}])
    decay_step = int(settings.decay_at * settings.steps)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [decay_step], gamma=0.1)
    history: dict[str, list[float]] = {"correlation": [], "background": []}
    for _ in tqdm(range(settings.steps), desc="train CLIP-DINOiser heads", disable=not progress):
        index = torch.randint(len(images), (settings.batch_size,), generator=generator)
        views = random_views(to_unit_tensor(images[index.numpy()]), images.shape[1], generator, TRAINING_VIEW)
        features, targets, saliency = teacher_signals(teachers, views, settings.feature_block, settings.gamma)
        terms = {"correlation": correlation_loss(heads.correlation(features), targets),
                 "background": background_loss(heads.background(features), saliency)}
        optimizer.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        optimizer.step()
        schedule.step()
        for name, value in terms.items():
            history[name].append(value.item())
    train_seconds = time.perf_counter() - start - prepare_seconds
    save_checkpoint(out, {"heads": half_precision(heads.state_dict()), "feature_block": settings.feature_block,
                          "clip": "toy-vit", "found_sha256": file_sha256(settings.found or TOY_FOUND_CHECKPOINT)})
    window = max(1, min(100, settings.steps // 10))
    metadata = {
        **record.stamp(device="cpu"),
        "model": "CLIP-DINOiser heads on the toy CLIP ViT: conv3x3 -> 256 (correlations), conv1x1 -> 1 (background)",
        "task": "toy CLIP-DINOiser heads, taught by the toy DINO (values, gamma) and the toy FOUND head",
        "settings": asdict(settings),
        "training_images": {"count": len(images),
                            "scenes": f"np.random.default_rng([{settings.seed}, {TRAIN_STREAM}, index]), index < {settings.pool_size}"},
        "loss": {name: {"first_steps": float(np.mean(v[:window])), "last_steps": float(np.mean(v[-window:]))}
                 for name, v in history.items()},
        "wall_time_s": {"prepare": round(prepare_seconds, 1), "train": round(train_seconds, 1)},
        "checkpoint": {"file": out.name, "bytes": out.stat().st_size, "dtype": "float16",
                       "keys": ["heads", "feature_block", "clip", "found_sha256"]},
        "held_out": acceptance_metrics(load_heads(out)[0], teachers, settings.feature_block, n_eval_images),  # as shipped
    }
    write_metadata(out, metadata)
    return metadata
