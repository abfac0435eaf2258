"""Can the paper tier's training loader keep up with a 2x faster GPU step? Images per second of the loader.

    python benchmarks/paper_loader.py                         # num_workers 0, 1, 2, augmented in each place; two runs
    python benchmarks/paper_loader.py --workers 8 16 --episodes 400 --runs 1 --out PATH   # on a GPU machine

A fabricated prepared PASCAL-5i root (``--images`` JPEGs of 500 x 375, PASCAL's most common size, of smooth
random colour fields with sensor noise, so they decode like photographs rather than like pure noise; labels with
one or two objects of random VOC classes) feeds what ``fsslib.train`` runs at ``--preset paper``: the fold's
:class:`~fsslib.data.episodes.EpisodeDataset` in training mode (PFENet's augmentation: scale, rotation, blur,
flip, crop to 473 x 473; PFENet's novel-class rule), batches of 4 1-shot episodes through a ``DataLoader`` with
``collate_episodes``. An episode holds 1 + K images. Reported: images per second of wall time, and images per
CPU-second (this process and its workers; steady on a shared machine), and from the latter the CPU cores that
each method's step would need at twice today's GPU speed (4 episodes of 2 images a step; the step times: the
medians of the ``today`` rows of a ``benchmarks/gpu_speed.py`` report, ``--step-times``, :func:`step_ms`). Each
row augments the episodes in one place (``--augment-on``): in the loader, or on the trainer's device, where the
loader only draws the parameters, decodes and resizes; what the device takes over is timed too, on the CPU or
a GPU (``--moved-on``, :func:`device_augmentation_ms`).
Writes a Markdown report (``--out``, default ``benchmarks/results/paper_loader_cpu.md``), each run a table.
"""
from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fsslib.data.benchmarks import PASCAL
from fsslib.data.episodes import AUGMENT_ON, EpisodeDataset, Source, augment_episode_batch, collate_episodes
from fsslib.data.layout import mark_prepared, write_class_index, write_list
from fsslib.tables import markdown_tables

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_report_options, command_line, run_tables, write_report  # noqa: E402

STEP_TIMES = Path(__file__).resolve().parent / "results" / "gpu_speed_h200.md"
GPU_SPEED_NAMES = {"pfenet": "PFENet", "bam": "BAM", "piclip": "PI-CLIP", "hdmnet": "HDMNet"}  # its rows' methods
WIDTH, HEIGHT = 500, 375


def step_ms(report: Path) -> dict[str, float]:
    """Each method's bf16 training step on the GPU, in ms: the median of its ``today`` rows (one per run) in the
    tables of a ``benchmarks/gpu_speed.py`` report, which move between runs."""
    times: dict[str, list[float]] = {}
    for table in markdown_tables(report.read_text()):
        if table["header"][:3] != ["method", "lever", "ms / step"]:
            continue
        for method, lever, ms, *_ in table["rows"]:
            if lever == "today" and method in GPU_SPEED_NAMES:
                times.setdefault(GPU_SPEED_NAMES[method], []).append(float(ms))
    failed = sorted(name for name, values in times.items() if not all(math.isfinite(v) for v in values))
    if failed:
        raise SystemExit(f"{report} has a `today` row of {', '.join(failed)} that timed nothing (not a number): "
                         "give --step-times a report whose today rows all ran.")
    missing = [name for name in GPU_SPEED_NAMES.values() if name not in times]
    if missing:
        raise SystemExit(f"{report} has no `today` row of {', '.join(missing)}: give --step-times a report of "
                         "python benchmarks/gpu_speed.py that timed them.")
    return {name: statistics.median(times[name]) for name in GPU_SPEED_NAMES.values()}


def photo_like(rng: np.random.Generator) -> np.ndarray:
    """(375, 500, 3) uint8: a smooth colour field (bilinear up-sampling of 12 x 16 random colours) plus noise."""
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 12, 16)).astype(np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False)[0]
    pixels = smooth.permute(1, 2, 0).numpy() + rng.normal(0, 8, (HEIGHT, WIDTH, 3))
    return pixels.clip(0, 255).astype(np.uint8)


