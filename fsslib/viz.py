"""Matplotlib figures for episodes, predictions and training curves (each function returns a figure)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from fsslib.data.episodes import IGNORE, Episode


def _image(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) for imshow."""
    return tensor.detach().float().permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def overlay(image: torch.Tensor, mask: torch.Tensor, colour: Sequence[float] = (1.0, 0.2, 0.2), alpha: float = 0.5) -> np.ndarray:
    """Blend a binary mask (H, W) over an image (3, H, W); ignored pixels are greyed."""
    picture = _image(image)
    mask = mask.detach().cpu().numpy()
    blended = picture.copy()
    blended[mask == 1] = (1 - alpha) * picture[mask == 1] + alpha * np.asarray(colour)
    blended[mask == IGNORE] = 0.5 * picture[mask == IGNORE] + 0.25
    return blended


def plot_episode(episode: Episode, prediction: torch.Tensor | None = None, title: str | None = None) -> Figure:
    """Supports with their masks, the query with its ground truth, and optionally a prediction."""
    shots = episode.support_images.shape[0]
    panels = shots + 1 + (prediction is not None)
    fig, axes = plt.subplots(1, panels, figsize=(2.2 * panels, 2.5), squeeze=False)
    for k in range(shots):
        axes[0, k].imshow(overlay(episode.support_images[k], episode.support_masks[k], (0.2, 0.4, 1.0)))
        axes[0, k].set_title(f"support {k + 1}", fontsize=9)
    axes[0, shots].imshow(overlay(episode.query_image, episode.query_mask, (0.2, 0.8, 0.2)))
    axes[0, shots].set_title("query (truth)", fontsize=9)
    if prediction is not None:
        axes[0, shots + 1].imshow(overlay(episode.query_image, prediction))
        axes[0, shots + 1].set_title("prediction", fontsize=9)
    for ax in axes[0]:
        ax.axis("off")
    fig.suptitle(title or f"class: {episode.class_name}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_maps(image: torch.Tensor, maps: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> Figure:
    """An image (3, H, W), its mask, and named score maps (h, w) side by side (e.g. priors)."""
    panels = 1 + (mask is not None) + len(maps)
    fig, axes = plt.subplots(1, panels, figsize=(2.2 * panels, 2.5), squeeze=False)
    axes[0, 0].imshow(_image(image))
    axes[0, 0].set_title("image", fontsize=9)
    column = 1
    if mask is not None:
        axes[0, 1].imshow(overlay(image, mask, (0.2, 0.8, 0.2)))
        axes[0, 1].set_title("mask", fontsize=9)
        column = 2
    for offset, (name, values) in enumerate(maps.items()):
        axes[0, column + offset].imshow(values.detach().float().cpu().numpy(), cmap="viridis")
        axes[0, column + offset].set_title(name, fontsize=9)
    for ax in axes[0]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_history(history: list[dict]) -> Figure:
    """Training loss and validation mIoU per epoch (from ``train.run(...)['history']``)."""
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o")
    left.set(xlabel="epoch", ylabel="training loss")
    right.plot(epochs, [h.get("val_miou", float("nan")) for h in history], marker="o", color="tab:green")
    right.set(xlabel="epoch", ylabel="validation mIoU (%)")
    fig.tight_layout()
    return fig


def plot_per_class(metrics: dict, reference: dict | None = None) -> Figure:
    """Per-class IoU bars of ``metrics`` (and of a ``reference`` run, e.g. all-foreground)."""
    names = list(metrics["per_class_iou"])
    positions = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3))
    width = 0.4 if reference else 0.8
    ax.bar(positions, [metrics["per_class_iou"][n] for n in names], width, label=metrics["method"])
    if reference:
        ax.bar(positions + width, [reference["per_class_iou"].get(n, 0) for n in names], width, label=reference["method"])
    ax.set_xticks(positions + (width / 2 if reference else 0), names, rotation=20, fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_title(f"fold {metrics['fold']}, {metrics['shots']}-shot: mIoU {metrics['miou']:.1f}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
