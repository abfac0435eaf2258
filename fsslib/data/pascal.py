"""PASCAL-5i: build ``SegmentationClassAug`` and the split lists from VOC2012 and SBD.

The masks merge two sources into class-index PNGs (0 background, 1..20 classes,
255 void): VOC2012 ``SegmentationClass`` palette PNGs (whose pixel values already are
the class indices) and SBD's ``cls/*.mat`` files (field ``GTcls.Segmentation``). The
splits follow PFENet: train = (VOC2012 train ∪ SBD train ∪ SBD val) minus every
VOC2012 val image; val = VOC2012 val.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import scipy.io
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from fsslib.data.layout import IGNORE, mark_prepared, staged_output, write_class_index, write_list
from fsslib.errors import CorruptImageError, DatasetNotFoundError, InvalidMaskError

N_CLASSES = 20
VOC_DOWNLOAD = (
    "download VOCtrainval_11-May-2012.tar from the PASCAL VOC 2012 page "
    "(host.robots.ox.ac.uk/pascal/VOC/voc2012/) and pass the .tar file or its extracted folder with --voc."
)
SBD_DOWNLOAD = (
    "download benchmark.tgz from the Berkeley SBD page "
    "(www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/) "
    "and pass the .tgz file or its extracted folder with --sbd."
)
VOC_FILES = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt")
SBD_FILES = ("img", "cls", "train.txt", "val.txt")


def prepare_pascal(voc: Path, sbd: Path, out: Path) -> Path:
    """Write PASCAL-5i to ``out`` in fsslib's layout and return ``out``.

    ``voc`` is VOCtrainval_11-May-2012.tar or its extracted folder (the one holding
    ``VOCdevkit/``, or ``VOC2012/`` itself); ``sbd`` is SBD's benchmark.tgz or its extracted
    folder (holding ``benchmark_RELEASE/`` or ``dataset/``). Archives are streamed (SBD's
    once, VOC's twice: lists and masks, then the listed JPEGs) and only the members needed
    are unpacked, into a temporary folder next to ``out`` (same disk, so images are
    hard-linked, not copied) that is deleted at the end.

    Writes ``JPEGImages/<stem>.jpg`` (hard links, or copies across disks),
    ``SegmentationClassAug/<stem>.png``, ``lists/{train,val}.txt`` with their class-presence
    indexes and, last, the marker ``fsslib_prepared.json`` (see :func:`staged_output`). An
    image annotated by both VOC2012 and SBD takes the VOC2012 mask, which marks object
    boundaries as void (255). Running it again gives the same tree.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fsslib-pascal-") as staging:
        voc_dir = _voc_folder(Path(voc), Path(staging) / "voc")
        sbd_dir = _sbd_folder(Path(sbd), Path(staging) / "sbd")
        voc_train, voc_val = (_read_stems(voc_dir / "ImageSets/Segmentation" / f"{s}.txt") for s in ("train", "val"))
        sbd_train, sbd_val = (_read_stems(sbd_dir / f"{s}.txt") for s in ("train", "val"))
        splits = {"train": sorted((voc_train | sbd_train | sbd_val) - voc_val), "val": sorted(voc_val)}
        with staged_output(out) as folder:
            (folder / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
            for split, stems in splits.items():
                presence: dict[str, dict[int, int]] = {}
                for stem in tqdm(stems, desc=f"PASCAL-5i {split}", unit=" images"):
                    presence[stem] = _prepare_image(stem, voc_dir, sbd_dir, folder)
                write_list(folder, split, [(f"JPEGImages/{s}.jpg", f"SegmentationClassAug/{s}.png") for s in stems])
                write_class_index(folder, split, presence)
            mark_prepared(folder, {"benchmark": "pascal", "images": {split: len(stems) for split, stems in splits.items()}})
    return out


def _prepare_image(stem: str, voc_dir: Path, sbd_dir: Path, out: Path) -> dict[int, int]:
    """Place one image and its class-index mask in ``out``; return its class pixel counts."""
    voc_mask, sbd_mask = voc_dir / "SegmentationClass" / f"{stem}.png", sbd_dir / "cls" / f"{stem}.mat"
    if voc_mask.is_file():
        label = read_voc_mask(voc_mask)
    elif sbd_mask.is_file():
        label = read_sbd_mask(sbd_mask)
    else:
        raise DatasetNotFoundError(
            f"Image {stem} is listed but has no mask: neither {voc_mask} nor {sbd_mask} exists.",
            f"the inputs look incomplete: re-extract or re-download them. {VOC_DOWNLOAD} {SBD_DOWNLOAD}",
        )
    candidates = (voc_dir / "JPEGImages" / f"{stem}.jpg", sbd_dir / "img" / f"{stem}.jpg")
    image = next((path for path in candidates if path.is_file()), None)
    if image is None:
        raise DatasetNotFoundError(
            f"Image {stem}.jpg is listed but is neither in {voc_dir / 'JPEGImages'} nor in {sbd_dir / 'img'}.",
            f"the inputs look incomplete: re-extract or re-download them. {VOC_DOWNLOAD}",
        )
    try:
        with Image.open(image) as handle:
            width, height = handle.size
    except (UnidentifiedImageError, OSError) as error:
        raise CorruptImageError(f"Cannot decode {image}: {error}.", "re-extract it from its archive.") from None
    if label.shape != (height, width):
        raise InvalidMaskError(
            f"The mask of {stem} is {label.shape} but its image {image} is {(height, width)}.",
            "mask and image must come from the same release; re-download the VOC2012 and SBD archives.",
        )
    target = out / "JPEGImages" / f"{stem}.jpg"
    if not target.exists():
        link_or_copy(image, target)
    Image.fromarray(label).save(out / "SegmentationClassAug" / f"{stem}.png")
    return class_pixel_counts(label, N_CLASSES)


def read_voc_mask(path: Path) -> np.ndarray:
    """A VOC2012 palette PNG as a class-index array (H, W) uint8: the palette indices are the classes."""
    try:
        with Image.open(path) as handle:
            mode, label = handle.mode, np.asarray(handle)
    except (UnidentifiedImageError, OSError) as error:
        raise CorruptImageError(
            f"Cannot decode {path}: {error}.", f"re-extract it from the archive; {VOC_DOWNLOAD}"
        ) from None
    if mode not in ("P", "L"):
        raise InvalidMaskError(
            f"{path} is a {mode} image; VOC2012 masks are palette PNGs whose indices are the class ids.",
            "use the unmodified SegmentationClass PNGs from the VOC2012 archive (not converted to RGB).",
        )
    return _checked(label, path)


def read_sbd_mask(path: Path) -> np.ndarray:
    """The ``GTcls.Segmentation`` field of an SBD ``cls/*.mat`` file as (H, W) uint8."""
    try:
        gt = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)["GTcls"]
        label = np.asarray(gt.Segmentation, dtype=np.uint8)  # (H, W)
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, KeyError, AttributeError) as error:
        raise CorruptImageError(
            f"Cannot read the GTcls.Segmentation field of {path}: {error!r}.",
            f"re-extract it from the archive; {SBD_DOWNLOAD}",
        ) from None
    if label.ndim != 2:
        raise InvalidMaskError(f"{path} holds a segmentation of shape {label.shape}, not (H, W).", SBD_DOWNLOAD)
    return _checked(label, path)


