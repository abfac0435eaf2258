"""Benchmark definitions: class names, fold splits, roots and the rules of each benchmark.

PASCAL-5i fold ``i`` holds VOC ids ``5i+1 .. 5i+5``; COCO-20i fold ``i`` holds the
contiguous ids ``{i+1, i+5, ..., i+77}`` (interleaved, PFENet/HSNet/BAM/PI-CLIP) or
``20i+1 .. 20i+20`` (contiguous, older works); the toy world mirrors PASCAL-5i.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from fsslib.data import toyworld
from fsslib.data.folder import LAYOUT, MIN_CLASS_PIXELS, class_key, folder_index
from fsslib.errors import DatasetNotFoundError, FsslibError, UnknownNameError, unknown
from fsslib.paths import data_root

PASCAL_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# How CLIP prompts usually spell the VOC names.
PASCAL_PROMPT_NAMES: dict[str, str] = {
    "aeroplane": "airplane", "diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor",
}
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
COCO_FOLD_CONVENTIONS = ("interleaved", "contiguous")


@dataclass(frozen=True)
class Benchmark:
    """A few-shot segmentation benchmark: its classes, folds, location and rules."""

    name: str
    class_names: tuple[str, ...]
    n_folds: int
    root_name: str  # folder below the data root
    train_split: str
    select_split: str | None  # novel-class episodes for checkpoint selection; None: no held-out split, keep the last epoch
    test_split: str
    min_class_pixels: int  # PFENet: a class counts in an image only above this many pixels
    prepare_command: str
    fold_convention: str = "blocks"
    folds: tuple[tuple[int, ...], ...] = ()  # explicit novel ids per fold (a dataset folder's); () = the convention

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def root(self) -> Path:
        return data_root() / self.root_name

    def fold_classes(self, fold: int) -> list[int]:
        """The novel (test) class ids of ``fold``."""
        if not 0 <= fold < self.n_folds:
            raise UnknownNameError(f"--fold {fold} is not a fold of benchmark {self.name!r}, which has {self.n_folds}.",
                                   f"pass --fold {', '.join(map(str, range(self.n_folds - 1)))} or {self.n_folds - 1}."
                                   if self.n_folds > 1 else "pass --fold 0.")
        if self.folds:
            return list(self.folds[fold])
        per_fold = self.n_classes // self.n_folds
        if self.fold_convention == "interleaved":
            return [fold + 1 + self.n_folds * k for k in range(per_fold)]
        return list(range(per_fold * fold + 1, per_fold * (fold + 1) + 1))

    def base_classes(self, fold: int) -> list[int]:
        novel = set(self.fold_classes(fold))
        return [c for c in range(1, self.n_classes + 1) if c not in novel]

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id - 1]

    def class_id(self, name: str) -> int:
        """The id of a class name; an unknown name lists the valid ones."""
        if name not in self.class_names:
            raise unknown(f"class of {self.name}", name, self.class_names)
        return self.class_names.index(name) + 1

    def prompt_name(self, class_id: int) -> str:
        """The class name as CLIP prompts spell it."""
        name = self.class_name(class_id)
        return PASCAL_PROMPT_NAMES.get(name, name) if self.name == "pascal" else name


TOY = Benchmark(
    name="toy", class_names=toyworld.CLASS_NAMES, n_folds=4, root_name="toyworld",
    train_split="train", select_split="val", test_split="test", min_class_pixels=2 * 8 * 8,
    prepare_command="python -m fsslib.data.prepare toy",
)
PASCAL = Benchmark(
    name="pascal", class_names=PASCAL_CLASSES, n_folds=4, root_name="VOCdevkit/VOC2012",
    train_split="train", select_split=None, test_split="val", min_class_pixels=2 * 32 * 32,
    prepare_command="python -m fsslib.data.prepare pascal --voc PATH/TO/VOCtrainval_11-May-2012.tar --sbd PATH/TO/benchmark.tgz",
)
COCO = Benchmark(
    name="coco", class_names=COCO_CLASSES, n_folds=4, root_name="coco",
    train_split="train", select_split=None, test_split="val", min_class_pixels=2 * 32 * 32,
    prepare_command="python -m fsslib.data.prepare coco --root PATH/TO/coco",
    fold_convention="interleaved",
)
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (TOY, PASCAL, COCO)}


def folder_benchmark(path: str, novel_classes: tuple[int | str, ...] = ()) -> Benchmark:
    """The benchmark of the dataset folder ``path`` (:mod:`fsslib.data.folder`), checked completely; its
    ``novel_classes`` (without folds.json) are ids or names of its classes.txt."""
    root = Path(path).expanduser().resolve()
    names, folds, _ = folder_index(root)
    if folds and novel_classes:
        raise DatasetNotFoundError(f"{root} defines its folds (folds.json) and novel classes were given as well.",
                                   "drop --novel-classes, or remove folds.json.")
    if not folds:
        listed = ", ".join(f"{number} {name!r}" for number, name in enumerate(names, start=1))
        if not novel_classes:
            numbers = list(range(1, len(names) + 1))
            novel = numbers[-2:] if len(numbers) > 2 else numbers[-1:]  # e.g. the last two classes kept unseen
            example_folds = [novel, numbers[:2]] if len(numbers) > len(novel) else [novel]
            raise DatasetNotFoundError(f"{root} defines no folds (no folds.json) and no novel classes were given.",
                                       f"pass the ids or names of classes.txt kept unseen ({listed}), e.g. "
                                       f"--novel-classes {','.join(map(str, novel))}, or write folds.json: "
                                       f'{{"folds": {example_folds}}}.')
        ids = {**{class_key(name): number for number, name in enumerate(names, start=1)},
               **{number: number for number in range(1, len(names) + 1)}}
        unknown_classes = [c for c in novel_classes if (class_key(c) if isinstance(c, str) else c) not in ids]
        if unknown_classes:
            raise DatasetNotFoundError(f"Novel class(es) {unknown_classes} are not in {root / 'classes.txt'}.",
                                       f"pass ids or names of its classes ({listed}), e.g. --novel-classes 1,2.")
        folds = (tuple(dict.fromkeys(ids[class_key(c) if isinstance(c, str) else c] for c in novel_classes)),)
    return Benchmark(name="folder", class_names=tuple(names), n_folds=len(folds), root_name=str(root),
                     train_split="train", select_split=None, test_split="test", min_class_pixels=MIN_CLASS_PIXELS,
                     prepare_command=f"fix the folder {root}: {LAYOUT}", folds=folds)


def split_list(text: str, item: Callable[[str], Any]) -> list[Any]:
    """A comma-separated command-line list, each entry stripped and read by ``item``."""
    return [item(entry.strip()) for entry in text.split(",") if entry.strip()]


def id_or_name(text: str) -> int | str:
    """A class given on a command line (``--novel-classes``): its id (digits) or its name."""
    return int(text) if text.isdigit() else text


def benchmark_spec(name: str) -> str:
    """A benchmark as files record it: its name, a dataset folder as ``folder:`` and its absolute path."""
    if name.startswith("folder:"):
        return f"folder:{Path(name.partition(':')[2]).expanduser().resolve()}"
    return name


def folder_flags(benchmark: str, fold: int, novel_classes: Sequence[int] = ()) -> str:
    """The command-line flags naming a dataset folder's fold: ``--benchmark folder:PATH`` with its ``novel_classes``'
    ids (``--novel-classes 3,4``), or ``--fold F`` of its folds.json."""
    classes = f"--novel-classes {','.join(map(str, novel_classes))}" if novel_classes else f"--fold {fold}"
    return f"--benchmark {benchmark_spec(benchmark)} {classes}"


class BenchmarkSettings(Protocol):
    """What a benchmark is read from: the fields of :class:`fsslib.config.Config` (and of a method's config) that
    name it."""

    benchmark: str
    fold: int
    coco_folds: str
    novel_classes: list[int | str]


def given_novel_classes(cfg: BenchmarkSettings) -> list[int]:
    """The ids of the novel classes a :class:`~fsslib.config.Config` gives a dataset folder (``--novel-classes``, ids
    or names), or none (the folder's folds.json, or another benchmark)."""
    return benchmark_of(cfg).fold_classes(cfg.fold) if cfg.novel_classes else []


def benchmark_of(cfg: BenchmarkSettings) -> Benchmark:
    """The benchmark a :class:`~fsslib.config.Config` names (with its COCO fold convention and novel classes)."""
    return get_benchmark(cfg.benchmark, cfg.coco_folds, cfg.novel_classes)


def class_list(benchmark: Benchmark, extra_classes: Sequence[str] = ()) -> list[str]:
    """The names a method encodes for class ids 1, 2, ...: the benchmark's (as CLIP prompts spell them), then
    ``extra_classes`` not among them (:mod:`fsslib.predict`'s names of the user's classes; names compare as
    :func:`~fsslib.data.folder.class_key` does)."""
    names = [benchmark.prompt_name(c) for c in range(1, benchmark.n_classes + 1)]
    known = set(map(class_key, names + list(benchmark.class_names)))  # "aeroplane" is PASCAL's "airplane", not new
    extra: dict[str, str] = {}
    for name in extra_classes:
        extra.setdefault(class_key(name), name)  # the first spelling of each class
    return names + [name for key, name in extra.items() if key not in known]


def get_benchmark(name: str, coco_folds: str = "interleaved", novel_classes: Sequence[int | str] = ()) -> Benchmark:
    """Look a benchmark up by name; ``coco_folds`` picks COCO-20i's fold convention; ``folder:PATH`` is a dataset
    folder (:mod:`fsslib.data.folder`), whose novel classes are its ``folds.json`` or ``novel_classes`` (which a
    named benchmark refuses)."""
    if name.startswith("folder:"):
        return folder_benchmark(name.partition(":")[2], tuple(novel_classes))
    if name not in BENCHMARKS:
        raise unknown("benchmark", name, [*BENCHMARKS, "folder:PATH"])
    if novel_classes:  # a named benchmark's folds are fixed: ignoring the classes would score others than asked
        raise FsslibError(f"--novel-classes is for a dataset folder; benchmark {name!r} sets each fold's novel classes "
                          "itself.", "drop --novel-classes and pick the fold with --fold, or pass --benchmark "
                          "folder:PATH with your own classes (docs/your_data.md).")
    if name == "coco":
        if coco_folds not in COCO_FOLD_CONVENTIONS:
            raise unknown("COCO-20i fold convention", coco_folds, COCO_FOLD_CONVENTIONS)
        return replace(COCO, fold_convention=coco_folds)
    return BENCHMARKS[name]
