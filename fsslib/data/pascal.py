"""PASCAL-5i: build ``SegmentationClassAug`` and the split lists from VOC2012 and SBD.

The masks merge two sources into class-index PNGs (0 background, 1..20 classes,
255 void): VOC2012 ``SegmentationClass`` palette PNGs (whose pixel values already are
the class indices) and SBD's ``cls/*.mat`` files (field ``GTcls.Segmentation``).

val is VOC2012 ``ImageSets/Segmentation/val.txt`` (1,449 images). The train list is one of

* ``pfenet`` (default): PFENet's list, ``lists/pascal/voc_sbd_merge_noduplicate.txt`` in
  github.com/dvlab-research/PFENet (5,953 images; see their README and ``duplicate_removel.py``):
  the deduplicated union of VOC2012's segmentation train list (their ``voc_original_train.txt``,
  1,464 images) and SBD's ``train_noval.txt`` (their ``sbd_data.txt``, 5,623), which the SBD
  download page describes as SBD's train set "which excludes all val images" of VOC2012. From the
  archives' own split files::

      train = (VOC Segmentation/train.txt  ∪  (SBD dataset/train.txt ∩ VOC Main/train.txt))
              minus VOC Segmentation/val.txt

  (why this rule, and what could and could not be checked without the archives: ``docs/paper_tier.md``,
  "PASCAL-5i's train list"); the count is in ``fsslib_prepared.json`` (and printed);
* ``trainaug``: DeepLab's 10,582 images, (VOC seg train ∪ SBD train ∪ SBD val) minus VOC seg
  val, a superset of ``pfenet`` (1.8x as many images).

PFENet's loader additionally drops, per fold, images whose base classes all cover fewer than
2*32*32 pixels; fsslib applies that rule when sampling (``Benchmark.min_class_pixels``), not here.
The prepared root records the list used, and the image counts, in ``fsslib_prepared.json``.
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
from fsslib.errors import CorruptImageError, DatasetNotFoundError, InvalidMaskError, unknown
from fsslib.paths import DATASETS_DOC

N_CLASSES = 20
TRAIN_LISTS = ("pfenet", "trainaug")
VOC_DOWNLOAD = (
    "download VOCtrainval_11-May-2012.tar from the PASCAL VOC 2012 page "
    f"(host.robots.ox.ac.uk/pascal/VOC/voc2012/) and pass the .tar file or its extracted folder with --voc ({DATASETS_DOC})."
)
SBD_DOWNLOAD = (
    "download benchmark.tgz from the Berkeley SBD page "
    "(www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/) "
    f"and pass the .tgz file or its extracted folder with --sbd ({DATASETS_DOC})."
)
VOC_FILES = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt")
VOC_MAIN_TRAIN = "ImageSets/Main/train.txt"  # the detection train split: the pfenet list needs it
SBD_FILES = ("img", "cls", "train.txt", "val.txt")
VOC_FOLDERS = ("VOCdevkit/VOC2012", "VOC2012", "")  # where an extracted VOC input may hold its files
SBD_FOLDERS = ("benchmark_RELEASE/dataset", "dataset", "")
# Folder names that only occur in one of the two releases, to tell the archives apart.
VOC_NAMES = frozenset({"VOCdevkit", "VOC2012", "JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations"})
SBD_NAMES = frozenset({"benchmark_RELEASE", "benchmark_code_RELEASE", "cls", "inst"})


def prepare_pascal(voc: Path, sbd: Path, out: Path, train_list: str = "pfenet") -> Path:
    """Write PASCAL-5i to ``out`` in fsslib's layout and return ``out``.

    ``voc`` is VOCtrainval_11-May-2012.tar or its extracted folder (the one holding
    ``VOCdevkit/``, or ``VOC2012/`` itself); ``sbd`` is SBD's benchmark.tgz or its extracted
    folder (holding ``benchmark_RELEASE/`` or ``dataset/``); ``train_list`` is ``"pfenet"`` or
    ``"trainaug"`` (see the module docstring).

    Every input is checked before anything is written: both inputs exist and are the right
    release (swapped archives are named as such), extracted folders hold the needed files,
    and, once the archives are unpacked, every listed image has a mask and a JPEG. Archives
    are streamed (SBD's once, VOC's twice: lists and masks, then the listed JPEGs) and only
    the members needed are unpacked, into a temporary folder next to ``out`` (same disk, so
    images are hard-linked, not copied) that is deleted at the end.

    Writes ``JPEGImages/<stem>.jpg`` (hard links, or copies across disks),
    ``SegmentationClassAug/<stem>.png``, ``lists/{train,val}.txt`` with their class-presence
    indexes and, last, the marker ``fsslib_prepared.json`` (see :func:`staged_output`). An
    image annotated by both VOC2012 and SBD takes the VOC2012 mask, which marks object
    boundaries as void (255). Running it again gives the same tree.
    """
    if train_list not in TRAIN_LISTS:
        raise unknown("PASCAL train list", train_list, TRAIN_LISTS)
    voc, sbd, out = Path(voc), Path(sbd), Path(out)
    voc_files = VOC_FILES + ((VOC_MAIN_TRAIN,) if train_list == "pfenet" else ())
    _check_releases(voc, sbd)
    voc_dir = None if voc.is_file() else _find(voc, VOC_FOLDERS, voc_files, f"The folder {voc}", VOC_DOWNLOAD)
    sbd_dir = None if sbd.is_file() else _find(sbd, SBD_FOLDERS, SBD_FILES, f"The folder {sbd}", SBD_DOWNLOAD)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fsslib-pascal-") as unpacked:
        voc_dir = voc_dir or _unpack_voc(voc, Path(unpacked) / "voc", voc_files)
        sbd_dir = sbd_dir or _unpack_sbd(sbd, Path(unpacked) / "sbd")
        splits = pascal_splits(
            train_list,
            voc={s: _read_stems(voc_dir / "ImageSets/Segmentation" / f"{s}.txt") for s in ("train", "val")},
            sbd={s: _read_stems(sbd_dir / f"{s}.txt") for s in ("train", "val")},
            voc_main_train=_read_stems(voc_dir / VOC_MAIN_TRAIN) if train_list == "pfenet" else set(),
        )
        sources = _locate(sorted(set().union(*splits.values())), voc_dir, sbd_dir)
        with staged_output(out) as folder:
            (folder / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
            for split, stems in splits.items():
                presence: dict[str, dict[int, int]] = {}
                for stem in tqdm(stems, desc=f"PASCAL-5i {split}", unit=" images"):
                    presence[stem] = _prepare_image(stem, *sources[stem], folder)
                write_list(folder, split, [(f"JPEGImages/{s}.jpg", f"SegmentationClassAug/{s}.png") for s in stems])
                write_class_index(folder, split, presence)
            mark_prepared(folder, {"benchmark": "pascal", "train_list": train_list,
                                   "images": {split: len(stems) for split, stems in splits.items()}})
    return out


def pascal_splits(
    train_list: str, voc: dict[str, set[str]], sbd: dict[str, set[str]], voc_main_train: set[str]
) -> dict[str, list[str]]:
    """{"train": sorted stems, "val": sorted stems} by the rule of ``train_list`` (module docstring).

    ``voc`` and ``sbd`` map "train" / "val" to the stems of VOC2012's segmentation lists and
    SBD's lists; ``voc_main_train`` holds VOC2012's ``ImageSets/Main/train.txt`` (pfenet only).
    """
    if train_list == "pfenet":
        train = voc["train"] | (sbd["train"] & voc_main_train)
    else:
        train = voc["train"] | sbd["train"] | sbd["val"]
    return {"train": sorted(train - voc["val"]), "val": sorted(voc["val"])}


def _locate(stems: list[str], voc_dir: Path, sbd_dir: Path) -> dict[str, tuple[Path, Path]]:
    """{stem: (mask, image)} for every listed stem, VOC's files first; anything missing is one error."""
    sources, no_mask, no_image = {}, [], []
    for stem in stems:
        voc_mask, sbd_mask = voc_dir / "SegmentationClass" / f"{stem}.png", sbd_dir / "cls" / f"{stem}.mat"
        mask = voc_mask if voc_mask.is_file() else sbd_mask if sbd_mask.is_file() else None
        candidates = (voc_dir / "JPEGImages" / f"{stem}.jpg", sbd_dir / "img" / f"{stem}.jpg")
        image = next((path for path in candidates if path.is_file()), None)
        if mask is None:
            no_mask.append(stem)
        if image is None:
            no_image.append(stem)
        if mask is not None and image is not None:
            sources[stem] = (mask, image)
    problems = [
        f"{len(names)} listed images have no {what} in {first} or {second} (e.g. {names[0]})"
        for names, what, first, second in (
            (no_mask, "mask", voc_dir / "SegmentationClass", sbd_dir / "cls"),
            (no_image, "JPEG", voc_dir / "JPEGImages", sbd_dir / "img"),
        )
        if names
    ]
    if problems:
        raise DatasetNotFoundError(
            f"{'; '.join(problems)}. Nothing was written.",
            f"the inputs look incomplete: re-extract or re-download them. {VOC_DOWNLOAD} {SBD_DOWNLOAD}",
        )
    return sources