def _checked(label: np.ndarray, path: Path) -> np.ndarray:
    values = np.unique(label)
    bad = values[(values > N_CLASSES) & (values != IGNORE)]
    if bad.size:
        raise InvalidMaskError(
            f"{path} holds values {bad.tolist()[:10]}, outside the VOC class ids 0..{N_CLASSES} and void 255.",
            "use the unmodified masks from the VOC2012 and SBD archives.",
        )
    return label


def class_pixel_counts(label: np.ndarray, n_classes: int) -> dict[int, int]:
    """{class_id: pixel count} of the classes 1..n_classes present in a class-index mask (H, W)."""
    counts = np.bincount(label.ravel(), minlength=256)  # (256,)
    return {c: int(counts[c]) for c in range(1, n_classes + 1) if counts[c]}


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target``, or copy it where links are impossible (other disk)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(source, partial)
        partial.replace(target)


def _read_stems(path: Path) -> set[str]:
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def _voc_folder(voc: Path, staging: Path) -> Path:
    """The VOC2012 folder of ``voc``, unpacking the needed members if it is an archive."""
    if _is_archive(voc, "PASCAL VOC 2012", VOC_DOWNLOAD):
        _unpack(voc, staging, _voc_member(None))
        stems = set().union(*(_read_stems(p) for p in (staging / "ImageSets/Segmentation").glob("*.txt")))
        _unpack(voc, staging, _voc_member(stems))
        return _find(staging, ("",), VOC_FILES, f"The archive {voc}", VOC_DOWNLOAD)
    return _find(voc, ("VOCdevkit/VOC2012", "VOC2012", ""), VOC_FILES, f"The folder {voc}", VOC_DOWNLOAD)


