"""Files in the official dataset formats, fabricated for the tests (VOC / SBD / COCO)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def save_jpeg(path: Path, height: int, width: int, seed: int) -> None:
    """A (height, width) JPEG of uniform noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)  # (H, W, 3)
    Image.fromarray(pixels).save(path)


def save_palette_png(path: Path, label: np.ndarray) -> None:
    """A class-index label (H, W) as VOC stores it: a palette PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    image.putpalette([(index * 37) % 256 for index in range(768)])
    image.save(path)


def rectangle(x0: int, y0: int, x1: int, y1: int) -> list[list[int]]:
    """A COCO polygon covering rows y0..y1-1 and columns x0..x1-1."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def coco_annotation(ann_id: int, image_id: int, category: int, segmentation, crowd: int = 0) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": segmentation,
            "iscrowd": crowd, "area": 1.0, "bbox": [0, 0, 1, 1]}
