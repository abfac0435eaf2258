"""Matplotlib figures for episodes, predictions and training curves (each function returns a figure).

One convention throughout: a given mask (a support's, a query's ground truth) is outlined in its class's colour
over a white edge (:func:`outline`), and a model's output (a prediction, a pseudo mask) is a tint of that colour
over the image drawn in grey levels (:func:`overlay`), so that a tint shows on an object of any colour."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from fsslib.data.episodes import IGNORE, Episode


def _image(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) for imshow."""
    return tensor.detach().float().permute(1, 2, 0).clamp(0, 1).cpu().numpy()


COLUMN_INCHES = 8.5  # a notebook column at 100 dpi: no figure is wider, so nothing is scaled down to unreadable text
EPISODE_TITLE_POINTS = 8  # every panel title of an episode figure (supports, query, predictions), two or three lines


def _grid(panels: int, most: int) -> tuple[int, int]:
    """(rows, columns) for ``panels`` panels, at most ``most`` per row, the rows as even as they can be."""
    rows = -(-panels // most)
    return rows, -(-panels // rows)


WAY_COLOURS = ((1.0, 0.2, 0.2), (0.2, 0.4, 1.0), (0.2, 0.8, 0.2), (1.0, 0.8, 0.1), (0.8, 0.3, 0.9))
IGNORE_GREY = (0.75, 0.75, 0.75)


def episode_title(class_names: Sequence[str], support_mode: str, what: str = "") -> str:
    """A figure title naming the episode's class(es) and what its supports bring, e.g.
    ``"query of 'dotted star' · supports: pixel masks"``."""
    classes = ", ".join(f"'{name}'" for name in class_names)
    return f"{what + ' · ' if what else ''}{classes} · supports: {support_mode}"


def absent_ways(episode: Episode) -> str:
    """For an N-way episode, the note `` · not in the query: 'name'`` naming the ways whose class the query does
    not hold (an N-way query holds at least one way's class, not every one); empty when it holds them all."""
    present = set(episode.query_label.unique().tolist())
    missing = [name for way, name in enumerate(episode.class_names, start=1) if way not in present]
    return f" · not in the query: {', '.join(repr(name) for name in missing)}" if missing else ""


LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601's weights of red, green and blue in a grey level


def overlay(image: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5, grey: bool = True) -> np.ndarray:
    """Blend a mask (H, W) over an image (3, H, W), by default drawn in grey levels so that the tint is the
    panel's only colour and reads on an object of its own colour: value n (1..N) in way n's colour; ignored
    pixels are lightened (``alpha=0, grey=False``: only they change)."""
    picture = _image(image)  # (H, W, 3)
    if grey:
        picture = np.repeat(picture @ np.asarray(LUMINANCE, dtype=np.float32)[:, None], 3, axis=2)
    mask = mask.detach().cpu().numpy()
    blended = picture.copy()
    for value, tint in enumerate(WAY_COLOURS, start=1):
        blended[mask == value] = (1 - alpha) * picture[mask == value] + alpha * np.asarray(tint)
    blended[mask == IGNORE] = 0.5 * picture[mask == IGNORE] + 0.25
    return blended


def label_legend(class_names: Sequence[str], ignore: bool = False, tinted: bool = True) -> list[Patch]:
    """Legend entries of a figure's masks, each class in way n's colour: its outline (a given mask) and, when a
    panel is ``tinted`` (a model's output), its tint, with the untinted background named first."""
    handles = [Patch(facecolor="none", edgecolor="0.4", label="background (no tint)")] if tinted else []
    handles += [Patch(facecolor=(*WAY_COLOURS[n], 0.5) if tinted else "none", edgecolor=WAY_COLOURS[n], linewidth=1.6,
                      label=name) for n, name in enumerate(class_names)]
    return handles + ([Patch(color=IGNORE_GREY, label="ignored (255)")] if ignore else [])


def outline(ax: Axes, mask: torch.Tensor, ways: int, only: int | None = None) -> None:
    """Draw the boundary of the ground truth (H, W) on ``ax``, way n in its colour over a white edge, so that it
    stands out from a prediction tinted in the same colour (the panel's pixels are the mask's). ``only``: draw
    value 1 of a binary mask (a support's) in way ``only``'s colour."""
    truth = mask.detach().cpu().numpy()
    if only is not None:
        truth = np.where(truth == 1, only, 0)
    for way in range(1, ways + 1) if only is None else (only,):
        if (truth == way).any():
            for colour, width in (("white", 3.0), (WAY_COLOURS[way - 1], 1.6)):  # the edge first, the way's line on it
                ax.contour((truth == way).astype(float), levels=[0.5], colors=[colour], linewidths=width)


def mark_patch(figure: Figure, patch: int, grid: tuple[int, int], panels: Sequence[str] | None = None) -> None:
    """Box the token ``patch`` (its index, row by row, on a ``grid`` of (h, w) tokens) on the figure's panels titled
    ``panels`` (default: every panel drawn over the image's pixels, as :func:`plot_maps` draws them), white over a
    black edge so that the box shows on any colour."""
    row, column = divmod(int(patch), grid[1])
    for ax in figure.axes:
        if not ax.images or ax.get_label() == "<colorbar>" or (panels is not None and ax.get_title() not in panels):
            continue
        left, right, bottom, top = ax.images[0].get_extent()  # pixel edges: (-0.5, W - 0.5, H - 0.5, -0.5)
        width, height = (right - left) / grid[1], (bottom - top) / grid[0]
        for colour, line in (("black", 3.0), ("white", 1.5)):
            ax.add_patch(Rectangle((left + column * width, top + row * height), width, height, fill=False,
                                   edgecolor=colour, linewidth=line))


def _resized_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(h, w) labels at (H, W) by nearest neighbour (a prediction at feature size over the image)."""
    if tuple(labels.shape) == size:
        return labels
    return torch.nn.functional.interpolate(labels[None, None].float(), size, mode="nearest")[0, 0].long()


def plot_episode(episode: Episode, prediction: torch.Tensor | None = None, title: str | None = None,
                 support_mode: str = "pixel masks", masks_read: bool = True) -> Figure:
    """One row per way: its supports with their masks outlined in the way's colour; then the query with its
    ground truth outlined and optionally a prediction (values 0..N, each way's tint in its colour over the query
    in grey levels, legend below).
    The title names the classes and ``support_mode`` (what the method read of the supports). With
    ``masks_read=False`` (a method that reads no support mask) the supports are drawn without their masks and
    their titles say so."""
    ways, shots = episode.support_images.shape[:2]
    columns = shots + 1 + (prediction is not None)
    width = min(2.2, COLUMN_INCHES / columns)
    narrow = width < 1.9  # two-line titles, so that they do not run into each other
    fig, axes = plt.subplots(ways, columns, figsize=(width * columns, (width + 0.6 if narrow else 2.5) * ways + 0.5),
                             squeeze=False, layout="constrained")
    for ax in axes[1:, shots:].flat:  # the query's panels stand in the first row only
        ax.remove()
    sep = "\n" if narrow else ", "
    for way in range(ways):
        for k in range(shots):
            axes[way, k].imshow(_image(episode.support_images[way, k]))
            if masks_read:
                outline(axes[way, k], episode.support_masks[way, k], ways, only=way + 1)
            unread = "" if masks_read else "\n(mask not read)"
            axes[way, k].set_title(f"{episode.class_names[way]}{sep}support {k + 1}{unread}",
                                   fontsize=EPISODE_TITLE_POINTS)
    axes[0, shots].imshow(overlay(episode.query_image, episode.query_mask, alpha=0.0, grey=False))  # in colour
    outline(axes[0, shots], episode.query_mask, ways)
    axes[0, shots].set_title(f"query{sep}truth outlined", fontsize=EPISODE_TITLE_POINTS)
    if prediction is not None:
        axes[0, shots + 1].imshow(overlay(episode.query_image, prediction))
        outline(axes[0, shots + 1], episode.query_mask, ways)
        axes[0, shots + 1].set_title(f"prediction{sep}truth outlined", fontsize=EPISODE_TITLE_POINTS)
    for ax in fig.axes:
        ax.axis("off")
    fig.suptitle(title or episode_title(episode.class_names, support_mode, f"{ways}-way {shots}-shot") + absent_ways(episode),
                 fontsize=10)
    fig.legend(handles=label_legend(episode.class_names, ignore=bool((episode.query_mask == IGNORE).any()),
                                    tinted=prediction is not None),
               loc="outside lower center", ncol=ways + 2, fontsize=7, frameon=False)
    return fig


def plot_maps(image: torch.Tensor, maps: dict[str, torch.Tensor], mask: torch.Tensor | None = None, *,
              title: str, labels: dict[str, torch.Tensor] | None = None, class_names: Sequence[str] = (),
              limits: tuple[float, float] | None = None, outlined: str = "truth") -> Figure:
    """An image (3, H, W) and, side by side, named continuous score maps (h, w) each with a colorbar of
    its range (e.g. priors), or of ``limits`` shared by every map (e.g. (0, 1) for probabilities, so that
    one colour is one value on every panel), then named label maps (h, w) with values 0..N (a prediction,
    a pseudo mask) tinted over the image in grey levels, with a legend of ``class_names``. The ground truth
    ``mask`` (H, W), values 0..N and 255, is outlined on every panel; the titles of the first panel and of the
    tinted panels name it ``outlined`` (e.g. "support mask" when the image is a support). ``title`` names the
    class(es) and the support mode (:func:`episode_title`)."""
    labels = labels or {}
    size = tuple(image.shape[-2:])
    if mask is not None and tuple(mask.shape) != size:
        raise ValueError(f"the ground truth is {tuple(mask.shape)} but the image is {size}: pass the mask at the "
                         "image's size (an episode's query_mask, not its query_label)")
    panels = 1 + len(maps) + len(labels)
    rows, columns = _grid(panels, 4)
    width = min(2.45, COLUMN_INCHES / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, 3.0 * rows * width / 2.45), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[panels:]:
        ax.remove()
    axes = axes.flat[:panels]
    ways = max(len(class_names), 1)
    axes[0].imshow(_image(image))
    axes[0].set_title("image" + (f", {outlined} outlined" if mask is not None else ""), fontsize=9)
    for ax, (name, values) in zip(axes[1:], maps.items()):
        values = values.detach().float().cpu().numpy()
        low, high = float(values.min()), float(values.max())
        shown = ax.imshow(values, cmap="viridis", extent=(-0.5, size[1] - 0.5, size[0] - 0.5, -0.5),
                          **({"vmin": limits[0], "vmax": limits[1]} if limits else {}))
        colorbar = fig.colorbar(shown, ax=ax, shrink=0.75,
                                ticks=list(limits) if limits else [low, high] if high > low else [low])
        colorbar.ax.tick_params(labelsize=7)
        colorbar.ax.yaxis.set_major_formatter(lambda value, _: f"{value:.2g}")  # the range's ends, no noise digits
        ax.set_title(name, fontsize=9)  # the panel's title names the map its colorbar reads
    for ax, (name, values) in zip(axes[1 + len(maps):], labels.items()):
        ax.imshow(overlay(image, _resized_labels(values.detach().long().cpu(), size)))
        # a tint and an outline of one colour told apart
        ax.set_title(name + (f"\n{outlined} outlined" if mask is not None else ""), fontsize=9)
    for ax in axes:
        if mask is not None:
            outline(ax, mask, ways)
        ax.axis("off")
    if labels or mask is not None:
        fig.legend(handles=label_legend(class_names or ["foreground"], tinted=bool(labels)), loc="outside lower center",
                   ncol=len(class_names) + 1 or 2, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
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
    fig, ax = plt.subplots(figsize=(min(1.2 * len(names) + 2, COLUMN_INCHES), 3))
    width = 0.4 if reference else 0.8
    ax.bar(positions, [metrics["per_class_iou"][n] for n in names], width, label=metrics["method"])
    if reference:
        ax.bar(positions + width, [reference["per_class_iou"].get(n, 0) for n in names], width, label=reference["method"])
    ax.set_xticks(positions + (width / 2 if reference else 0), names, rotation=20 if len(names) <= 6 else 60, fontsize=8,
                  ha="right")
    ax.set(xlabel="class (the fold's novel classes)", ylabel="IoU (%)")

    def setting(run: dict) -> str:
        return f"{run.get('ways', 1)}-way {run.get('shots')}-shot"

    same = reference is None or setting(reference) == setting(metrics)  # else the runs' names say their settings
    head = f"fold {metrics['fold']}" + (f", {setting(metrics)}" if same else "")
    scores = (f"mIoU {metrics['miou']:.1f}" if not reference else
              f"mIoU {metrics['method']} {metrics['miou']:.1f}, {reference['method']} {reference['miou']:.1f}")
    ax.set_title(f"{head}: {scores}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


MAX_LINES_PER_PANEL = 8  # more curves than this go into one panel per group (see plot_learning_curves)


LEGEND_POINTS = 9  # a learning curve's legend: as large as its axis labels' ticks, the figure being 8 inches wide


def plot_learning_curves(curves: dict[str, list[dict]], title: str = "", x: str = "epoch", y: str = "val_miou",
                         ylabel: str = "validation mIoU (%)") -> Figure:
    """Validation mIoU per epoch of several runs (label -> ``log.jsonl`` records), one line each, with the
    last quarter of training shaded: a plateau is flat there. ``x`` / ``y`` name other record keys (e.g. a
    pretraining run's ``step`` and held-out ``knn_map``). More than :data:`MAX_LINES_PER_PANEL` runs are drawn
    in one panel per group, a group being the runs whose labels agree up to ``-fold`` (a grid's method and
    variant, its folds as thin lines), on a shared y axis, unless no two runs share a group; a panel whose runs
    share their x positions also draws their mean (black) and range (grey band)."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for label, history in curves.items():
        groups.setdefault(label.split("-fold")[0], {})[label] = history
    if len(curves) <= MAX_LINES_PER_PANEL or len(groups) == len(curves):  # few runs, or no group of several: one panel
        groups = {"": dict(curves)}
    columns = min(len(groups), 4)
    rows = -(-len(groups) // columns)
    single = len(groups) == 1
    legend_rows = (len(curves) + 2) // 2 if single else 0
    fig, axes = plt.subplots(rows, columns, figsize=(8 if single else min(3.2 * columns, COLUMN_INCHES), (3.5 + 0.16 * legend_rows) if single
                                                     else 2.6 * rows + 0.6),
                             layout="constrained", sharey=not single, squeeze=False)
    for ax, (group, members) in zip(axes.flat, groups.items()):
        longest = 0
        for label, history in members.items():
            positions = [h[x] for h in history]
            ax.plot(positions, [h[y] for h in history], marker="." if single else None, lw=1.5 if single else 0.8,
                    alpha=1.0 if single else 0.6, label=label if single else label[len(group):].strip("-") or label)
            longest = max(longest, positions[-1] if positions else 0)
        shared = {tuple(h[x] for h in history) for history in members.values()}
        if not single and len(members) > 1 and len(shared) == 1:
            values = np.array([[h[y] for h in history] for history in members.values()], dtype=float)  # (runs, points)
            positions = list(next(iter(shared)))
            ax.fill_between(positions, values.min(axis=0), values.max(axis=0), color="0.75", alpha=0.5, lw=0, label="range")
            ax.plot(positions, values.mean(axis=0), color="black", lw=1.6, label="mean")
        ax.axvspan(0.75 * longest, longest, color="0.9", zorder=0, label="last quarter" if single else None)
        ax.set(xlabel=x, title=group if not single else title)
        if not single:
            ax.legend(fontsize=LEGEND_POINTS - 1)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    if single:
        fig.legend(loc="outside lower center", fontsize=LEGEND_POINTS, ncol=2)
    else:
        fig.suptitle(f"{title} (last quarter of training shaded)" if title else "last quarter of training shaded", fontsize=10)
    return fig


def plot_part_prototypes(image: torch.Tensor, mask: torch.Tensor, seeds: torch.Tensor, moved: torch.Tensor,
                         assignment: torch.Tensor, class_name: str = "") -> Figure:
    """DPS on one support (LFSS Eqs. 6-11): the image with its (h, w) bool mask, the seeds placed by
    the distance transform (circles) and moved towards the query (crosses), each (S, 2) (row, col)
    on the feature grid, and the (h, w) part each masked cell is assigned to (-1 outside the mask) on the same
    black grid, its colours named in a legend that lists the empty parts too; seed i, its move and part i share
    one colour. ``class_name`` titles the support."""
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7))
    height, width = mask.shape
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    colours = plt.get_cmap("tab10")
    axes[0].imshow(_image(image))
    axes[0].set_title(f"support: {class_name}" if class_name else "support", fontsize=9)
    for ax in axes[1:]:
        ax.imshow(mask.detach().cpu().numpy(), cmap="gray", extent=extent)
    for part, ((row, col), (new_row, new_col)) in enumerate(zip(seeds.tolist(), moved.tolist())):
        axes[1].plot(col, row, "o", mfc="none", mec=colours(part), mew=2, ms=9)
        axes[1].plot(new_col, new_row, "x", color=colours(part), mew=2, ms=8)
        axes[1].annotate("", (new_col, new_row), (col, row), arrowprops={"arrowstyle": "->", "color": colours(part)})
    axes[1].set_title("mask, seeds (o) -> moved (x)", fontsize=9)
    parts = np.ma.masked_less(assignment.detach().cpu().numpy(), 0)
    axes[2].imshow(parts, cmap="tab10", vmin=0, vmax=9, extent=extent)  # part p in tab10's colour p, as seed p
    axes[2].set_title("parts: nearest prototype\n(Eq. 10 without position)", fontsize=9)
    used = set(np.unique(parts.compressed()).tolist())
    count = max(len(seeds), max(used, default=-1) + 1)
    legend = [Patch(color=colours(part), label=f"part {part + 1}" + ("" if part in used else " (empty)"))
              for part in range(count)]
    axes[2].legend(handles=legend, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


SUPERPIXEL_ZOOM = 4  # plot_superpixels draws its boundaries on the image enlarged this many times


def plot_superpixels(images: torch.Tensor, segmentations: dict[str, torch.Tensor],
                     patches: torch.Tensor | None = None, title: str = "") -> Figure:
    """QGNet's local patches: (N, 3, H, W) images with the boundaries of each named (N, H, W) segmentation
    (e.g. SLIC, Felzenszwalb), one row per method, and optionally a last row of (N, 3, h, w) patch crops;
    ``title`` (e.g. the settings) above them. A boundary is drawn white inside a black outline, on the image
    enlarged ``SUPERPIXEL_ZOOM`` times (nearest neighbour), so that it shows on an object of any colour."""
    from skimage.segmentation import mark_boundaries

    rows = len(segmentations) + (patches is not None)
    count = len(images)
    width = min(2.6, COLUMN_INCHES / count)  # 3 images fill a notebook column
    fig, axes = plt.subplots(rows, count, figsize=(width * count + 0.3, (width + 0.1) * rows), squeeze=False)
    for row, (name, segments) in enumerate(segmentations.items()):
        axes[row, 0].text(-0.08, 0.5, name, rotation=90, ha="right", va="center", fontsize=9,
                          transform=axes[row, 0].transAxes)
        for column in range(count):
            labels = segments[column].detach().cpu().numpy()
            zoomed = [np.repeat(np.repeat(array, SUPERPIXEL_ZOOM, axis=0), SUPERPIXEL_ZOOM, axis=1)
                      for array in (_image(images[column]), labels)]
            axes[row, column].imshow(mark_boundaries(*zoomed, color=(1, 1, 1), outline_color=(0, 0, 0)))
            axes[row, column].set_title(f"{len(np.unique(labels))} segments", fontsize=8)
    if patches is not None:
        for column in range(count):
            axes[-1, column].imshow(_image(patches[column]))
            axes[-1, column].set_title("patch (input)", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_contrastive_logits(positive: torch.Tensor, negatives: torch.Tensor, temperature: float,
                            title: str = "", item: str = "item", queue_symbol: str = "M") -> Figure:
    """One InfoNCE term per row (QGNet Eqs. 1 and 6, MoCo's loss): the cosine of each query to its positive key
    (B,) and to the queue's negatives (B, M), with the row's loss ``-log softmax(cosines / temperature)[positive]``
    written at its right; rows are named ``"<item> <i>"`` (e.g. scene, patch); the title gives the mean loss
    beside chance, ``log(1 + M)``, the queue's size written as ``queue_symbol`` (QGNet: K for the global loss's
    image queue, M for the local loss's patch queue)."""
    positive, negatives = positive.detach().float().cpu(), negatives.detach().float().cpu()
    logits = torch.cat([positive[:, None], negatives], dim=1) / temperature
    losses = -logits.log_softmax(dim=1)[:, 0]
    rows, queue = negatives.shape
    fig, ax = plt.subplots(figsize=(min(7.5, COLUMN_INCHES), 0.42 * rows + 1.5), layout="constrained")
    jitter = torch.Generator().manual_seed(0)
    for row in range(rows):
        offsets = (torch.rand(queue, generator=jitter) - 0.5) * 0.4
        ax.scatter(negatives[row], row + offsets, s=5, color="0.6", label="negatives: the queue's keys" if row == 0 else None)
        ax.scatter(positive[row], row, s=60, marker="D", color="tab:red", zorder=3,
                   label="positive: the other view's key" if row == 0 else None)
        ax.text(1.02, row, f"loss {float(losses[row]):.2f}", transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.set_yticks(range(rows), [f"{item} {row}" for row in range(rows)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("cosine q . k (unit vectors)")
    chance = float(torch.log(torch.tensor(1.0 + queue)))
    ax.set_title(f"{title}{' · ' if title else ''}mean loss {float(losses.mean()):.2f}, "
                 f"chance log(1 + {queue_symbol}) = {chance:.2f} ({queue_symbol} = {queue})", fontsize=9)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return fig


def plot_pretraining_losses(losses: dict[str, list[float]], chance: dict[str, float] | float,
                            queue_full: int | None = None, title: str = "") -> Figure:
    """Each named loss per optimiser step (from 1), with its chance level (``log(1 + M)``, dashed, same colour;
    one number: a single black line for every loss, whose queues hold as many keys) and the step at which the
    queues hold only real keys (``queue_full``, a grey line)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
    if not isinstance(chance, dict):
        ax.axhline(chance, color="black", linestyle="--", linewidth=1, label="chance, log(1 + queue size), every loss")
    for index, (name, values) in enumerate(losses.items()):
        colour = f"C{index}"
        ax.plot(range(1, len(values) + 1), values, marker=".", color=colour, label=name)
        if isinstance(chance, dict) and name in chance:
            ax.axhline(chance[name], color=colour, linestyle="--", linewidth=1, label=f"chance, {name}")
    if queue_full is not None:
        ax.axvline(queue_full, color="0.5", linewidth=1, label="queue holds only real keys from here")
    ax.set(xlabel="optimiser step", ylabel="InfoNCE loss", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_region_recall(statistics: dict[str, dict], title: str = "",
                       reported: dict[str, tuple] | None = None) -> Figure:
    """QGNet's Table VII: per region map (``name -> RegionMapMeter.summary()``, e.g. from
    :func:`fsslib.methods.qgnet.region_map_statistics`), the share of object pixels in ``[V > threshold]``
    (recall, Eq. 16, solid) and of background pixels (dashed), against the threshold. ``reported``: a paper's
    recall rows, ``label -> (thresholds, recall in %)`` (e.g. :data:`fsslib.papers.QGNET_PRIOR_RECALL`), drawn
    in grey, dotted."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    for index, (name, summary) in enumerate(statistics.items()):
        colour = f"C{index}"
        ax.plot(summary["thresholds"], summary["recall"], marker="o", color=colour, label=f"{name}: object pixels (recall)")
        ax.plot(summary["thresholds"], summary["background_share"], marker="x", linestyle="--", color=colour,
                label=f"{name}: background pixels")
    for label, (thresholds, recall) in (reported or {}).items():
        ax.plot(thresholds, recall, marker="s", linestyle=":", color="0.45", label=label)
    ax.set(xlabel="threshold alpha of R = [V > alpha]", ylabel="pixels inside R (%)", ylim=(0, 102), title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower left")
    return fig


def plot_toy_and_paper(toy: dict[str, dict[str, float]], paper: dict[str, dict[str, float]], toy_title: str,
                       paper_title: str, ylabel: str = "mIoU (%)") -> Figure:
    """A method against its baseline twice, side by side: on the toy tier (left) and as its paper reports on
    PASCAL-5i (right). Each is ``method -> {setting: mIoU}`` (e.g. ``{"QGNet": {"1-shot": 63.3}}``); bars per
    setting, one colour per method, the value on each bar. The two panels share no axis: the numbers come
    from different worlds."""
    fig, axes = plt.subplots(1, 2, figsize=(min(8.0, COLUMN_INCHES), 3.6), layout="constrained")
    methods = list(dict.fromkeys([*toy, *paper]))
    for ax, values, name in ((axes[0], toy, toy_title), (axes[1], paper, paper_title)):
        settings = list(dict.fromkeys(s for method in values.values() for s in method))
        width = 0.8 / len(methods)
        for index, method in enumerate(methods):
            heights = [values.get(method, {}).get(s, np.nan) for s in settings]
            bars = ax.bar(np.arange(len(settings)) + index * width, heights, width, color=f"C{index}",
                          label=method if ax is axes[0] else None)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(np.arange(len(settings)) + width * (len(methods) - 1) / 2, settings, fontsize=8)
        top = max(v for method in values.values() for v in method.values())
        ax.set(ylim=(0, top * 1.15), ylabel=ylabel)
        ax.set_title(name, fontsize=9)
    fig.legend(loc="outside lower center", ncol=len(methods), fontsize=8, frameon=False)
    return fig


def plot_comparison(table: list[dict], settings: Sequence[str], folds: str = "mean over the 4 folds") -> Figure:
    """Grouped bars of the methods' mIoU per setting (rows of :func:`fsslib.compare.comparison_table`, whose
    columns are ``"<setting> mIoU"``, e.g. ``"1-way 1-shot mIoU"``); ``folds`` names the folds they cover (:func:`fsslib.compare.folds_text`)."""
    positions = np.arange(len(table))
    width = 0.8 / len(settings)
    fig, ax = plt.subplots(figsize=(min(max(6.0, 1.1 * len(table) + 2.5), COLUMN_INCHES), 3.5), layout="constrained")
    for i, setting in enumerate(settings):
        values = [np.nan if row.get(f"{setting} mIoU") is None else row[f"{setting} mIoU"] for row in table]
        ax.bar(positions + i * width, values, width, label=setting)
    ax.set_xticks(positions + width * (len(settings) - 1) / 2, [row["method"] for row in table], rotation=25, fontsize=8,
                  ha="right")
    ax.set(ylabel=f"mIoU (%), {folds}", title="the methods on the same test episodes")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_support_modes(matrix: list[dict], modes: Sequence[str]) -> Figure:
    """The support-mode matrix (rows of :func:`fsslib.compare.support_mode_matrix`): mIoU per method and mode,
    blank where a method cannot read a mode."""
    values = np.array([[np.nan if row[m] is None else row[m] for m in modes] for row in matrix], dtype=float)
    fig, ax = plt.subplots(figsize=(min(1.3 * len(modes) + 2.5, COLUMN_INCHES), 0.45 * len(matrix) + 1.8),
                           layout="constrained")
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if value < np.nanmean(values) else "black")
    ax.set_xticks(range(len(modes)), modes, rotation=20, fontsize=8, ha="right")
    ax.set_yticks(range(len(matrix)), [row["method"] for row in matrix], fontsize=8)
    fig.colorbar(image, ax=ax, label="1-way 1-shot mIoU (%)")
    return fig


def plot_strata(rows: list[dict], ylabel: str = "mIoU (%)") -> Figure:
    """mIoU with its bootstrap interval per stratum and method, one panel per grouping (rows of
    :func:`fsslib.compare.strata_table`, or differences from :func:`fsslib.compare.strata_differences`, drawn
    around a zero line)."""
    groupings = list(dict.fromkeys(row["grouping"] for row in rows))
    methods = list(dict.fromkeys(row["method"] for row in rows))
    grid_rows, columns = _grid(len(groupings), 3)
    fig, axes = plt.subplots(grid_rows, columns, figsize=(min(3.2 * columns, COLUMN_INCHES), 3.3 * grid_rows + 0.3),
                             layout="constrained", squeeze=False)
    for ax in axes.flat[len(groupings):]:
        ax.remove()
    axes = axes.flat[:len(groupings)]
    width = 0.8 / len(methods)
    for ax, grouping in zip(axes, groupings):
        strata = list(dict.fromkeys(row["stratum"] for row in rows if row["grouping"] == grouping))
        for i, method in enumerate(methods):
            mine = {row["stratum"]: row for row in rows if row["grouping"] == grouping and row["method"] == method}
            found = [s for s in strata if s in mine]
            x = np.array([strata.index(s) for s in found]) + i * width
            centre = np.array([mine[s]["miou"] for s in found])
            errors = np.array([[c - mine[s]["low"], mine[s]["high"] - c] for s, c in zip(found, centre)]).T
            ax.bar(x, centre, width, yerr=errors.reshape(2, -1), capsize=1.5, label=method if ax is axes[0] else None)
        ax.set_xticks(np.arange(len(strata)) + width * (len(methods) - 1) / 2, strata, fontsize=7)
        ax.set_title(grouping, fontsize=9)
        if any(row["low"] < 0 for row in rows):  # differences: zero is the baseline
            ax.axhline(0, color="black", linewidth=0.6)
    for ax in axes[::columns]:
        ax.set_ylabel(ylabel)
    fig.legend(loc="outside lower center", fontsize=7, ncol=min(len(methods), 5))
    return fig


def signed(value: float, decimals: int = 1) -> str:
    """A difference with its sign, for a label or a printed line: ``+2.5``, ``-1.0``, and ``+0.0`` for a value that
    rounds to zero from either side (never ``-0.0``)."""
    text = f"{value:+.{decimals}f}"
    return "+" + text[1:] if float(text) == 0 else text


def plot_bootstrap(differences: torch.Tensor, interval: tuple[float, float], observed: float, label: str) -> Figure:
    """The bootstrap distribution of a difference of two mIoUs (R,), in points, with its central interval, the
    difference measured on the episodes themselves and zero: the paired bootstrap of lesson 08."""
    fig, ax = plt.subplots(figsize=(COLUMN_INCHES * 0.6, 3.0), layout="constrained")
    ax.hist(differences.numpy(), bins=40, color="0.7", label=f"{len(differences)} resamples")
    ax.axvspan(*interval, color="tab:blue", alpha=0.15,
               label=f"95% interval [{signed(interval[0])}, {signed(interval[1])}]")
    ax.axvline(observed, color="tab:blue", label=f"measured {signed(observed)}")
    ax.axvline(0, color="black", linewidth=0.8, linestyle="--", label="no difference")
    ax.set_xlabel(f"mIoU difference, {label} (points)")
    ax.set_ylabel("resamples")
    ax.legend(fontsize=7)
    return fig


def episode_iou(prediction: torch.Tensor, truth: torch.Tensor, ways: int) -> float:
    """One query's IoU in %: of way 1 (the foreground) at 1 way, else the mean over the ways that the prediction
    or the truth holds (a way in neither has no IoU); pixels labelled 255 are ignored, as in the metrics. The
    benchmark's mIoU is not a mean of these: it pools each class's pixels over all episodes first."""
    from fsslib.metrics import intersection_union

    counts = intersection_union(prediction, truth, ways)[1:]  # (N, 2): [I, U] of each way
    held = counts[:, 1] > 0
    return 100 * float((counts[held, 0] / counts[held, 1]).mean()) if bool(held.any()) else 100.0


def plot_side_by_side(episode: Episode, predictions: dict[str, torch.Tensor], support_modes: dict[str, str],
                      masks_read: bool = True) -> Figure:
    """One episode's first support of each way (its mask outlined in the way's colour), its query (its ground
    truth outlined) and every method's prediction (values 0..N, at the model's input size, tinted over the query
    in grey levels, the truth outlined), each prediction's panel titled with the method, its IoU on this query
    (:func:`episode_iou`) and what it read of the supports (``support_modes``, as the episodes' titles say it:
    "supports: pixel masks"); the figure's title names the class(es), ways and shots. With ``masks_read=False``
    (no method drawn reads a support mask) the supports are drawn without their masks and their titles say so."""
    ways, shots = episode.support_images.shape[:2]
    panels = ways + 1 + len(predictions)
    rows, columns = _grid(panels, 4)
    fig, axes = plt.subplots(rows, columns, figsize=(min(2.2 * columns, COLUMN_INCHES), 2.5 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[panels:]:
        ax.remove()
    axes = axes.flat[:panels]
    for way, ax in enumerate(axes[:ways]):
        ax.imshow(_image(episode.support_images[way, 0]))
        if masks_read:
            outline(ax, episode.support_masks[way, 0], ways, only=way + 1)
        of = f" 1 of {shots}" if shots > 1 else ""
        mask = "mask outlined" if masks_read else "mask not read"
        ax.set_title(f"support{of}: {episode.class_names[way]}\n{mask}", fontsize=EPISODE_TITLE_POINTS)
    query = axes[ways]
    query.imshow(overlay(episode.query_image, episode.query_mask, alpha=0.0, grey=False))  # in colour
    outline(query, episode.query_mask, ways)
    query.set_title("query, truth outlined", fontsize=EPISODE_TITLE_POINTS)
    size = tuple(episode.query_image.shape[-2:])
    for ax, (method, prediction) in zip(axes[ways + 1:], predictions.items()):
        resized = _resized_labels(prediction.detach().long().cpu(), size)
        ax.imshow(overlay(episode.query_image, resized))
        outline(ax, episode.query_mask, ways)
        scored = f"{method}\n{'IoU' if ways == 1 else 'mean IoU'} {episode_iou(resized, episode.query_mask, ways):.0f}%"
        ax.set_title(f"{scored}\nsupports: {support_modes[method]}" if method in support_modes else scored,
                     fontsize=EPISODE_TITLE_POINTS)
    for ax in axes:
        ax.axis("off")
    classes = ", ".join(f"'{name}'" for name in episode.class_names)
    fig.suptitle(f"{classes} · {ways}-way {shots}-shot{absent_ways(episode)} · truth outlined on each prediction",
                 fontsize=10)
    fig.legend(handles=label_legend(episode.class_names, ignore=bool((episode.query_mask == IGNORE).any())),
               loc="outside lower center", ncol=ways + 2, fontsize=7, frameon=False)
    return fig


def plot_prediction(image: torch.Tensor, prediction: torch.Tensor, class_names: Sequence[str], title: str = "",
                    truth: torch.Tensor | None = None, outlined: str = "truth") -> Figure:
    """A query (3, H, W) and its prediction (H, W) (0 = background, n = way n) over it, with a legend of the
    class names (:mod:`fsslib.predict`'s overlay); a ground truth ``truth`` (H, W), values 0..N and 255, is
    outlined on both panels, as in the lessons' other figures, and the panels' titles name it ``outlined``
    (e.g. "rule-made mask" for a mask that is not a ground truth)."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8), layout="constrained")
    axes[0].imshow(_image(image))
    axes[1].imshow(overlay(image, prediction))
    for ax, name in zip(axes, ("query", "prediction")):
        if truth is not None:
            outline(ax, truth, len(class_names))
        ax.set_title(name + (f", {outlined} outlined" if truth is not None else ""), fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.legend(handles=label_legend(class_names), loc="outside lower center", ncol=len(class_names) + 1, fontsize=8,
               frameon=False)
    return fig


DIAGRAM_COLOURS = {"input": "#dbe9f6", "frozen": "#e8e8e8", "trained": "#fde2c4", "output": "#d5f0d5", "prior": "#efe0f7"}


def plot_diagram(boxes: dict[str, tuple[float, float, str]], arrows: Sequence[tuple[str, str] | tuple[str, str, str]],
                 title: str = "", size: tuple[float, float] = (COLUMN_INCHES, 3.2)) -> Figure:
    """A method's block diagram: ``boxes`` maps a label to ``(x, y, kind)`` in [0, 1] axes units, kind one of
    ``DIAGRAM_COLOURS`` (input, frozen, trained, output, prior); ``arrows`` are ``(from, to)`` or ``(from, to,
    label)`` between box labels. The legend names the kinds that appear (frozen = not trained)."""
    unknown_kinds = {kind for _, _, kind in boxes.values()} - set(DIAGRAM_COLOURS)
    if unknown_kinds:
        raise ValueError(f"unknown box kinds {sorted(unknown_kinds)}; use {list(DIAGRAM_COLOURS)}")
    missing = {end for arrow in arrows for end in arrow[:2]} - set(boxes)
    if missing:
        raise ValueError(f"arrows name boxes that are not drawn: {sorted(missing)}")
    figure, ax = plt.subplots(figsize=size)
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    style = dict(boxstyle="round,pad=0.4", linewidth=1.0, edgecolor="#555555")
    drawn = {label: ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=3,
                            bbox={**style, "facecolor": DIAGRAM_COLOURS[kind]})
             for label, (x, y, kind) in boxes.items()}
    for arrow in arrows:
        start, end = boxes[arrow[0]][:2], boxes[arrow[1]][:2]
        # drawn after the boxes and clipped to their outlines, so that each head shows whatever a box's width
        ax.annotate("", xy=end, xytext=start, zorder=4,
                    arrowprops=dict(arrowstyle="-|>", color="#444444", shrinkA=2, shrinkB=2, linewidth=1.0,
                                    patchA=drawn[arrow[0]].get_bbox_patch(), patchB=drawn[arrow[1]].get_bbox_patch()))
        if len(arrow) == 3:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.04, arrow[2], ha="center", fontsize=8,
                    color="#333333", zorder=5)
    kinds = [kind for kind in DIAGRAM_COLOURS if any(k == kind for _, _, k in boxes.values())]
    ax.legend(handles=[Patch(facecolor=DIAGRAM_COLOURS[k], edgecolor="#555555", label=k) for k in kinds],
              loc="lower center", bbox_to_anchor=(0.5, -0.08), ncol=len(kinds), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.canvas.draw()  # places the boxes, at which the arrows end (patchB): each arrow's head shows at its box's edge
    return figure


def plot_toy_beside_paper(rows: Sequence[dict], toy_label: str, paper_label: str, title: str = "") -> Figure:
    """Each method's toy-tier number beside the number its paper reports on the paper's benchmark, as paired
    horizontal bars with their values written at their ends. ``rows``: ``{"method", "toy", "paper"}`` dicts, top
    to bottom (``paper`` None where no paper reports the method; an optional ``"mark"``, e.g. ``"*"``, is written
    after the paper's value, for a number that is not comparable). ``toy_label`` and ``paper_label`` say what the
    two numbers are (tier, folds, setting, benchmark) in the legend."""
    fig, ax = plt.subplots(figsize=(COLUMN_INCHES, 0.45 * len(rows) + 1.3), layout="constrained")
    height, top = 0.4, max([row["toy"] for row in rows] + [row["paper"] for row in rows if row.get("paper") is not None])
    positions = range(len(rows) - 1, -1, -1)  # the first row on top
    ax.barh([p + height / 2 for p in positions], [row["toy"] for row in rows], height, color="tab:blue", label=toy_label)
    reported = [(p, row) for p, row in zip(positions, rows) if row.get("paper") is not None]
    ax.barh([p - height / 2 for p, _ in reported], [row["paper"] for _, row in reported], height, color="tab:orange",
            hatch="//", edgecolor="white", label=paper_label)
    for p, row in zip(positions, rows):
        ax.text(row["toy"] + 0.01 * top, p + height / 2, f"{row['toy']:.1f}", va="center", fontsize=7)
    for p, row in reported:
        ax.text(row["paper"] + 0.01 * top, p - height / 2, f"{row['paper']:.1f}{row.get('mark', '')}", va="center",
                fontsize=7)
    ax.set_yticks(list(positions), [row["method"] for row in rows], fontsize=8)
    ax.set(xlim=(0, 1.12 * top), xlabel="mIoU (%)")
    ax.legend(loc="best", fontsize=7)  # where it covers the fewest bars and values
    if title:
        ax.set_title(title, fontsize=10)
    return fig
