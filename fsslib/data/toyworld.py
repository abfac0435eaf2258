"""The toy world: fsslib's offline, procedural few-shot segmentation dataset.

Twenty 'semantic' classes = 5 shapes x 4 fill patterns, e.g. "striped star".
Colour never identifies a class: every instance gets random, contrast-checked
colours, and the background is cluttered with noise and lines. Class ids follow the
PASCAL-5i rule, fold ``i`` = ids ``5i+1 .. 5i+5``, and the split is a Latin square:
fold ``f`` slot ``s`` is (shape ``s``, fill ``(s+f) mod 4``). So every novel class
shares its shape with three base classes and its fill with at least three: the
parts of a novel class are seen in training, the combination is not.

Every image is a pure function of ``(seed, split, index)``; ``materialize`` writes a
split to disk in the PASCAL VOC layout so the same loader serves both tiers.
"""
from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from fsslib.paths import write_text

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
FILLS: tuple[str, ...] = ("solid", "striped", "dotted", "checkered")
N_FOLDS = 4
CLASSES_PER_FOLD = 5
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_SIZES: dict[str, int] = {"train": 4000, "val": 600, "test": 1000}


def class_attributes(class_id: int) -> tuple[str, str]:
    """(shape, fill) of a toy class id in 1..20 (Latin-square fold split)."""
    fold, slot = divmod(class_id - 1, CLASSES_PER_FOLD)
    return SHAPES[slot], FILLS[(slot + fold) % len(FILLS)]


CLASS_NAMES: tuple[str, ...] = tuple(
    f"{fill} {shape}" for shape, fill in map(class_attributes, range(1, 21))
)


@dataclass
class ToyObject:
    """One object instance placed in a scene."""

    class_id: int
    centre: tuple[float, float]  # (y, x) in pixels
    radius: float  # pixels
    visible_pixels: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # (y0, x0, y1, x1), inclusive-exclusive

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.class_id - 1]


def spatial_word(obj: ToyObject, size: int) -> str:
    """Where an object sits in a ``size`` x ``size`` image: 'on the left', ..., 'in the middle'."""
    y, x = obj.centre
    if abs(x - size / 2) >= abs(y - size / 2):
        return "on the left" if x < size * 0.4 else "on the right" if x > size * 0.6 else "in the middle"
    return "at the top" if y < size * 0.4 else "at the bottom" if y > size * 0.6 else "in the middle"


@dataclass
class ToyScene:
    """A rendered scene: RGB image, class-index mask, its objects and a caption."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 0 = background, 1..20 = class id
    objects: list[ToyObject] = field(default_factory=list)

    @property
    def caption(self) -> str:
        return describe(self.objects)


def describe(objects: list[ToyObject]) -> str:
    """The plain caption of a scene, e.g. 'a photo of a striped star and a solid circle.'"""
    if not objects:
        return "a photo of an empty scene."
    names = [f"a {o.name}" for o in objects]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"a photo of {listed}."


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a unit-size shape in rotated, radius-normalised coordinates."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == "triangle":  # equilateral, inscribed in the unit circle (inradius 0.5)
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            angle = -np.pi / 2 + 2 * np.pi * k / 3
            inside &= u * np.cos(angle) + v * np.sin(angle) <= 0.5
        return inside
    if shape == "star":  # five spikes: radius oscillates between 0.45 and 1.0
        rho = np.sqrt(u * u + v * v)
        turns = (np.arctan2(v, u) * 5 / (2 * np.pi)) % 1.0
        return rho <= 0.45 + 0.55 * np.abs(2 * turns - 1)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    raise ValueError(shape)


def _pattern(fill: str, y: np.ndarray, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean map of the second colour; textures are in absolute pixels."""
    angle = rng.uniform(0, np.pi)
    a = x * np.cos(angle) + y * np.sin(angle) + rng.uniform(0, 10)
    b = -x * np.sin(angle) + y * np.cos(angle) + rng.uniform(0, 10)
    if fill == "solid":
        return np.zeros_like(x, dtype=bool)
    if fill == "striped":
        return (a / rng.uniform(6.0, 9.0)) % 1.0 < 0.5
    if fill == "dotted":
        spacing = rng.uniform(6.0, 8.0)
        da, db = (a / spacing) % 1.0 - 0.5, (b / spacing) % 1.0 - 0.5
        return da * da + db * db <= 0.32**2
    if fill == "checkered":
        cell = rng.uniform(4.0, 5.5)
        return (np.floor(a / cell) + np.floor(b / cell)) % 2 == 1
    raise ValueError(fill)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def _contrasting_colour(rng: np.random.Generator, against: np.ndarray, min_diff: float) -> np.ndarray:
    """A random colour whose luminance differs from ``against`` by at least ``min_diff``."""
    for _ in range(50):
        colour = rng.uniform(0, 1, size=3)
        if abs(_luminance(colour) - _luminance(against)) >= min_diff:
            return colour
    return 1.0 - against  # the complement always contrasts