def _prepare_image(stem: str, mask: Path, image: Path, out: Path) -> dict[int, int]:
    """Place one image and its class-index mask in ``out``; return its class pixel counts."""
    label = read_voc_mask(mask) if mask.suffix == ".png" else read_sbd_mask(mask)
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


def _check_releases(voc: Path, sbd: Path) -> None:
    """Raise a clear error if an input is missing, not a tar archive, or the other dataset's release."""
    voc_kinds, sbd_kinds = _release(voc, "PASCAL VOC 2012", VOC_DOWNLOAD), _release(sbd, "SBD", SBD_DOWNLOAD)
    if voc_kinds == {"sbd"} and sbd_kinds == {"voc"}:
        raise DatasetNotFoundError(
            f"The VOC input {voc} is SBD's release and the SBD input {sbd} is VOC2012's: the two are swapped.",
            f"swap them: pass {sbd} with --voc and {voc} with --sbd.",
        )
    if voc_kinds == {"sbd"}:
        raise DatasetNotFoundError(
            f"The VOC input {voc} is SBD's release (it holds benchmark_RELEASE/ or cls/), not VOC2012's.",
            f"pass it with --sbd, and VOC2012 with --voc: {VOC_DOWNLOAD}",
        )
    if sbd_kinds == {"voc"}:
        raise DatasetNotFoundError(
            f"The SBD input {sbd} is VOC2012's release (it holds VOCdevkit/ or JPEGImages/), not SBD's.",
            f"pass it with --voc, and SBD with --sbd: {SBD_DOWNLOAD}",
        )


