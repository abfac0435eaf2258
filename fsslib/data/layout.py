"""The on-disk layout shared by every benchmark (toy world, PASCAL-5i, COCO-20i).

A prepared dataset root holds::

    lists/<split>.txt           one 'image_path label_path' pair per line (PFENet's format),
                                paths relative to the root
    lists/<split>_classes.json  {image_stem: {class_id: pixel_count}}: the class-presence index
    <label files>               class-index PNGs: 0 = background, 1..C = class, 255 = ignore
    fsslib_prepared.json        the completion marker: what was prepared and how (e.g. which
                                PASCAL train list), written after every other file

so one loader serves all tiers. Loading requires the marker (:func:`require_prepared`), so a
``prepare`` run that failed or was interrupted never leaves a tree that loads: a new root is
built in a hidden sibling folder and renamed into place at the end (:func:`staged_output`); an
existing root (VOC2012 prepared in place) loses its marker until the run completes.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from fsslib.errors import DatasetNotFoundError
from fsslib.paths import write_text

IGNORE = 255  # the label value that metrics and losses ignore (VOC's void / boundary)
MARKER = "fsslib_prepared.json"


def write_list(root: Path, split: str, pairs: list[tuple[str, str]]) -> Path:
    """Write ``lists/<split>.txt`` from (image_path, label_path) pairs."""
    path = Path(root) / "lists" / f"{split}.txt"
    write_text(path, "".join(f"{image} {label}\n" for image, label in pairs))
    return path


def write_class_index(root: Path, split: str, presence: dict[str, dict[int, int]]) -> Path:
    """Write ``lists/<split>_classes.json``: per image, pixel count of every class present."""
    path = Path(root) / "lists" / f"{split}_classes.json"
    write_text(path, json.dumps({name: {str(c): n for c, n in counts.items()} for name, counts in presence.items()}))
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


def mark_prepared(root: Path, record: dict) -> Path:
    """Write the completion marker ``root/fsslib_prepared.json`` holding ``record``; call it last."""
    path = Path(root) / MARKER
    return write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def require_prepared(root: Path, prepare_command: str) -> dict:
    """The completion record of a prepared root, or a clear error if its marker is missing."""
    path = Path(root) / MARKER
    if not path.is_file():
        raise DatasetNotFoundError(
            f"Dataset root {root} was not prepared completely (no marker {path}): a prepare run failed or was "
            "interrupted there, or the tree was made by hand or by an fsslib older than the marker.",
            f"re-run `{prepare_command}` (add `--out {root}` unless that is its default location); it writes "
            f"{MARKER} only after every other file is in place.",
        )
    return json.loads(path.read_text())


@contextlib.contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """The folder to build ``out`` in, such that a failure leaves no tree that loads.

    A new ``out`` is built in a hidden sibling folder (same disk, so hard links work) that is
    renamed to ``out`` when the block succeeds and deleted when it fails. An existing ``out``
    (e.g. the extracted VOC2012 folder, prepared in place) is written in place after its marker
    is removed. Either way the block must end with :func:`mark_prepared`.
    """
    out = Path(out)
    if out.exists():
        (out / MARKER).unlink(missing_ok=True)
        yield out
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir()  # not mkdtemp: the tree keeps the usual permissions once renamed
    try:
        yield staging
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
