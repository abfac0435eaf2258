"""Pretrain the toy tier's backbone: the toy world's stand-in for ImageNet weights.

The paper tier starts from an ImageNet-pretrained ResNet-50, whose 1000 classes cover
PASCAL's 20. Likewise ``ToyResNet`` is pretrained here by multi-label classification
over all 20 toy classes: global average pool of layer4 -> linear head -> 20 logits,
binary cross-entropy against the classes present in each scene's mask. Training scenes
come from their own random stream, ``np.random.default_rng([seed, 99, index])``, disjoint
from the materialised splits (``scene_rng`` uses ``[seed, 0|1|2, index]``); held-out scenes
from ``[0, 98, index]``. Re-train or re-evaluate the shipped checkpoint with::

    python -m fsslib.models.pretrain_backbone --steps 1600 --threads 1 --out fsslib/checkpoints/toy_resnet.pt
    python -m fsslib.models.pretrain_backbone --evaluate fsslib/checkpoints/toy_resnet.pt

The checkpoint holds ``{"backbone": ToyResNet state_dict, "classifier": head state_dict}``
in fp16 (the head only serves the metrics); the JSON beside it records how it was made.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from fsslib.data.toyworld import CLASSES_PER_FOLD, N_FOLDS, render_scene
from fsslib.errors import CheckpointError
from fsslib.models.backbones import ToyResNet, load_toy_checkpoint, load_toy_resnet
from fsslib.provenance import git_commit, hardware

N_CLASSES = N_FOLDS * CLASSES_PER_FOLD
TRAIN_STREAM = 99  # second entry of the training scenes' seed sequence
HELD_OUT_STREAM = 98  # held-out scenes: default_rng([HELD_OUT_SEED, 98, index])
HELD_OUT_SEED = 0
BATCH_STREAM = 97  # batch sampling and augmentation: default_rng([seed, 97])
CLI = "python -m fsslib.models.pretrain_backbone"


class ToyClassifier(nn.Module):
    """ToyResNet + global average pooling of layer4 + a linear multi-label head."""

    def __init__(self, backbone: ToyResNet | None = None) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else ToyResNet()
        self.head = nn.Linear(self.backbone.channels["layer4"], N_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, 20) class logits."""
        features = self.backbone(images)["layer4"]  # (B, C, h, w)
        return self.head(features.mean(dim=(2, 3)))


