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
from fsslib.paths import DATASETS_DOC

SPLITS = ("train", "val")
COCO_DOWNLOAD = (
    "download the 2014 Train images, 2014 Val images and 2014 Train/Val annotations from cocodataset.org "
    "(images.cocodataset.org/zips/train2014.zip, val2014.zip, annotations/annotations_trainval2014.zip), "
    f"unzip them into one folder and pass it with --root ({DATASETS_DOC})."
)


def prepare_coco(root: Path, out: Path) -> Path:
    """Write COCO-20i to ``out`` in fsslib's layout and return ``out``.

    ``root`` holds ``train2014/``, ``val2014/`` and ``annotations/instances_{train,val}2014.json``.
    Every input is checked before anything is written: the four paths (a 2017-only download is
    named as such), both annotation files (format and categories; both stay loaded while the
    masks are painted) and every image they list.
    Writes ``masks/{train,val}2014/<stem>.png``, ``lists/{train,val}.txt`` (lines
    ``train2014/<file>.jpg masks/train2014/<stem>.png``) with their class-presence indexes and,
    last, the marker ``fsslib_prepared.json`` (see :func:`~fsslib.data.layout.staged_output`).
    ``out`` may be ``root``; otherwise ``out/train2014`` and ``out/val2014`` become symlinks to
    the image folders (or, where symlinks are not allowed, folders of hard links or copies).
    Running it again gives the same tree.
    """
    root, out = Path(root), Path(out)
    image_dirs, annotation_files = _check_inputs(root)
    indexes = {split: _load(annotation_files[split]) for split in SPLITS}
    class_of = {split: contiguous_ids(indexes[split], annotation_files[split]) for split in SPLITS}
    for split in SPLITS:
        _check_images(indexes[split], image_dirs[split], annotation_files[split], root)
    counts: dict[str, int] = {}
    with staged_output(out) as folder:
        for split in SPLITS:
            coco, image_dir = indexes.pop(split), image_dirs[split]  # pop: the index is freed once done
            mask_dir = folder / "masks" / image_dir.name
            mask_dir.mkdir(parents=True, exist_ok=True)
            pairs: list[tuple[str, str]] = []
            presence: dict[str, dict[int, int]] = {}
            files: list[str] = []
            images = sorted(coco.imgs.values(), key=lambda image: image["file_name"])
            for image in tqdm(images, desc=f"COCO-20i {split}", unit=" images"):
                label = semantic_mask(coco, image["id"], class_of[split])
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


def _check_inputs(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """({split: image folder}, {split: instances JSON}), or one error naming every missing path."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"COCO root {root} does not exist.", COCO_DOWNLOAD)
    image_dirs = {split: root / f"{split}2014" for split in SPLITS}
    annotation_files = {split: root / "annotations" / f"instances_{split}2014.json" for split in SPLITS}
    missing = [path for path in image_dirs.values() if not path.is_dir()]
    missing += [path for path in annotation_files.values() if not path.is_file()]
    if not missing:
        return image_dirs, annotation_files
    release_2017 = [path.relative_to(root).as_posix() for path in (
        root / "train2017", root / "val2017", *(root / "annotations" / f"instances_{s}2017.json" for s in SPLITS)
    ) if path.exists()]
    if release_2017 and len(missing) == 4:
        raise DatasetNotFoundError(
            f"COCO root {root} holds the COCO 2017 release ({', '.join(release_2017)}) and none of the 2014 files.",
            "COCO-20i uses the 2014 train/val split (PFENet, HSNet and the methods after them); train2017 holds "
            f"most of val2014, the test images, so the 2017 files cannot stand in for it: {COCO_DOWNLOAD}",
        )
    note = f" (it has {', '.join(release_2017)}, but COCO-20i needs the 2014 split)" if release_2017 else ""
    raise DatasetNotFoundError(
        f"COCO root {root} lacks {', '.join(path.relative_to(root).as_posix() for path in missing)}{note}.",
        COCO_DOWNLOAD,
    )


def _check_images(coco: CocoApi, image_dir: Path, annotation_file: Path, root: Path) -> None:
    """Raise unless every image that ``annotation_file`` lists is in ``image_dir``."""
    present = set(os.listdir(image_dir))
    missing = sorted(image["file_name"] for image in coco.imgs.values() if image["file_name"] not in present)
    if missing:
        raise DatasetNotFoundError(
            f"{len(missing)} images of {annotation_file.name} are not in {image_dir}, e.g. {missing[0]}. "
            "Nothing was written.",
            f"unzip the complete {image_dir.name}.zip into {root}. {COCO_DOWNLOAD}",
        )


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