def _interpolation_matrix(size: int, points: int) -> np.ndarray:
    """Linear interpolation weights from ``points`` coarse samples to ``size`` pixels."""
    position = np.linspace(0, points - 1, size)
    weights = np.maximum(0, 1 - np.abs(position[:, None] - np.arange(points)[None, :]))
    return weights / weights.sum(1, keepdims=True)


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Cluttered background: a colour gradient, smooth noise and a few thin lines."""
    base = rng.uniform(0.15, 0.85, size=3)
    tilt = rng.uniform(-0.25, 0.25, size=(2, 3))
    image = base + (yy[..., None] / size - 0.5) * tilt[0] + (xx[..., None] / size - 0.5) * tilt[1]
    coarse = rng.normal(0, 0.07, size=(size // 8 + 1, size // 8 + 1, 3))
    upsample = _interpolation_matrix(size, coarse.shape[0])  # (size, g): smooth, not blocky
    # U C_c U^T per channel c, as two matrix products (an einsum over both sums took 5 ms a scene): (size, size, 3)
    image = image + (upsample @ coarse.transpose(2, 0, 1) @ upsample.T).transpose(1, 2, 0)
    image = image + rng.normal(0, 0.03, size=image.shape)
    for _ in range(rng.integers(1, 4)):  # clutter lines
        angle, offset = rng.uniform(0, np.pi), rng.uniform(0, size)
        dist = np.abs(xx * np.cos(angle) + yy * np.sin(angle) - offset)
        image[dist < rng.uniform(0.5, 1.5)] = rng.uniform(0, 1, size=3)
    return image


def render_scene(
    rng: np.random.Generator,
    size: int = 64,
    class_ids: list[int] | None = None,
    n_objects: int | None = None,
) -> ToyScene:
    """Render one scene. ``class_ids`` fixes the objects' classes (else 1-3 random ones)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    image = _background(rng, size, yy, xx)
    mask = np.zeros((size, size), dtype=np.uint8)
    if class_ids is None:
        count = n_objects if n_objects is not None else int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
        class_ids = [int(c) for c in rng.integers(1, 21, size=count)]
    objects: list[ToyObject] = []
    owner = np.full((size, size), -1)
    for class_id in class_ids:
        shape, fill = class_attributes(class_id)
        radius = rng.uniform(0.14, 0.26) * size
        for _ in range(10):  # find a place where enough of it stays visible
            cy, cx = rng.uniform(radius * 0.8, size - radius * 0.8, size=2)
            theta = rng.uniform(0, 2 * np.pi)
            dy, dx = (yy - cy) / radius, (xx - cx) / radius
            u = dx * np.cos(theta) + dy * np.sin(theta)
            v = -dx * np.sin(theta) + dy * np.cos(theta)
            inside = _shape_mask(shape, u, v)
            if inside.sum() >= 30 and all(
                ((owner == k) & ~inside).sum() >= 0.6 * o.visible_pixels for k, o in enumerate(objects)
            ):
                break
        else:
            continue
        under = image[inside].mean(axis=0)
        colour = _contrasting_colour(rng, under, 0.2)
        second = _contrasting_colour(rng, colour, 0.3)
        paint = np.where(_pattern(fill, yy, xx, rng)[..., None], second, colour)
        image[inside] = paint[inside]
        owner[inside] = len(objects)
        objects.append(ToyObject(class_id, (float(cy), float(cx)), float(radius), int(inside.sum())))
    for k, obj in enumerate(objects):
        visible = owner == k
        obj.visible_pixels = int(visible.sum())
        ys, xs = np.nonzero(visible)
        obj.bbox = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
        mask[visible] = obj.class_id
    pixels = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return ToyScene(pixels, mask, objects)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: scenes are pure functions of these."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def image_name(split: str, index: int) -> str:
    return f"toy_{split}_{index:06d}"