def _release(path: Path, dataset: str, download: str) -> set[str]:
    """Which releases ("voc", "sbd") the folder names in ``path`` point to: its first archive members, or
    the folder's own name and its entries. Missing inputs and non-tar files are clear errors."""
    if not path.exists():
        raise DatasetNotFoundError(f"The {dataset} input {path} does not exist.", download)
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise DatasetNotFoundError(f"The {dataset} input {path} is a file but not a tar archive.", download)
        with tarfile.open(path) as tar:
            names = {part for _, member in zip(range(50), tar) for part in PurePosixPath(member.name).parts}
    else:
        names = {path.name, *(entry.name for entry in path.iterdir())}
    return {kind for kind, signature in (("voc", VOC_NAMES), ("sbd", SBD_NAMES)) if names & signature}


def _unpack_voc(voc: Path, staging: Path, required: tuple[str, ...]) -> Path:
    """Unpack the needed members of the VOC archive: split lists and masks, then the listed JPEGs."""
    _unpack(voc, staging, _voc_member(None))
    stems = set().union(*(_read_stems(p) for p in (staging / "ImageSets/Segmentation").glob("*.txt")))
    _unpack(voc, staging, _voc_member(stems))
    return _find(staging, ("",), required, f"The archive {voc}", VOC_DOWNLOAD)


def _unpack_sbd(sbd: Path, staging: Path) -> Path:
    """Unpack the needed members of SBD's archive."""
    _unpack(sbd, staging, _sbd_member)
    return _find(staging, ("",), SBD_FILES, f"The archive {sbd}", SBD_DOWNLOAD)


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
        if member.parent.parts[-2:] == ("ImageSets", "Main") and member.name == "train.txt":
            return VOC_MAIN_TRAIN
        return None

    return destination


def _sbd_member(member: PurePosixPath) -> str | None:
    """Where an SBD archive member goes: ``dataset/{train,val}.txt``, ``cls/*.mat`` and ``img/*.jpg``."""
    if member.parent.name == "dataset" and member.name in ("train.txt", "val.txt"):
        return member.name
    if member.parent.parent.name == "dataset" and (member.parent.name, member.suffix) in (("cls", ".mat"), ("img", ".jpg")):
        return f"{member.parent.name}/{member.name}"
    return None


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
