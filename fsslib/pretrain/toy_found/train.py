"""Training and acceptance of the toy background teacher (FOUND on the toy DINO).

Training images: ``pool_size`` toy scenes from ``np.random.default_rng([seed, 97, index])``, no label
read. The frozen toy DINO's last-block keys and coarse masks are computed once; the head is
trained as FOUND's (AdamW, lr 0.05 x 0.95 every 50 steps, batch 50, 500 steps on DUTS-TR; here the same
on toy scenes; the loss schedule is :func:`~fsslib.pretrain.toy_found.found.found_loss`).
Acceptance on held-out scenes (``default_rng([0, 98, index])``): foreground IoU of the coarse masks
and of the head (probability > 0.5, upsampled bilinearly to the pixels) against the all-foreground
prediction.
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

from fsslib.data.layout import IGNORE
from fsslib.errors import CheckpointError
from fsslib.models.files import read_weights
from fsslib.models.vit import TOY_DINO_CHECKPOINT, VisionTransformer, last_block_taps, load_dino
from fsslib.paths import CHECKPOINT_DIR, shown_path, weights_root
from fsslib.pretrain.saving import (RunRecord, check_teacher, file_sha256, half_precision, save_checkpoint,
                                   write_metadata)
from fsslib.pretrain.scenes import render_scenes, to_unit_tensor
from fsslib.pretrain.toy_found.found import (SIMILARITY_THRESHOLD, STOP_BACKGROUND_STEPS, FoundHead, coarse_background,
                                            found_loss)

CLI = "python -m fsslib.pretrain toy-found"
TRAIN_STREAM, HELD_OUT_SEED, HELD_OUT_STREAM = 97, 0, 98
TOY_FOUND_CHECKPOINT = CHECKPOINT_DIR / "toy_found.pt"
FOUND_RELEASE_FILE, FOUND_RELEASE_PATH = "decoder_weights.pt", "data/weights/decoder_weights.pt"


@dataclass
class FoundSettings:
    """One toy FOUND run (defaults: FOUND's own where it has one; the recipe of the shipped `toy_found.pt`)."""

    steps: int = field(default=500, metadata={"help": "optimiser steps (FOUND: 500)"})
    seed: int = field(default=0, metadata={"help": "scenes and initialisation"})
    batch_size: int = field(default=50, metadata={"help": "images per step (FOUND: 50)"})
    pool_size: int = field(default=4000, metadata={"help": "training scenes"})
    lr: float = field(default=0.05, metadata={"help": "AdamW learning rate (FOUND: 0.05)"})
    tau: float = field(default=SIMILARITY_THRESHOLD, metadata={"help": "key similarity to the seed for background"})
    stop_background_steps: int = field(default=STOP_BACKGROUND_STEPS,
                                       metadata={"help": "steps trained on the coarse masks (FOUND: 100)"})
    step_lr_size: int = field(default=50, metadata={"help": "steps between learning-rate decays (FOUND: 50)"})
    step_lr_gamma: float = field(default=0.95, metadata={"help": "learning-rate decay factor (FOUND: 0.95)"})
    dino: str = field(default="", metadata={"help": "toy DINO checkpoint ('' = the shipped one)"})


@torch.no_grad()
def keys_and_coarse_background(dino: VisionTransformer, images: np.ndarray, tau: float,
                               batch_size: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys (N, C, h, w) and coarse backgrounds (N, 1, h, w) bool of (N, H, W, 3) uint8 images."""
    keys, background = [], []
    for start in range(0, len(images), batch_size):
        taps = last_block_taps(dino, to_unit_tensor(images[start:start + batch_size]))
        keys.append(taps.as_map(taps.keys))
        background.append(taps.as_map(coarse_background(taps, tau)[..., None]))
    return torch.cat(keys), torch.cat(background)


def foreground_iou(scores: torch.Tensor, masks: np.ndarray) -> float:
    """IoU of foreground scores (N, 1, h, w) > 0.5, upsampled bilinearly, with the masks' objects (ignore 255)."""
    truth = torch.from_numpy(masks)
    upsampled = F.interpolate(scores.float(), size=truth.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    predicted, objects, valid = upsampled > 0.5, (truth > 0) & (truth != IGNORE), truth != IGNORE
    return float((predicted & objects & valid).sum() / ((predicted | objects) & valid).sum())


def load_found(checkpoint: str | Path | None = None) -> tuple[VisionTransformer, FoundHead]:
    """The toy DINO the head was trained on (checked by its sha256) and the trained FOUND head, eval mode."""
    path = Path(checkpoint or TOY_FOUND_CHECKPOINT)
    fix = f"re-create it with `{CLI} --threads 1 --out {shown_path(path)}`."
    payload = read_weights(path, "Toy FOUND head", fix)
    if not (isinstance(payload, dict) and isinstance(payload.get("head"), dict)):
        raise CheckpointError(f"{path} holds no FOUND head (a dict with 'head').", fix)
    dino_path = payload.get("dino") or TOY_DINO_CHECKPOINT
    check_teacher(dino_path, payload.get("dino_sha256"), "The toy DINO", fix)
    dino = load_dino("toy-dino", dino_path)
    head = FoundHead(dino.config.width)
    try:
        head.load_state_dict({k: v.float() for k, v in payload["head"].items()})
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit the FOUND head of the toy DINO: {str(error)[:200]}", fix)
    return dino, head.eval()


def load_found_release(decoder_weights: str | Path | None = None,
                       dino_checkpoint: str | Path | None = None) -> tuple[VisionTransformer, FoundHead]:
    """FOUND's released teacher (paper tier): DINO ViT-S/8 and the trained 1x1 decoder, eval mode.

    ``decoder_weights``: the release's ``data/weights/decoder_weights.pt`` of valeoai/FOUND (``{"decoder":
    Conv2d(384, 1, 1).state_dict()}``, as its ``model.py`` saves it), from the path or ``$FSSLIB_WEIGHTS``;
    ``dino_checkpoint``: DINO's ``dino_deitsmall8_300ep_pretrain.pth`` (``"random"``: untrained, shapes only).
    The decoder reads the last block's keys, heads concatenated, as :func:`load_found`'s toy head does.
    """
    path = Path(decoder_weights or weights_root() / FOUND_RELEASE_FILE)
    fix = (f"copy {FOUND_RELEASE_FILE} from the valeoai/FOUND repository ({FOUND_RELEASE_PATH}) into "
           f"{shown_path(weights_root())} once on a connected machine (or pass its path).")
    payload = read_weights(path, "FOUND's released decoder", fix)
    if not (isinstance(payload, dict) and isinstance(payload.get("decoder"), dict)):
        raise CheckpointError(f"{path} holds no FOUND decoder (a dict with 'decoder', as FOUND's model.py saves it).",
                              fix)
    dino = load_dino("dino_vits8", dino_checkpoint)
    head = FoundHead(dino.config.width)
    try:
        head.conv.load_state_dict({k: v.float() for k, v in payload["decoder"].items()})
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit FOUND's decoder on DINO ViT-S/8: {str(error)[:200]}", fix)
    return dino, head.eval()


@torch.no_grad()
def acceptance_metrics(dino: VisionTransformer, head: FoundHead, tau: float, n_images: int = 500) -> dict:
    """Held-out foreground IoU: coarse masks, the head, and all-foreground."""
    scenes = render_scenes(n_images, HELD_OUT_SEED, HELD_OUT_STREAM)
    keys, background = keys_and_coarse_background(dino, scenes.images, tau)
    return {
        "held_out_scenes": f"np.random.default_rng([{HELD_OUT_SEED}, {HELD_OUT_STREAM}, index]), index < {n_images}",
        "foreground_iou": {"found_head": round(foreground_iou(head(keys).sigmoid(), scenes.masks), 4),
                           "coarse_masks": round(foreground_iou((~background).float(), scenes.masks), 4),
                           "all_foreground": round(foreground_iou(torch.ones_like(background, dtype=torch.float),
                                                                  scenes.masks), 4)},
    }


def evaluate_checkpoint(checkpoint: str | Path, n_images: int = 500) -> dict:
    """The acceptance metrics of a toy FOUND checkpoint (with the tau recorded beside it, else FOUND's)."""
    meta = Path(checkpoint).with_suffix(".json")
    tau = json.loads(meta.read_text())["settings"]["tau"] if meta.is_file() else SIMILARITY_THRESHOLD
    return acceptance_metrics(*load_found(checkpoint), tau, n_images)


def train_toy_found(out: str | Path, settings: FoundSettings, progress: bool = True, command: str | None = None,
                    n_eval_images: int = 500) -> dict:
    """Train the FOUND head on the toy DINO; write ``out`` and ``out.json``; return the metadata."""
    out = Path(out)
    record = RunRecord(command or f"{CLI} --out {out}", settings.seed)
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    dino = load_dino("toy-dino", settings.dino or None)
    images = render_scenes(settings.pool_size, settings.seed, TRAIN_STREAM).images
    keys, background = keys_and_coarse_background(dino, images, settings.tau)  # (N, C, h, w), (N, 1, h, w)
    prepare_seconds = time.perf_counter() - start
    head = FoundHead(dino.config.width)
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, settings.step_lr_size, settings.step_lr_gamma)
    history = []
    for step in tqdm(range(settings.steps), desc="train toy FOUND head", disable=not progress):
        index = torch.randint(len(keys), (settings.batch_size,), generator=generator)
        loss = found_loss(head(keys[index]), background[index], step, settings.stop_background_steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append(loss.item())
    train_seconds = time.perf_counter() - start - prepare_seconds
    dino_path = settings.dino or str(TOY_DINO_CHECKPOINT.relative_to(CHECKPOINT_DIR.parent.parent))
    save_checkpoint(out, {"head": half_precision(head.state_dict()), "dino": settings.dino,
                          "dino_sha256": file_sha256(settings.dino or TOY_DINO_CHECKPOINT)})
    window = max(1, min(50, settings.steps // 10))
    metadata = {
        **record.stamp(device="cpu"),
        "model": "FOUND's 1x1 convolution on the toy DINO's last-block keys -> foreground logit",
        "task": "toy background teacher (stands in for FOUND on DINO ViT-S/8)",
        "settings": asdict(settings),
        "dino": dino_path,
        "training_images": {"count": len(images),
                            "scenes": f"np.random.default_rng([{settings.seed}, {TRAIN_STREAM}, index]), index < {settings.pool_size}"},
        "loss": {"first_steps": float(np.mean(history[:window])), "last_steps": float(np.mean(history[-window:]))},
        "wall_time_s": {"prepare": round(prepare_seconds, 1), "train": round(train_seconds, 1)},
        "checkpoint": {"file": out.name, "bytes": out.stat().st_size, "dtype": "float16",
                       "keys": ["head", "dino", "dino_sha256"]},
        "held_out": acceptance_metrics(dino, load_found(out)[1], settings.tau, n_eval_images),
    }
    write_metadata(out, metadata)
    return metadata