SCENES_PER_TASK = 250  # scenes one worker renders and writes per task


def _write_scenes(root: Path, seed: int, size: int, split: str, indices: range
                  ) -> list[tuple[str, tuple[str, str], dict[int, int], dict]]:
    """Render scenes ``indices`` of ``split`` and write their image and label; per scene its name, file pair, class
    pixel counts and caption record."""
    written = []
    for index in indices:
        name = image_name(split, index)
        scene = render_scene(scene_rng(seed, split, index), size)
        Image.fromarray(scene.image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        Image.fromarray(scene.mask).save(root / "SegmentationClassAug" / f"{name}.png")
        ids, pixel_counts = np.unique(scene.mask, return_counts=True)
        presence = {int(c): int(n) for c, n in zip(ids, pixel_counts) if 0 < c < 255}
        caption = {"caption": scene.caption,
                   "objects": [{"class_id": o.class_id, "name": o.name, "bbox": list(o.bbox)} for o in scene.objects]}
        written.append((name, (f"JPEGImages/{name}.jpg", f"SegmentationClassAug/{name}.png"), presence, caption))
    return written


def materialize(
    root: str | Path,
    seed: int = 0,
    size: int = 64,
    counts: dict[str, int] | None = None,
    workers: int = 1,
) -> Path:
    """Write the toy world to ``root`` in the PASCAL VOC layout and return ``root``.

    Writes ``JPEGImages/*.jpg``, ``SegmentationClassAug/*.png`` (class-index PNGs),
    ``lists/<split>.txt`` (``image_path label_path`` pairs, PFENet's list format),
    ``lists/<split>_classes.json`` (per-image class pixel counts), ``captions.json``
    and ``meta.json``. ``workers`` processes render the scenes; each scene is a function of
    (seed, split, index) alone, so the files are the same for any number of them.
    """
    from fsslib.data.layout import write_class_index, write_list

    root = Path(root)
    counts = counts or DEFAULT_SIZES
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    captions: dict[str, dict] = {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1 else nullcontext() as pool:
        run_all = map if pool is None else pool.map  # either way, the results come back in index order
        for split, count in counts.items():
            tasks = [range(start, min(start + SCENES_PER_TASK, count)) for start in range(0, count, SCENES_PER_TASK)]
            pairs, presence = [], {}
            for written in run_all(partial(_write_scenes, root, seed, size, split), tasks):
                for name, pair, present, caption in written:
                    pairs.append(pair)
                    presence[name] = present
                    captions[name] = caption
            write_list(root, split, pairs)
            write_class_index(root, split, presence)
    write_text(root / "captions.json", json.dumps(captions))
    meta = {"benchmark": "toy", "seed": seed, "size": size, "counts": counts, "classes": list(CLASS_NAMES)}
    write_text(root / "meta.json", json.dumps(meta, indent=1))
    return root
