"""The on-disk layout shared by every benchmark (toy world, PASCAL-5i, COCO-20i).

A prepared dataset root holds::

    lists/<split>.txt           one 'image_path label_path' pair per line (PFENet's format),
                                paths relative to the root
    lists/<split>_classes.json  {image_stem: {class_id: pixel_count}}: the class-presence index
    <label files>               class-index PNGs: 0 = background, 1..C = class, 255 = ignore

so one loader serves all tiers.
"""
from __future__ import annotations

import json
from pathlib import Path

from fsslib.errors import DatasetNotFoundError

IGNORE = 255  # the label value that metrics and losses ignore (VOC's void / boundary)


def write_list(root: Path, split: str, pairs: list[tuple[str, str]]) -> Path:
    """Write ``lists/<split>.txt`` from (image_path, label_path) pairs."""
    path = Path(root) / "lists" / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{image} {label}\n" for image, label in pairs))
    return path


def write_class_index(root: Path, split: str, presence: dict[str, dict[int, int]]) -> Path:
    """Write ``lists/<split>_classes.json``: per image, pixel count of every class present."""
    path = Path(root) / "lists" / f"{split}_classes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: {str(c): n for c, n in counts.items()} for name, counts in presence.items()}))
    return path


def read_list(root: Path, split: str, prepare_hint: str) -> list[tuple[str, str]]:
    """Read ``lists/<split>.txt``; a missing file raises an error that says how to prepare it."""
    path = Path(root) / "lists" / f"{split}.txt"
    if not path.is_file():
        raise DatasetNotFoundError(f"No split list {path} (dataset root {root} is not prepared).", prepare_hint)
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if len(parts) != 2:
            raise DatasetNotFoundError(
                f"{path}:{number} is not an 'image_path label_path' pair: {line!r}.",
                f"re-create the list with: {prepare_hint}",
            )
        pairs.append((parts[0], parts[1]))
    return pairs


def read_class_index(root: Path, split: str, prepare_hint: str) -> dict[str, dict[int, int]]:
    """Read ``lists/<split>_classes.json`` as {image_stem: {class_id: pixel_count}}."""
    path = Path(root) / "lists" / f"{split}_classes.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"No class-presence index {path}.", prepare_hint)
    raw = json.loads(path.read_text())
    return {name: {int(c): int(n) for c, n in counts.items()} for name, counts in raw.items()}
