"""Your own dataset as a benchmark: ``--benchmark folder:PATH``.

The folder holds::

    images/<stem>.jpg|.png|...     the pictures (JPEG, PNG, WebP, TIFF or BMP)
    masks/<stem>.png               class-index masks of the size shown: 0 background, 1..C classes, 255 ignore
    classes.txt                    one "id name" per line, ids 1..C
    folds.json (optional)          {"folds": [[novel ids of fold 0], [novel ids of fold 1], ...]}
    splits.json (optional)         {"train": [stems], "test": [stems]} (default: every image in both)

Without ``folds.json`` the novel classes come from ``Config.novel_classes`` (``--novel-classes 3,4``: one fold,
fold 0); the others are the base classes. Every class may be novel to evaluate a model on classes it never saw;
training then refuses the fold (it draws base classes). Episodes, PFENet's training rules and the metrics are those of
PASCAL-5i: training draws base classes (with the ``novel_rule``: novel pixels as background, or images with a
novel class dropped), testing draws novel classes. With one set of images for both splits, the test queries may
have been seen in training with their novel pixels as background (PFENet's rule): give ``splits.json`` or use
``novel_rule="bam"`` when that matters. The folder is checked once, completely: every mismatch is listed in one
message before anything runs. Pictures and masks are read as a viewer shows them (their EXIF orientation applied,
:mod:`fsslib.data.images`); a mask must be a PNG label image (one saved as JPEG, or holding the values its noise
leaves, is refused). So is a mask that holds only 0 and 255: here 255 marks pixels to ignore, so a black-and-white
mask (255 = object, :mod:`fsslib.predict`'s format) would label no class.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsslib.data.images import label_problem, lossy_format, shown_size, upright
from fsslib.errors import DatasetNotFoundError
from fsslib.paths import shown_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")  # pictures PIL reads
SPLITS = ("train", "test")
MIN_CLASS_PIXELS = 2 * 8 * 8  # as the toy world's 64 x 64 scenes; PASCAL's 2 * 32 * 32 assumes 500-pixel photos
LAYOUT = "images/, masks/, classes.txt and optionally folds.json / splits.json (fsslib/data/folder.py)"


def class_key(name: str) -> str:
    """How class names compare: spaces trimmed and collapsed, case folded ('Striped  Star ' is 'striped star')."""
    return " ".join(name.split()).casefold()


def folder_index(root: Path) -> tuple[list[str], tuple[tuple[int, ...], ...], dict[str, tuple[dict, dict]]]:
    """(class names, folds, per split ({stem: (image, mask) relative paths}, {stem: {class id: pixels}})) of a
    dataset folder; every problem found is reported at once in one :class:`DatasetNotFoundError`. Read again
    whenever a file of the folder changed (its names, sizes and modification times are the cache's key)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"No dataset folder {shown_path(root)}.",
                                   f"pass --benchmark folder:PATH with {LAYOUT}.")
    files = [p for p in (root / "classes.txt", root / "folds.json", root / "splits.json") if p.is_file()]
    files += [p for folder in (root / "images", root / "masks") if folder.is_dir() for p in sorted(folder.iterdir())]
    return _index(root, tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))


