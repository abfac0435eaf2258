"""Prepare benchmarks into fsslib's layout (see :mod:`fsslib.data.layout`).

    python -m fsslib.data.prepare toy    [--out DIR] [--seed 0]
    python -m fsslib.data.prepare pascal --voc VOCtrainval_11-May-2012.tar --sbd benchmark.tgz [--out DIR]
                                         [--pascal-train-list pfenet|trainaug]
    python -m fsslib.data.prepare coco   --root COCO_DIR [--out DIR]

Archives may be given as the downloaded .tar/.tgz files or as already extracted folders.
Every input is checked before anything is written, and a run that fails leaves no tree that
loads (the marker ``fsslib_prepared.json`` is written last; see :mod:`fsslib.data.layout`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Iterator

from fsslib.data import toyworld
from fsslib.data.benchmarks import COCO, PASCAL, TOY
from fsslib.data.layout import MARKER, mark_prepared, require_prepared
from fsslib.errors import FsslibError
from fsslib.paths import write_text

TOY_VERSION = 1  # bump when the generator changes, so stale toy worlds are rebuilt


def ensure_toyworld(root: Path, seed: int = 0) -> Path:
    """Generate the toy world at ``root`` unless an up-to-date copy is already there.

    The world is written in place and its completion marker last. A world made before the
    markers existed is complete when its ``meta.json`` carries the current version (written
    after every image), so it only gets the marker. Processes that ask at once (test workers,
    notebooks run side by side) take turns: one generates, the others then find it done. It renders on every core
    this process may use (at most 8), in one process inside a daemonic worker (a data loader's).
    """
    root = Path(root)
    meta_path = root / "meta.json"
    with _exclusive(root.parent / f".{root.name}.lock"):
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if meta.get("version") == TOY_VERSION and meta.get("seed") == seed:
                if not (root / MARKER).is_file():
                    mark_prepared(root, _toy_record(meta))
                return root
        (root / MARKER).unlink(missing_ok=True)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        daemon = multiprocessing.current_process().daemon  # a data loader's worker may start no process of its own
        toyworld.materialize(root, seed=seed, workers=1 if daemon else min(cores, 8))
        meta = {**json.loads(meta_path.read_text()), "version": TOY_VERSION}
        write_text(meta_path, json.dumps(meta, indent=1))
        mark_prepared(root, _toy_record(meta))
    return root


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; no lock where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process at a time is the user's to ensure
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _toy_record(meta: dict) -> dict:
    return {"benchmark": "toy", "seed": meta["seed"], "images": meta["counts"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsslib.data.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    toy = sub.add_parser("toy", help="generate the offline toy world")
    toy.add_argument("--out", type=Path, default=None, help=f"default: $FSSLIB_DATA/{TOY.root_name}")
    toy.add_argument("--seed", type=int, default=0)
    pascal = sub.add_parser("pascal", help="PASCAL-5i from the VOC2012 and SBD archives")
    pascal.add_argument("--voc", type=Path, required=True, help="VOCtrainval_11-May-2012.tar or its extracted folder")
    pascal.add_argument("--sbd", type=Path, required=True, help="SBD benchmark.tgz or its extracted folder")
    pascal.add_argument("--out", type=Path, default=None, help=f"default: $FSSLIB_DATA/{PASCAL.root_name}")
    pascal.add_argument("--pascal-train-list", default="pfenet", metavar="{pfenet,trainaug}",
                        help="pfenet (default): PFENet's 5,953 training images; trainaug: DeepLab's 10,582 "
                             "(rules in fsslib/data/pascal.py)")
    coco = sub.add_parser("coco", help="COCO-20i from COCO 2014 images and instances JSON")
    coco.add_argument("--root", type=Path, required=True,
                      help="folder with train2014/, val2014/ and annotations/instances_{train,val}2014.json")
    coco.add_argument("--out", type=Path, default=None, help=f"default: $FSSLIB_DATA/{COCO.root_name}")
    args = parser.parse_args(argv)
    try:
        root = _prepare(args)
    except FsslibError as error:
        parser.exit(2, f"error: {error}\n")
    record = require_prepared(root, f"python -m fsslib.data.prepare {args.benchmark}")
    images = ", ".join(f"{split} {count} images" for split, count in record["images"].items())
    train_list = f" (train list {record['train_list']!r})" if "train_list" in record else ""
    print(f"prepared {args.benchmark} at {root}: {images}{train_list}")


def _prepare(args: argparse.Namespace) -> Path:
    if args.benchmark == "toy":
        root = ensure_toyworld(args.out or TOY.root(), seed=args.seed)
    elif args.benchmark == "pascal":
        from fsslib.data.pascal import prepare_pascal

        root = prepare_pascal(args.voc, args.sbd, args.out or PASCAL.root(), train_list=args.pascal_train_list)
    else:
        from fsslib.data.coco import prepare_coco

        root = prepare_coco(args.root, args.out or COCO.root())
    return root


if __name__ == "__main__":
    main()
