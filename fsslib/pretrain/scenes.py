"""Pools of toy scenes for pretraining, rendered from seeded random streams.

Scene ``index`` of a pool is drawn from ``np.random.default_rng([seed, stream, index])``:
a pure function of the three numbers, so a pool re-renders identically anywhere and one
index never depends on another. Each stand-in picks its own ``stream``; the materialised
splits use 0-2 (``fsslib.data.toyworld.scene_rng``).

* :func:`render_scenes` -- the one renderer: images, masks and objects of ``count`` scenes
  (plain toy scenes, or whatever a ``draw`` function makes of the stream, e.g.
  :func:`object_centric_scene`: one object covering about 40% of the image).
* :class:`ScenePool` / :func:`render_pool` / :func:`cached_pool` -- the captioned training
  pool of contrastive stand-ins (the toy CLIP): 5% empty scenes, single- and multi-object
  scenes, random crops, and per feature cell how many pixels of each label it holds.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from fsslib.data.layout import IGNORE
from fsslib.paths import atomic_path, write_text
from fsslib.data.toyworld import CLASS_NAMES, ToyObject, ToyScene, render_scene, spatial_word

Draw = Callable[[np.random.Generator, int], ToyScene]  # (the scene's rng, its index) -> the scene


@dataclass
class Scenes:
    """Rendered scenes: images, class-index masks and the objects of each."""

    images: np.ndarray  # (N, S, S, 3) uint8
    masks: np.ndarray  # (N, S, S) uint8: 0 = background, 1..20 = class, 255 = ignored
    objects: list[list[ToyObject]]

    def present_classes(self) -> list[list[int]]:
        """The sorted class ids of each scene's objects."""
        return [sorted({o.class_id for o in objects}) for objects in self.objects]


def render_scenes(count: int, seed: int, stream: int, size: int = 64, draw: Draw | None = None,
                  progress: bool = False) -> Scenes:
    """``count`` scenes, scene ``index`` from ``default_rng([seed, stream, index])``.

    ``draw`` makes a scene of the rng and the index (default: a plain toy scene of 1-3
    random objects, ``render_scene(rng, size)``).
    """
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    masks = np.zeros((count, size, size), dtype=np.uint8)
    objects: list[list[ToyObject]] = []
    for index in tqdm(range(count), desc="render scenes", disable=not progress, mininterval=5):
        rng = np.random.default_rng([seed, stream, index])
        scene = draw(rng, index) if draw is not None else render_scene(rng, size)
        images[index], masks[index] = scene.image, scene.mask
        objects.append(scene.objects)
    return Scenes(images, masks, objects)


def to_unit_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)


# ----------------------------------------------------------------------------- the captioned pool

TRAIN_STREAM = 1  # the captioned pool: default_rng([seed, 1, index])


@dataclass
class ScenePool:
    """Pre-rendered training scenes: images, the class ids each caption may name, and how
    many pixels of each label every feature-grid cell holds (what crop captions are made of)."""

    images: np.ndarray  # (N, S, S, 3) uint8
    class_ids: list[list[int]]
    positions: list[list[str]]  # the spatial word of each object, for captions
    label_counts: np.ndarray  # (N, g, g, C + 2) uint8: background, classes 1..C, ignored


def patch_label_counts(mask: np.ndarray, stride: int = 8) -> np.ndarray:
    """Pixels per label in each stride x stride cell of a mask (S, S) -> (S/stride, S/stride, C + 2).

    Channel 0 is background, 1..C the classes, C + 1 the ignored pixels (value 255).
    """
    grid = mask.shape[0] // stride
    labels = np.where(mask == IGNORE, len(CLASS_NAMES) + 1, mask).astype(np.int64)
    one_hot = np.eye(len(CLASS_NAMES) + 2, dtype=np.uint8)[labels]  # (S, S, C + 2)
    return one_hot.reshape(grid, stride, grid, stride, -1).sum((1, 3), dtype=np.uint8)