def _sbd_folder(sbd: Path, staging: Path) -> Path:
    """The SBD ``dataset`` folder of ``sbd``, unpacking the needed members if it is an archive."""
    if _is_archive(sbd, "SBD", SBD_DOWNLOAD):
        _unpack(sbd, staging, _sbd_member)
        return _find(staging, ("",), SBD_FILES, f"The archive {sbd}", SBD_DOWNLOAD)
    return _find(sbd, ("benchmark_RELEASE/dataset", "dataset", ""), SBD_FILES, f"The folder {sbd}", SBD_DOWNLOAD)


def _voc_member(jpeg_stems: set[str] | None) -> Callable[[PurePosixPath], str | None]:
    """Where a VOC archive member goes: the split lists and masks, or (given stems) their JPEGs."""

    def destination(member: PurePosixPath) -> str | None:
        folder = member.parent.name
        if jpeg_stems is not None:
            return f"JPEGImages/{member.name}" if folder == "JPEGImages" and member.stem in jpeg_stems else None
        if folder == "SegmentationClass" and member.suffix == ".png":
            return f"SegmentationClass/{member.name}"
        if member.parent.parts[-2:] == ("ImageSets", "Segmentation") and member.name in ("train.txt", "val.txt"):
            return f"ImageSets/Segmentation/{member.name}"
        return None

    return destination


def _sbd_member(member: PurePosixPath) -> str | None:
    """Where an SBD archive member goes: ``dataset/{train,val}.txt``, ``cls/*.mat`` and ``img/*.jpg``."""
    if member.parent.name == "dataset" and member.name in ("train.txt", "val.txt"):
        return member.name
    if member.parent.parent.name == "dataset" and (member.parent.name, member.suffix) in (("cls", ".mat"), ("img", ".jpg")):
        return f"{member.parent.name}/{member.name}"
    return None


def _is_archive(path: Path, dataset: str, download: str) -> bool:
    """True for a tar archive, False for a folder; anything else is a clear error."""
    if not path.exists():
        raise DatasetNotFoundError(f"The {dataset} input {path} does not exist.", download)
    if path.is_file() and not tarfile.is_tarfile(path):
        raise DatasetNotFoundError(f"The {dataset} input {path} is a file but not a tar archive.", download)
    return path.is_file()


def _unpack(archive: Path, staging: Path, destination: Callable[[PurePosixPath], str | None]) -> None:
    """Write each member that ``destination`` maps to a relative path below ``staging``, in one pass."""
    with tarfile.open(archive) as tar:
        for member in tqdm(tar, desc=f"reading {archive.name}", unit=" files"):
            relative = destination(PurePosixPath(member.name)) if member.isfile() else None
            if relative is None:
                continue
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)


def _find(base: Path, candidates: tuple[str, ...], required: tuple[str, ...], what: str, download: str) -> Path:
    """The first ``base / candidate`` holding every ``required`` path, or an error naming what is missing."""
    for candidate in candidates:
        if all((base / candidate / name).exists() for name in required):
            return base / candidate
    closest = next((c for c in candidates if (base / c).is_dir()), "")
    missing = [name for name in required if not (base / closest / name).exists()]
    where = f" in {closest}/" if closest else ""
    looked = f" (looked in {', '.join(str(base / c) for c in candidates)})" if len(candidates) > 1 else ""
    raise DatasetNotFoundError(f"{what} lacks {', '.join(missing)}{where}{looked}.", download)
