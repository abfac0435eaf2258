"""What does QGNet's paper-tier prior pretraining cost before its GPU step? Superpixels once, then a loader per step.

    python benchmarks/qgnet_prior_loader.py                    # 60 images; num_workers 0, 1, 2; two runs
    python benchmarks/qgnet_prior_loader.py --workers 0 8 16 --images 400 --runs 1 --out PATH

On a fabricated prepared PASCAL root (JPEGs of 500 x 375, PASCAL's most common size, that decode like photographs:
``paper_loader.fabricate``), as ``python -m fsslib.pretrain qgnet-prior`` runs it at its defaults:

* the superpixel cache (``cache_superpixels``: SLIC at skimage's defaults on the image as stored, then the segment
  table), in ``--superpixel-workers`` processes: CPU-seconds per image, and the CPU-hours for every image of PASCAL
  (trainaug and val) and of COCO 2014 (train and val), ``PAPER_IMAGES``, paid once;
* the batch items (``PriorImages``: decode, two 224 crops with flips, one superpixel patch and two 112 crops of it)
  through a ``DataLoader`` of batch 32: images per CPU-second (this process and its workers; steady on a shared
  machine, where the wall rate says nothing) and images per second of wall time.

Writes a Markdown report (``--out``, default ``benchmarks/results/qgnet_prior_loader_cpu.md``), each run its two
tables. The GPU side (the step's images per second) is ``benchmarks/qgnet_prior_step.py``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fsslib.pretrain.qgnet_prior.paper import (PAPER_IMAGES, EpochBatches, PaperPriorSettings, PriorImages,
                                               benchmark_images, cache_superpixels, superpixel_folder)
from paper_loader import HEIGHT, WIDTH, cpu_seconds, fabricate
from timing import add_report_options, command_line, write_report

DATASET_IMAGES = {"PASCAL (train + val)": PAPER_IMAGES["pascal"], "COCO 2014 (train + val)": PAPER_IMAGES["coco"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=60, help="fabricated images (each worker count reads them all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--superpixel-workers", type=int, default=1, help="processes computing the superpixels")
    add_report_options(parser, Path(__file__).parent / "results" / "qgnet_prior_loader_cpu.md", runs=2)
    args = parser.parse_args(argv)
    if args.images < args.batch_size:
        parser.error(f"--images {args.images} makes no batch of {args.batch_size} (a loader drops the last, "
                     "incomplete one): give at least --batch-size images")
    torch.set_num_threads(1)  # as in a DataLoader worker
    processes = f"{args.superpixel_workers} process" + ("es" if args.superpixel_workers > 1 else "")
    lines = ["# QGNet's paper-tier prior pretraining before the GPU step", "",
             f"Made by `{command_line(__file__, argv)}`. What is measured: what `python -m fsslib.pretrain "
             f"qgnet-prior` does on the CPU at its defaults, on {args.images} fabricated {WIDTH} x {HEIGHT} JPEGs "
             "(smooth colour fields with noise, quality 90). First, once per dataset, the superpixel cache (SLIC on "
             f"the image as stored, in {processes}, then the table of its segments). Then, "
             "per step, the batch items (decode, two random resized crops of 224 with flips, one superpixel cut from "
             f"a window around its box, two crops of 112 of it) through a DataLoader of batch {args.batch_size}.", "",
             "Images per second of wall time depend on what else runs on the machine; images per CPU-second (this "
             "process and its workers, `getrusage`) do much less, and give the cores each 1000 images per second "
             "of GPU step need.", ""]
    for run in range(1, args.runs + 1):
        if args.runs > 1:
            lines += [f"Run {run} of {args.runs}:", ""]
        with tempfile.TemporaryDirectory() as folder:  # each run computes its superpixels afresh
            lines += measure(Path(folder), args) + [""]
    write_report(lines[:-1], args.out, echo=False)


def measure(folder: Path, args: argparse.Namespace) -> list[str]:
    """One run's two tables: the superpixels' cost per image and per dataset, and the loader's rates per worker
    count (each row printed as it is made)."""
    root = fabricate(folder / "VOC2012", args.images)
    (root / "lists" / "val.txt").write_text("")  # the fabricated root has training images only
    (root / "lists" / "val_classes.json").write_text("{}")
    settings = PaperPriorSettings(data_root=str(root), superpixel_cache=str(folder / "superpixels"),
                                  workers=1, batch_size=args.batch_size)
    images, shown = benchmark_images(settings)
    start = cpu_seconds()
    cache_superpixels(images, shown, superpixel_folder(settings), settings.patches, args.superpixel_workers,
                      progress=False)  # its processes' CPU time joins RUSAGE_CHILDREN when they exit
    per_image = (cpu_seconds() - start) / len(images)
    lines = ["| superpixels (once) | CPU-seconds per image | "
             + " | ".join(f"CPU-hours for {name}'s {count:,}" for name, count in DATASET_IMAGES.items()) + " |",
             "|---|---|" + "---|" * len(DATASET_IMAGES),
             f"| SLIC | {per_image:.3f} | "
             + " | ".join(f"{per_image * count / 3600:.2f}" for count in DATASET_IMAGES.values()) + " |", "",
             "| num_workers | images/s (wall) | images per CPU-second | cores per 1000 images/s of GPU step |",
             "|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    dataset = PriorImages(images, shown, superpixel_folder(settings), settings)
    for workers in args.workers:
        start, cpu_start = time.perf_counter(), cpu_seconds()
        loader = DataLoader(dataset, batch_sampler=EpochBatches(len(dataset), args.batch_size, 0, 1),
                            num_workers=workers)
        count = sum(len(global_pairs) for global_pairs, _ in loader)
        del loader  # its workers exit: their CPU time joins RUSAGE_CHILDREN
        wall, per_cpu = count / (time.perf_counter() - start), count / (cpu_seconds() - cpu_start)
        lines.append(f"| {workers} | {wall:.1f} | {per_cpu:.1f} | {1000 / per_cpu:.1f} |")
        print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    main()
