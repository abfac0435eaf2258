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


WAY_COLOURS = ((1.0, 0.2, 0.2), (0.2, 0.4, 1.0), (0.2, 0.8, 0.2), (1.0, 0.8, 0.1), (0.8, 0.3, 0.9))


def overlay(image: torch.Tensor, mask: torch.Tensor, colour: Sequence[float] | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend a mask (H, W) over an image (3, H, W): value n (1..N) in way n's colour (or ``colour`` for a
    binary mask); ignored pixels are greyed."""
    picture = _image(image)
    mask = mask.detach().cpu().numpy()
    blended = picture.copy()
    for value in range(1, len(WAY_COLOURS) + 1):
        tint = np.asarray(colour if colour is not None and value == 1 else WAY_COLOURS[value - 1])
        blended[mask == value] = (1 - alpha) * picture[mask == value] + alpha * tint
    blended[mask == IGNORE] = 0.5 * picture[mask == IGNORE] + 0.25
    return blended


def plot_episode(episode: Episode, prediction: torch.Tensor | None = None, title: str | None = None) -> Figure:
    """One row per way: its supports with their masks (in the way's colour); then the query with its ground
    truth and optionally a prediction (values 0..N, each way in its colour)."""
    ways, shots = episode.support_images.shape[:2]
    columns = shots + 1 + (prediction is not None)
    fig, axes = plt.subplots(ways, columns, figsize=(2.2 * columns, 2.4 * ways), squeeze=False)
    for way in range(ways):
        for k in range(shots):
            axes[way, k].imshow(overlay(episode.support_images[way, k], episode.support_masks[way, k], WAY_COLOURS[way]))
            axes[way, k].set_title(f"{episode.class_names[way]}, support {k + 1}", fontsize=8)
    axes[0, shots].imshow(overlay(episode.query_image, episode.query_mask))
    axes[0, shots].set_title("query (truth)", fontsize=9)
    if prediction is not None:
        axes[0, shots + 1].imshow(overlay(episode.query_image, prediction))
        axes[0, shots + 1].set_title("prediction", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title or f"{ways}-way {shots}-shot: " + ", ".join(episode.class_names), fontsize=10)
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


def plot_learning_curves(curves: dict[str, list[dict]], title: str = "", x: str = "epoch", y: str = "val_miou",
                         ylabel: str = "validation mIoU (%)") -> Figure:
    """Validation mIoU per epoch of several runs (label -> ``log.jsonl`` records), one line each, with the
    last quarter of training shaded: a plateau is flat there. ``x`` / ``y`` name other record keys (e.g. a
    pretraining run's ``step`` and held-out ``knn_map``)."""
    legend_rows = (len(curves) + 2) // 2  # the runs and the shaded quarter, in two columns below the axes
    fig, ax = plt.subplots(figsize=(8, 3.5 + 0.16 * legend_rows), layout="constrained")
    longest = 0
    for label, history in curves.items():
        positions = [h[x] for h in history]
        ax.plot(positions, [h[y] for h in history], marker=".", label=label)
        longest = max(longest, positions[-1] if positions else 0)
    ax.axvspan(0.75 * longest, longest, color="0.9", zorder=0, label="last quarter")
    ax.set(xlabel=x, ylabel=ylabel, title=title)
    fig.legend(loc="outside lower center", fontsize=7, ncol=2)
    return fig


def plot_part_prototypes(image: torch.Tensor, mask: torch.Tensor, seeds: torch.Tensor, moved: torch.Tensor,
                         assignment: torch.Tensor) -> Figure:
    """DPS on one support (LFSS Eqs. 6-11): the image with its (h, w) bool mask, the seeds placed by
    the distance transform (circles) and moved towards the query (crosses), each (S, 2) (row, col)
    on the feature grid, and the (h, w) part each masked cell is assigned to (-1 outside the mask)."""
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7))
    height, width = mask.shape
    axes[0].imshow(_image(image))
    axes[0].set_title("support", fontsize=9)
    axes[1].imshow(mask.detach().cpu().numpy(), cmap="gray", extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    for (row, col), (new_row, new_col) in zip(seeds.tolist(), moved.tolist()):
        axes[1].plot(col, row, "o", mfc="none", mec="tab:red", ms=9)
        axes[1].plot(new_col, new_row, "x", color="tab:orange", ms=8)
        axes[1].annotate("", (new_col, new_row), (col, row), arrowprops={"arrowstyle": "->", "color": "tab:orange"})
    axes[1].set_title("mask, seeds (o) -> moved (x)", fontsize=9)
    parts = np.ma.masked_less(assignment.detach().cpu().numpy(), 0)
    axes[2].imshow(parts, cmap="tab10", vmin=0, vmax=9)
    axes[2].set_title("parts (Eqs. 9-11)", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_superpixels(images: torch.Tensor, segmentations: dict[str, torch.Tensor],
                     patches: torch.Tensor | None = None) -> Figure:
    """QGNet's local patches: (N, 3, H, W) images with the boundaries of each named (N, H, W) segmentation
    (e.g. SLIC, Felzenszwalb), one row per method, and optionally a last row of (N, 3, h, w) patch crops."""
    from skimage.segmentation import mark_boundaries

    rows = len(segmentations) + (patches is not None)
    count = len(images)
    fig, axes = plt.subplots(rows, count, figsize=(1.9 * count, 2.0 * rows), squeeze=False)
    for row, (name, segments) in enumerate(segmentations.items()):
        for column in range(count):
            labels = segments[column].detach().cpu().numpy()
            axes[row, column].imshow(mark_boundaries(_image(images[column]), labels, color=(1, 1, 0)))
            axes[row, column].set_title(f"{name}: {len(np.unique(labels))} segments", fontsize=8)
    if patches is not None:
        for column in range(count):
            axes[-1, column].imshow(_image(patches[column]))
            axes[-1, column].set_title("a patch as input", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