def render_pool(count: int, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes from ``default_rng([seed, stream, index])``: images (N, 64, 64, 3), masks (N, 64, 64)."""
    scenes = [render_scene(np.random.default_rng([seed, stream, index])) for index in range(count)]
    return np.stack([s.image for s in scenes]), np.stack([s.mask for s in scenes])


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


def multi_hot(masks: np.ndarray) -> torch.Tensor:
    """(N, H, W) class-index masks -> (N, 20) float targets, 1 where a class has a pixel."""
    present = (masks[:, None] == np.arange(1, N_CLASSES + 1)[None, :, None, None]).any(axis=(2, 3))
    return torch.from_numpy(present).float()


def augment(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random flips and quarter turns per image (toy classes are rotation invariant)."""
    out = []
    for image in images:  # (3, H, W)
        if rng.random() < 0.5:
            image = image.flip(-1)
        out.append(torch.rot90(image, int(rng.integers(4)), dims=(-2, -1)))
    return torch.stack(out)  # (B, 3, H, W)


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
    logits = torch.cat([model(to_tensor(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])
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
        features = model.backbone(to_tensor(images[start:start + 100]))["layer4"]  # (B, C, h, w)
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
    images, masks = render_pool(max(n_images, n_cam_images), HELD_OUT_SEED, HELD_OUT_STREAM)
    return {
        "held_out_scenes": f"np.random.default_rng([{HELD_OUT_SEED}, {HELD_OUT_STREAM}, index]), index < {len(images)}",
        "classification": classification_metrics(model, images[:n_images], masks[:n_images]),
        "class_activation": class_activation_iou(model, images[:n_cam_images], masks[:n_cam_images]),
    }


def evaluate_checkpoint(checkpoint: Path, n_images: int = 1000, n_cam_images: int = 300) -> dict:
    """Recompute the held-out metrics of a checkpoint written by ``train_toy_backbone``."""
    _, classifier_state = load_toy_checkpoint(checkpoint)
    if classifier_state is None:
        raise CheckpointError(f"{checkpoint} holds no classifier head, so its metrics cannot be recomputed.",
                              f"evaluate a checkpoint written by `{CLI} --steps N --out {checkpoint}`.")
    model = ToyClassifier(load_toy_resnet(checkpoint))
    model.head.load_state_dict({k: v.float() for k, v in classifier_state.items()})
    return evaluate_classifier(model, n_images, n_cam_images)


def half_precision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors to fp16 (the file stays small), integer buffers unchanged."""
    return {k: v.detach().half() if v.is_floating_point() else v.detach() for k, v in state.items()}


def train_toy_backbone(
    out: Path,
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
    command = command or (f"{CLI} --steps {steps} --seed {seed} --batch-size {batch_size} --pool-size {pool_size} "
                          f"--lr {lr} --weight-decay {weight_decay} --warmup-steps {warmup_steps} --out {out}")
    start = time.perf_counter()
    torch.manual_seed(seed)
    batch_rng = np.random.default_rng([seed, BATCH_STREAM])
    images, masks = render_pool(pool_size, seed, TRAIN_STREAM)
    targets = multi_hot(masks)  # (N, 20)
    render_seconds = time.perf_counter() - start

    model = ToyClassifier()
    prior = float(targets.mean().clamp(1e-3, 1 - 1e-3))
    nn.init.constant_(model.head.bias, math.log(prior / (1 - prior)))  # start at the class prior, not at 0.5
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps)
                                                 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses: list[float] = []
    model.train()
    for _ in tqdm(range(steps), desc="pretrain toy-resnet", disable=not progress):
        index = batch_rng.choice(pool_size, size=min(batch_size, pool_size), replace=False)
        batch = augment(to_tensor(images[index]), batch_rng)  # (B, 3, 64, 64)
        loss = F.binary_cross_entropy_with_logits(model(batch), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start - render_seconds

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"backbone": half_precision(model.backbone.state_dict()),
                "classifier": half_precision(model.head.state_dict())}, out)
    metrics = evaluate_checkpoint(out, n_eval_images, n_cam_images)  # the fp16 weights as shipped
    window = max(1, min(50, steps // 10))
    metadata = {
        "model": "ToyResNet(widths=(24, 48, 96, 192), output_stride=8) + GAP(layer4) + Linear(192, 20)",
        "task": "multi-label classification of the 20 toy classes present in each scene's mask (BCE with logits)",
        "command": command,
        "seed": seed,
        "steps": steps,
        "recipe": {"batch_size": batch_size, "pool_size": pool_size,
                   "training_scenes": f"np.random.default_rng([{seed}, {TRAIN_STREAM}, index]), index < {pool_size}",
                   "augmentation": "random horizontal flip + random quarter turn", "optimizer": "AdamW",
                   "lr": lr, "weight_decay": weight_decay, "head_bias_init": "logit of the label prior",
                   "schedule": f"linear warm-up {warmup_steps} steps, cosine to 0"},
        "train_loss": {"first_steps": float(np.mean(losses[:window])), "last_steps": float(np.mean(losses[-window:])),
                       "window": window},
        "git_commit": git_commit(),
        "wall_time_s": {"render_pool": round(render_seconds, 1), "train": round(train_seconds, 1),
                        "total_with_eval": round(time.perf_counter() - start, 1)},
        "hardware": hardware(device="cpu"),
        "held_out": metrics,
        "checkpoint": {"file": out.name, "bytes": out.stat().st_size, "dtype": "float16",
                       "keys": ["backbone", "classifier"]},
    }
    out.with_suffix(".json").write_text(json.dumps(metadata, indent=1) + "\n")
    return metadata


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=CLI, description="Pretrain (or evaluate) the toy tier's ResNet backbone.")
    parser.add_argument("--out", type=Path, help="checkpoint to write, e.g. fsslib/checkpoints/toy_resnet.pt")
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=12000)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--evaluate", type=Path, metavar="CKPT", help="recompute the held-out metrics of CKPT")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.evaluate:
        print(json.dumps(evaluate_checkpoint(args.evaluate), indent=1))
        return
    if args.out is None:
        parser.error("give --out PATH (to train) or --evaluate CKPT")
    command = f"{CLI} {shlex.join(sys.argv[1:] if argv is None else argv)}"
    metadata = train_toy_backbone(args.out, args.steps, args.seed, args.batch_size, args.pool_size, args.lr,
                                  args.weight_decay, args.warmup_steps, progress=not args.no_progress, command=command)
    print(json.dumps(metadata["held_out"], indent=1))


if __name__ == "__main__":
    main()