def fabricate(root: Path, images: int, seed: int = 0) -> Path:
    """A prepared PASCAL root with ``images`` training images and labels (``lists/train.txt`` and its index)."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    pairs, presence = [], {}
    for index in range(images):
        stem = f"2008_{index:06d}"
        Image.fromarray(photo_like(rng)).save(root / "JPEGImages" / f"{stem}.jpg", quality=90)
        label = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        for class_id in rng.choice(np.arange(1, 21), size=int(rng.integers(1, 3)), replace=False):
            top, left = int(rng.integers(0, HEIGHT - 150)), int(rng.integers(0, WIDTH - 150))
            height, width = int(rng.integers(80, 150)), int(rng.integers(80, 150))
            label[top:top + height, left:left + width] = class_id
        label[label.shape[0] // 2, :] = np.where(label[label.shape[0] // 2, :] > 0, 255, 0)  # a void line, as VOC's
        Image.fromarray(label).save(root / "SegmentationClassAug" / f"{stem}.png")
        pairs.append((f"JPEGImages/{stem}.jpg", f"SegmentationClassAug/{stem}.png"))
        values, counts = np.unique(label, return_counts=True)
        presence[stem] = {int(v): int(n) for v, n in zip(values, counts) if v not in (0, 255)}
    write_list(root, "train", pairs)
    write_class_index(root, "train", presence)
    mark_prepared(root, {"benchmark": "pascal", "fabricated": True})
    return root


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader's workers, joined at the end)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def loader_rates(root: Path, workers: int, episodes: int, shots: int, image_size: int, batch_size: int,
                 augment_on: str = "loader") -> tuple[float, float]:
    """(images per second of wall time, images per CPU-second) of the training episodes through the trainer's
    DataLoader, workers' start included; ``augment_on="device"``: the loader draws the augmentation and leaves it
    to the trainer (:func:`fsslib.data.episodes.augment_episode_batch`). The CPU rate holds on a shared machine,
    where the wall rate depends on what else runs: a machine with N free cores loads about N times it."""
    dataset = EpisodeDataset(Source(PASCAL, "train", root=root), 0, shots, image_size, episodes, seed=0,
                             mode="train", novel_rule="pfenet", augment="pfenet", resize="pad", augment_on=augment_on)
    start, cpu = time.perf_counter(), cpu_seconds()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_episodes, num_workers=workers)
    count = sum(len(batch) for batch in loader) * (1 + shots)
    del loader  # its workers exit: their CPU time joins RUSAGE_CHILDREN
    return count / (time.perf_counter() - start), count / (cpu_seconds() - cpu)


def device_augmentation_ms(root: Path, shots: int, image_size: int, batch_size: int, device: str = "cpu",
                           batches: int = 8) -> float:
    """ms per image of the augmentation the loader leaves to the device with ``augment_on="device"``
    (:func:`fsslib.data.episodes.augment_episode_batch` on batches of ``batch_size`` episodes already on ``device``):
    what the trainer's device takes over. On the CPU, process time (one thread); on a GPU, wall time between
    synchronisations, after one untimed batch."""
    dataset = EpisodeDataset(Source(PASCAL, "train", root=root), 0, shots, image_size, batch_size * (batches + 1),
                             seed=0, mode="train", novel_rule="pfenet", augment="pfenet", resize="pad",
                             augment_on="device")
    loaded = [collate_episodes([dataset[b * batch_size + i] for i in range(batch_size)]).to(device)
              for b in range(batches + 1)]
    augment_episode_batch(loaded[0])
    on_gpu = device.startswith("cuda")
    clock = time.perf_counter if on_gpu else time.process_time
    if on_gpu:
        torch.cuda.synchronize(device)
    start = clock()
    for batch in loaded[1:]:
        augment_episode_batch(batch)
    if on_gpu:
        torch.cuda.synchronize(device)
    return (clock() - start) * 1000 / (batches * batch_size * (1 + shots))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=96, help="timed episodes per worker count")
    parser.add_argument("--images", type=int, default=120, help="fabricated training images")
    parser.add_argument("--image-size", type=int, default=473)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--augment-on", nargs="+", choices=AUGMENT_ON, default=list(AUGMENT_ON),
                        help="where the episodes are augmented: loader (its workers) or device (the trainer's: "
                             "the loader draws the parameters and decodes and resizes only); a row each")
    parser.add_argument("--moved-on", default="cpu",
                        help="the device that times what --augment-on device leaves to the trainer (cpu, cuda)")
    parser.add_argument("--step-times", type=Path, default=STEP_TIMES,
                        help="a benchmarks/gpu_speed.py report: its `today` rows give each method's GPU step")
    add_report_options(parser, Path(__file__).parent / "results" / "paper_loader_cpu.md", runs=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in a DataLoader worker; the main process of workers=0 then does the same work
    today_ms = step_ms(args.step_times)
    needed = {method: args.batch_size * (1 + args.shots) / (ms / 2 / 1000) for method, ms in today_ms.items()}
    today = ", ".join(f"{method} {ms:.1f}" for method, ms in today_ms.items())
    lines = ["# The paper tier's training loader on this machine's CPU", "",
             f"Made by `{command_line(__file__, argv)}`. What is measured: the training loader of "
             f"`python -m fsslib.train --preset paper` on PASCAL-5i fold 0 (PFENet's augmentation, {args.image_size} x "
             f"{args.image_size}, {args.shots}-shot, batches of {args.batch_size} episodes), on {args.images} "
             f"fabricated {WIDTH} x {HEIGHT} JPEGs (smooth colour fields with noise, quality 90); "
             f"{args.episodes} timed episodes per row after one untimed batch.",
             "",
             "Images per second of wall time depend on what else runs on the machine; images per CPU-second (this "
             "process and its DataLoader workers, `getrusage`) do much less. The cores columns: CPU cores of this "
             "kind needed to feed each method's step at twice today's GPU speed, from the images per CPU-second. "
             f"Today's bf16 ms per step, the medians of the `today` rows of `{args.step_times.name}`: {today}.",
             "",
             "The augmented-on column: `loader`, the loader's workers warp and blur each image (the toy preset's "
             "`--augment-on`); `device`, they leave it to the trainer, which augments the batch on the GPU (the "
             "paper preset's). The last table: what the device then takes over, timed on `--moved-on`.",
             ""]
    header = ["augmented on", "num_workers", "images/s (wall)", "images per CPU-second",
              *(f"cores for {m} at 2x ({needed[m]:.0f} images/s)" for m in today_ms)]
    with tempfile.TemporaryDirectory() as folder:
        root = fabricate(Path(folder) / "VOC2012", args.images)
        loader_rates(root, 0, args.batch_size, args.shots, args.image_size, args.batch_size)  # first calls' costs
        moved_ms = device_augmentation_ms(root, args.shots, args.image_size, args.batch_size, args.moved_on)

        def measure() -> Iterator[list[str]]:
            for augment_on in args.augment_on:
                for workers in args.workers:
                    wall, per_cpu = loader_rates(root, workers, args.episodes, args.shots, args.image_size,
                                                 args.batch_size, augment_on)
                    yield [augment_on, str(workers), f"{wall:.1f}", f"{per_cpu:.1f}",
                           *(f"{needed[m] / per_cpu:.1f}" for m in today_ms)]

        lines += run_tables(args.runs, header, measure)
    lines += ["", "What the device takes over with `--augment-on device`:", "",
              "| augmentation left to the device | timed on | ms per image |", "|---|---|---|",
              f"| augment_episode_batch, batches of {args.batch_size} episodes | {args.moved_on} | {moved_ms:.2f} |"]
    write_report(lines, args.out, echo=False)


if __name__ == "__main__":
    main()