def _crop(scene: ToyScene, rng: np.random.Generator, size: int) -> ToyScene | None:
    """A random crop (resized back to ``size``) with its mask and the objects mostly (>= 60%) inside it.

    Returns None when an object is cut ambiguously (15-60% inside). Pixels of objects
    left mostly outside (<= 15% inside) are marked ignored in the crop's mask.
    """
    side = int(rng.integers(int(size * 0.6), int(size * 0.9)))
    y0, x0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    inside_objects = []
    window = scene.mask[y0:y0 + side, x0:x0 + side].copy()
    for obj in scene.objects:
        fraction = (window == obj.class_id).sum() / max(1, (scene.mask == obj.class_id).sum())
        if 0.15 < fraction < 0.6:
            return None
        if fraction >= 0.6:
            y, x = obj.centre
            moved = ToyObject(obj.class_id, ((y - y0) * size / side, (x - x0) * size / side), obj.radius)
            inside_objects.append(moved)
    kept = [o.class_id for o in inside_objects]
    window[(window > 0) & ~np.isin(window, kept)] = IGNORE
    crop = Image.fromarray(scene.image[y0:y0 + side, x0:x0 + side]).resize((size, size), Image.BILINEAR)
    crop_mask = Image.fromarray(window).resize((size, size), Image.NEAREST)
    return ToyScene(np.asarray(crop), np.asarray(crop_mask), inside_objects)


def _training_scene(rng: np.random.Generator, size: int, crop_fraction: float, empty_fraction: float) -> ToyScene:
    """An empty scene (``empty_fraction``) or 1-3 objects (50/30/20%), cropped with ``crop_fraction``."""
    roll = rng.random()
    n_objects = 0 if roll < empty_fraction else int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    scene = render_scene(rng, size, class_ids=[int(c) for c in rng.integers(1, 21, size=n_objects)])
    if scene.objects and rng.random() < crop_fraction:
        for _ in range(5):
            cropped = _crop(scene, rng, size)
            if cropped is not None:
                return cropped
    return scene


OBJECT_CENTRIC_MARGIN = 1.2  # the crop's side over the object's larger bounding-box side


def object_centric_scene(rng: np.random.Generator, size: int = 64) -> ToyScene:
    """One object, cropped around it (a square of 1.2x its larger bounding-box side, at most the scene) and
    resized to ``size``: the object covers about 40% of the image (plain scenes: 15%), as in object-centric photos."""
    scene = render_scene(rng, size, n_objects=1)
    y0, x0, y1, x1 = scene.objects[0].bbox
    side = min(size, int(round(OBJECT_CENTRIC_MARGIN * max(y1 - y0, x1 - x0))))
    top = int(np.clip((y0 + y1 - side) // 2, 0, size - side))
    left = int(np.clip((x0 + x1 - side) // 2, 0, size - side))
    image = Image.fromarray(scene.image[top:top + side, left:left + side]).resize((size, size), Image.BILINEAR)
    mask = Image.fromarray(scene.mask[top:top + side, left:left + side]).resize((size, size), Image.NEAREST)
    return ToyScene(np.asarray(image), np.asarray(mask), scene.objects)


def render_pool(count: int, seed: int, size: int = 64, crop_fraction: float = 0.15,
                empty_fraction: float = 0.05, progress: bool = True) -> ScenePool:
    """Render ``count`` captioned training scenes from ``default_rng([seed, TRAIN_STREAM, index])``."""
    scenes = render_scenes(count, seed, TRAIN_STREAM, size, progress=progress,
                           draw=lambda rng, _: _training_scene(rng, size, crop_fraction, empty_fraction))
    label_counts = np.stack([patch_label_counts(mask) for mask in scenes.masks])  # (N, g, g, C + 2)
    class_ids = [[o.class_id for o in objects] for objects in scenes.objects]
    positions = [[spatial_word(o, size) for o in objects] for objects in scenes.objects]
    return ScenePool(scenes.images, class_ids, positions, label_counts)


def cached_pool(count: int, seed: int, size: int, folder: str | Path | None) -> ScenePool:
    """``render_pool`` through an optional on-disk cache (a .npz + .json per pool)."""
    if folder is None:
        return render_pool(count, seed, size)
    stem = Path(folder) / f"toy_pool_v2_seed{seed}_n{count}_s{size}"
    if stem.with_suffix(".npz").is_file() and stem.with_suffix(".json").is_file():
        labels = json.loads(stem.with_suffix(".json").read_text())
        arrays = np.load(stem.with_suffix(".npz"))
        return ScenePool(arrays["images"], labels["class_ids"], labels["positions"], arrays["label_counts"])
    pool = render_pool(count, seed, size)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(stem.with_suffix(".npz")) as temporary:
        np.savez(temporary, images=pool.images, label_counts=pool.label_counts)
    write_text(stem.with_suffix(".json"), json.dumps({"class_ids": pool.class_ids, "positions": pool.positions}))
    return pool
