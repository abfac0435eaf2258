"""The toy ResNet's pretraining loop: multi-label classification of pre-rendered toy scenes.

Training scenes come from their own random stream, ``np.random.default_rng([seed, 99, index])``,
disjoint from the materialised splits (``scene_rng`` uses ``[seed, 0|1|2, index]``); batches
and augmentation from ``default_rng([seed, 97])``. The checkpoint holds
``{"backbone": ToyResNet state_dict, "classifier": head state_dict}`` in fp16 (the head only
serves the metrics); the JSON beside it records how it was made.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from fsslib.pretrain.saving import RunRecord, half_precision, save_checkpoint, write_metadata
from fsslib.pretrain.scenes import render_scenes, to_unit_tensor
from fsslib.pretrain.schedules import warmup_cosine
from fsslib.pretrain.toy_resnet.metrics import evaluate_checkpoint
from fsslib.pretrain.toy_resnet.model import ToyClassifier, multi_hot

CLI = "python -m fsslib.pretrain toy-resnet"
TRAIN_STREAM = 99  # second entry of the training scenes' seed sequence
BATCH_STREAM = 97  # batch sampling and augmentation: default_rng([seed, 97])


def augment(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random flips and quarter turns per image (toy classes are rotation invariant)."""
    out = []
    for image in images:  # (3, H, W)
        if rng.random() < 0.5:
            image = image.flip(-1)
        out.append(torch.rot90(image, int(rng.integers(4)), dims=(-2, -1)))
    return torch.stack(out)  # (B, 3, H, W)


def train_toy_backbone(
    out: str | Path,
    steps: int,
    seed: int = 0,
    batch_size: int = 64,
    pool_size: int = 12000,
    lr: float = 4e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 50,
    n_eval_images: int = 1000,
    n_cam_images: int = 300,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Pretrain ToyResNet on multi-label toy classification; save ``out`` and ``out.json``.

    Scenes: a pool of ``pool_size`` pre-rendered training scenes, augmented by flips and
    quarter turns; head bias initialised to the label prior. AdamW, linear warm-up then
    cosine decay to 0. Returns the metadata.
    """
    out = Path(out)
    record = RunRecord(command or (f"{CLI} --steps {steps} --seed {seed} --batch-size {batch_size} "
                                   f"--pool-size {pool_size} --lr {lr} --weight-decay {weight_decay} "
                                   f"--warmup-steps {warmup_steps} --out {out}"), seed)
    start = time.perf_counter()
    torch.manual_seed(seed)
    batch_rng = np.random.default_rng([seed, BATCH_STREAM])
    scenes = render_scenes(pool_size, seed, TRAIN_STREAM)
    targets = multi_hot(scenes.masks)  # (N, 20)
    render_seconds = time.perf_counter() - start

    model = ToyClassifier()
    prior = float(targets.mean().clamp(1e-3, 1 - 1e-3))
    nn.init.constant_(model.head.bias, math.log(prior / (1 - prior)))  # start at the class prior, not at 0.5
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, step / steps, warmup_steps))
    losses: list[float] = []
    model.train()
    for _ in tqdm(range(steps), desc="pretrain toy-resnet", disable=not progress):
        index = batch_rng.choice(pool_size, size=min(batch_size, pool_size), replace=False)
        batch = augment(to_unit_tensor(scenes.images[index]), batch_rng)  # (B, 3, 64, 64)
        loss = F.binary_cross_entropy_with_logits(model(batch), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start - render_seconds

    save_checkpoint(out, {"backbone": half_precision(model.backbone.state_dict()),
                          "classifier": half_precision(model.head.state_dict())})
    window = max(1, min(50, steps // 10))
    metadata = {
        **record.stamp(device="cpu"),
        "model": "ToyResNet(widths=(24, 48, 96, 192), output_stride=8) + GAP(layer4) + Linear(192, 20)",
        "task": "multi-label classification of the 20 toy classes present in each scene's mask (BCE with logits)",
        "steps": steps,
        "recipe": {"batch_size": batch_size, "pool_size": pool_size,
                   "training_scenes": f"np.random.default_rng([{seed}, {TRAIN_STREAM}, index]), index < {pool_size}",
                   "augmentation": "random horizontal flip + random quarter turn", "optimizer": "AdamW",
                   "lr": lr, "weight_decay": weight_decay, "head_bias_init": "logit of the label prior",
                   "schedule": f"linear warm-up {warmup_steps} steps, cosine to 0"},
        "train_loss": {"first_steps": float(np.mean(losses[:window])), "last_steps": float(np.mean(losses[-window:])),
                       "window": window},
        "wall_time_s": {"render_pool": round(render_seconds, 1), "train": round(train_seconds, 1)},
        "checkpoint": {"file": out.name, "bytes": out.stat().st_size, "dtype": "float16",
                       "keys": ["backbone", "classifier"]},
        "held_out": evaluate_checkpoint(out, n_eval_images, n_cam_images),  # the fp16 weights as shipped
    }
    write_metadata(out, metadata)
    return metadata
