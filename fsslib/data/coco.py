"""COCO-20i: class-index masks and split lists from the COCO 2014 instances annotations.

The 80 used category ids (1..90 with gaps) map to the contiguous ids 1..80 in increasing
id order. Per image, the instances are painted into one class-index PNG:

* overlapping instances: larger instances first, so a smaller object lying on a larger
  one (a cup on a table) keeps its pixels; equal areas fall back to the annotation id;
* crowd regions (``iscrowd=1``) become 255 = ignore wherever no single instance is drawn
  (PFENet's and HSNet's published masks come from scripts not available to check; 255 is
  the ignore convention of every few-shot loader, so crowds are neither class nor background);
* images without any non-crowd annotation get no mask and are left out of the lists.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools.coco import COCO as CocoApi
from tqdm.auto import tqdm

from fsslib.data.benchmarks import COCO_CLASSES
from fsslib.data.layout import IGNORE, mark_prepared, staged_output, write_class_index, write_list
from fsslib.data.pascal import class_pixel_counts, link_or_copy
from fsslib.errors import DatasetNotFoundError

SPLITS = ("train", "val")
COCO_DOWNLOAD = (
    "download the 2014 Train images, 2014 Val images and 2014 Train/Val annotations from cocodataset.org "
    "(images.cocodataset.org/zips/train2014.zip, val2014.zip, annotations/annotations_trainval2014.zip), "
    "unzip them into one folder and pass it with --root."
)


def prepare_coco(root: Path, out: Path) -> Path:
    """Write COCO-20i to ``out`` in fsslib's layout and return ``out``.

    ``root`` holds ``train2014/``, ``val2014/`` and ``annotations/instances_{train,val}2014.json``.
    Writes ``masks/{train,val}2014/<stem>.png``, ``lists/{train,val}.txt`` (lines
    ``train2014/<file>.jpg masks/train2014/<stem>.png``) with their class-presence indexes and,
    last, the marker ``fsslib_prepared.json`` (see :func:`~fsslib.data.layout.staged_output`).
    ``out`` may be ``root``; otherwise ``out/train2014`` and ``out/val2014`` become symlinks to
    the image folders (or, where symlinks are not allowed, folders of hard links or copies).
    Running it again gives the same tree.
    """
    root, out = Path(root), Path(out)
    sources = {split: _check_split(root, split) for split in SPLITS}
    counts: dict[str, int] = {}
    with staged_output(out) as folder:
        for split, (image_dir, annotation_file) in sources.items():
            coco = _load(annotation_file)
            class_of = contiguous_ids(coco, annotation_file)
            present = set(os.listdir(image_dir))
            images = sorted(coco.imgs.values(), key=lambda image: image["file_name"])
            missing = [image["file_name"] for image in images if image["file_name"] not in present]
            if missing:
                raise DatasetNotFoundError(
                    f"{len(missing)} images of {annotation_file.name} are not in {image_dir}, e.g. {missing[0]}.",
                    f"unzip the complete {image_dir.name}.zip into {root}. {COCO_DOWNLOAD}",
                )
            mask_dir = folder / "masks" / image_dir.name
            mask_dir.mkdir(parents=True, exist_ok=True)
            pairs: list[tuple[str, str]] = []
            presence: dict[str, dict[int, int]] = {}
            files: list[str] = []
            for image in tqdm(images, desc=f"COCO-20i {split}", unit=" images"):
                label = semantic_mask(coco, image["id"], class_of)
                if label is None:
                    continue
                stem = Path(image["file_name"]).stem
                Image.fromarray(label).save(mask_dir / f"{stem}.png")
                pairs.append((f"{image_dir.name}/{image['file_name']}", f"masks/{image_dir.name}/{stem}.png"))
                presence[stem] = class_pixel_counts(label, len(COCO_CLASSES))
                files.append(image["file_name"])
            _expose_images(image_dir, folder / image_dir.name, files)
            write_list(folder, split, pairs)
            write_class_index(folder, split, presence)
            counts[split] = len(pairs)
        mark_prepared(folder, {"benchmark": "coco", "images": counts})
    return out


def contiguous_ids(coco: CocoApi, annotation_file: Path) -> dict[int, int]:
    """{COCO category id: contiguous id 1..80}, checked against :data:`COCO_CLASSES`."""
    category_ids = sorted(coco.cats)
    names = [coco.cats[c]["name"] for c in category_ids]
    if names != list(COCO_CLASSES):
        raise DatasetNotFoundError(
            f"{annotation_file} has {len(names)} categories that are not the 80 COCO classes in id order "
            f"(first differences: {[(a, b) for a, b in zip(names, COCO_CLASSES) if a != b][:3]}).",
            f"use the official instances_*2014.json files. {COCO_DOWNLOAD}",
        )
    return {category: index for index, category in enumerate(category_ids, start=1)}


def semantic_mask(coco: CocoApi, image_id: int, class_of: dict[int, int]) -> np.ndarray | None:
    """The class-index mask (H, W) uint8 of one image, or None if it has no non-crowd instance."""
    annotations = coco.imgToAnns.get(image_id, [])
    instances = [a for a in annotations if not a.get("iscrowd", 0)]
    if not instances:
        return None
    image = coco.imgs[image_id]
    label = np.zeros((image["height"], image["width"]), dtype=np.uint8)  # (H, W)
    masks = [(coco.annToMask(a).astype(bool), a) for a in instances]  # (H, W) each
    for mask, annotation in sorted(masks, key=lambda pair: (-int(pair[0].sum()), pair[1]["id"])):
        label[mask] = class_of[annotation["category_id"]]
    drawn = label > 0  # (H, W)
    for annotation in annotations:
        if annotation.get("iscrowd", 0):
            label[coco.annToMask(annotation).astype(bool) & ~drawn] = IGNORE
    return label


def _check_split(root: Path, split: str) -> tuple[Path, Path]:
    """(image folder, instances JSON) of one split, or a clear error naming what is missing."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"COCO root {root} does not exist.", COCO_DOWNLOAD)
    image_dir, annotation_file = root / f"{split}2014", root / "annotations" / f"instances_{split}2014.json"
    if not annotation_file.is_file():
        raise DatasetNotFoundError(f"No annotation file {annotation_file}.", COCO_DOWNLOAD)
    if not image_dir.is_dir():
        raise DatasetNotFoundError(f"No image folder {image_dir}.", COCO_DOWNLOAD)
    return image_dir, annotation_file


def _load(annotation_file: Path) -> CocoApi:
    """The pycocotools index of one instances JSON (its progress prints are silenced)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return CocoApi(str(annotation_file))
    except (ValueError, KeyError, TypeError, AssertionError) as error:
        raise DatasetNotFoundError(
            f"{annotation_file} is not a COCO instances file: {error!r}.", f"re-download it. {COCO_DOWNLOAD}"
        ) from None


def _expose_images(image_dir: Path, target: Path, files: list[str]) -> None:
    """Make ``target/<file>`` resolve to ``image_dir/<file>``: a folder symlink, else per-file links or copies."""
    if target.resolve() == image_dir.resolve():
        return
    if target.is_symlink():
        target.unlink()
    if not target.exists():
        try:
            target.symlink_to(image_dir.resolve(), target_is_directory=True)
            return
        except OSError:
            target.mkdir(parents=True)
    for name in tqdm(files, desc=f"linking {image_dir.name}", unit=" images"):
        if not (target / name).exists():
            link_or_copy(image_dir / name, target / name)