@functools.lru_cache(maxsize=8)
def _index(root: Path, signature: tuple) -> tuple[list[str], tuple[tuple[int, ...], ...], dict[str, tuple[dict, dict]]]:
    """:func:`folder_index` of ``root`` as its files' ``signature`` describes them."""
    problems: list[str] = []
    names = _read_classes(root / "classes.txt", problems)
    folds = _read_folds(root / "folds.json", len(names), problems)
    pictures = [p for p in sorted((root / "images").glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    images = {p.stem: p for p in pictures}
    stems = [p.stem for p in pictures]
    problems += [f"images/ holds several files named {s}.* (one image per stem)" for s in sorted(set(stems))
                 if stems.count(s) > 1]
    masks = {p.stem: p for p in sorted((root / "masks").glob("*.png"))}
    if not images:
        problems.append(f"no image ({', '.join(IMAGE_SUFFIXES)}) in {root / 'images'}")
    problems += [f"mask masks/{masks[s].name} has no image images/{s}.*" for s in sorted(set(masks) - set(images))]
    others = {p.stem: p.name for p in sorted((root / "masks").glob("*")) if p.suffix.lower() != ".png"}  # e.g. JPEG
    problems += [f"image images/{images[s].name} has no mask masks/{s}.png"
                 + (f" (masks/{others[s]} is not a PNG: {SAVE_FOLDER_MASK})" if s in others else "")
                 for s in sorted(set(images) - set(masks))]
    presence: dict[str, dict[int, int]] = {}
    for stem in sorted(set(images) & set(masks)):
        counts = _check_pair(images[stem], masks[stem], len(names), problems)
        if counts is not None:
            presence[stem] = counts
    seen = {c for counts in presence.values() for c in counts}
    problems += [f"class {c} ({names[c - 1]}) is in no mask" for c in range(1, len(names) + 1) if c not in seen and presence]
    splits = _read_splits(root / "splits.json", set(presence), problems)
    if problems:
        shown = problems[:25] + ([f"... and {len(problems) - 25} more"] if len(problems) > 25 else [])
        raise DatasetNotFoundError(f"The dataset folder {shown_path(root)} has {len(problems)} problem(s):\n    "
                                   + "\n    ".join(shown),
                                   f"correct each file listed above (the rules: docs/your_data.md, 'A dataset folder "
                                   f"as a benchmark'); the layout is {LAYOUT}.")
    index = {split: ({s: (str(images[s].relative_to(root)), str(masks[s].relative_to(root))) for s in stems},
                     {s: presence[s] for s in stems}) for split, stems in splits.items()}
    return names, folds, index


def _read_classes(path: Path, problems: list[str]) -> list[str]:
    if not path.is_file():
        problems.append(f"no {path.name} (one 'id name' per line)")
        return []
    entries: dict[int, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        key, name = (line.split(None, 1) + [""])[:2]
        if not key.isdigit() or not name.strip():
            problems.append(f"{path.name}:{number} is not 'id name': {line!r}")
        elif int(key) in entries:
            problems.append(f"{path.name}:{number} repeats id {key}")
        elif class_key(name) in map(class_key, entries.values()):
            problems.append(f"{path.name}:{number} repeats the name {name.strip()!r} (names compare without case and "
                            "spacing; each class needs its own)")
        else:
            entries[int(key)] = name.strip()
    if entries and sorted(entries) != list(range(1, len(entries) + 1)):
        problems.append(f"{path.name}'s ids are {sorted(entries)}, not 1..{len(entries)} (0 is the background, 255 ignore)")
    return [entries[key] for key in sorted(entries)]


def _read_folds(path: Path, n_classes: int, problems: list[str]) -> tuple[tuple[int, ...], ...]:
    if not path.is_file():
        return ()
    try:
        folds = json.loads(path.read_text())["folds"]
        if not all(isinstance(fold, list) and all(type(c) is int for c in fold) for fold in folds):
            raise TypeError("every fold must be a list of integer class ids")
        folds = tuple(tuple(fold) for fold in folds)
    except (ValueError, KeyError, TypeError) as error:
        problems.append(f'{path.name} is not {{"folds": [[ids], ...]}} ({error})')
        return ()
    for number, fold in enumerate(folds):
        wrong = sorted(set(fold) - set(range(1, n_classes + 1)))
        if wrong or not fold:
            problems.append(f"{path.name}: fold {number} holds {'no class' if not fold else f'ids {wrong} not in classes.txt'}")
        elif len(set(fold)) < len(fold):
            problems.append(f"{path.name}: fold {number} repeats a class id")
    return folds


def _read_splits(path: Path, stems: set[str], problems: list[str]) -> dict[str, list[str]]:
    if not path.is_file():
        return {split: sorted(stems) for split in SPLITS}
    try:
        splits = {split: [str(s) for s in json.loads(path.read_text())[split]] for split in SPLITS}
    except (ValueError, KeyError, TypeError) as error:
        problems.append(f'{path.name} is not {{"train": [stems], "test": [stems]}} ({error})')
        return {split: [] for split in SPLITS}
    for split, listed in splits.items():
        problems += [f"{path.name}: {split} lists {s!r}, which has no image with its mask" for s in listed if s not in stems]
    return {split: sorted(s for s in listed if s in stems) for split, listed in splits.items()}


SAVE_FOLDER_MASK = ("save each mask as a PNG label image drawn without smoothing (anti-aliasing off): 0 = background, "
                    "a class's id from classes.txt (1..C) = that class, 255 = pixels to ignore; from Python: "
                    "PIL.Image.fromarray(mask.astype('uint8')).save('mask.png').")


def _check_pair(image_path: Path, mask_path: Path, n_classes: int, problems: list[str]) -> dict[int, int] | None:
    """The mask's class pixel counts, or None after recording what is wrong with the pair."""
    try:
        with Image.open(image_path) as image:
            size = shown_size(image)
        with Image.open(mask_path) as mask_file:
            mask, lossy = np.asarray(upright(mask_file)), lossy_format(mask_file)
    except (UnidentifiedImageError, OSError) as error:
        problems.append(f"cannot read {image_path.name} / {mask_path.name}: {error}")
        return None
    if mask.ndim != 2:
        problems.append(f"masks/{mask_path.name} is not single-channel (shape {mask.shape}): save class indices")
        return None
    if (mask.shape[1], mask.shape[0]) != size:
        problems.append(f"masks/{mask_path.name} is {mask.shape[1]} x {mask.shape[0]} but images/{image_path.name} "
                        f"is {size[0]} x {size[1]}")
        return None
    values, counts = np.unique(mask, return_counts=True)
    wrong = [int(v) for v in values if v > n_classes and v != 255]
    problem = label_problem(np.array(wrong), lossy)  # values beyond the class ids: noise, or a lossy file
    if problem:
        problems.append(f"masks/{mask_path.name} {problem}: {SAVE_FOLDER_MASK}")
        return None
    if set(values.tolist()) == {0, 255}:  # black and white: predict's object mask, which labels no class here
        problems.append(f"masks/{mask_path.name} holds only 0 and 255, and 255 means ignore in a dataset folder, so it "
                        f"labels no class: write each object's class id from classes.txt (1..{n_classes}) instead")
        return None
    if wrong and n_classes:  # without classes.txt every id is unknown: that one problem is reported, not each mask
        problems.append(f"masks/{mask_path.name} holds ids {wrong[:5]} not in classes.txt (1..{n_classes}, 255 ignore)")
        return None
    return {int(v): int(c) for v, c in zip(values, counts) if 0 < v <= n_classes}
