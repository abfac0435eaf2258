"""How long does QGNet's paper-tier prior pretraining take on a GPU? Its training step, timed, and the GPU-hours.

    python benchmarks/qgnet_prior_step.py                          # CUDA, batch 256, bf16: the recipe
    python benchmarks/qgnet_prior_step.py --device cpu --batch-size 16 --image-size 64 --patch-size 64 --steps 2

``fsslib.pretrain.qgnet_prior.paper.training_step`` (MoCo v2 with the local patch loss, a ResNet-50 from random
weights, the colours drawn on the device, the key encoder's momentum update, SGD) on random uint8 views of the
recipe's sizes: the loader is left out (``benchmarks/qgnet_prior_loader.py`` measures it). After ``--warmup``
untimed steps, ``--steps`` timed ones with a synchronisation at the end. Reported: milliseconds per step, images
per second, and the GPU-hours of the paper's budgets at that rate (``PAPER_EPOCHS`` over ``PAPER_IMAGES``: 1000
epochs of PASCAL's trainaug and val images, 200 of COCO 2014's; steps of ``--batch-size``, the last partial batch
dropped). Writes a Markdown report
(``--out``, default ``benchmarks/results/qgnet_prior_step_<gpu>.md``, printed only on the CPU; each of ``--runs`` a
table).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch

from fsslib.device import resolve_device
from fsslib.pretrain.qgnet_prior.moco import LOSS_SETS
from fsslib.pretrain.qgnet_prior.paper import (PAPER_EPOCHS, PAPER_IMAGES, PaperPriorSettings, pretraining_model,
                                               training_step)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import add_report_options, command_line, default_report, run_tables, write_report  # noqa: E402

BUDGETS = {f"{name}, {PAPER_EPOCHS[benchmark]} epochs": (PAPER_IMAGES[benchmark], PAPER_EPOCHS[benchmark])
           for benchmark, name in (("pascal", "PASCAL"), ("coco", "COCO 2014"))}  # (images, epochs)


def main(argv: list[str] | None = None) -> None:
    recipe = PaperPriorSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--image-size", type=int, default=recipe.image_size)
    parser.add_argument("--patch-size", type=int, default=recipe.patch_size)
    parser.add_argument("--precision", choices=("bf16", "fp32"), nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    add_report_options(parser, "benchmarks/results/qgnet_prior_step_<the GPU>.md; printed only on the CPU")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = ["# QGNet's paper-tier prior pretraining step", "",
             f"Made by `{command_line(__file__, argv)}`. The training step on {name}: batch {args.batch_size}, "
             f"views {args.image_size} and {args.patch_size}, random uint8 views (the loader left out), "
             f"{args.steps} timed steps after {args.warmup}. The GPU-hours are the paper's budgets at that rate.", ""]
    header = ["precision", "ms / step", "images / s", *(f"GPU-hours, {budget}" for budget in BUDGETS)]

    def rows() -> Iterator[list[str]]:
        for precision in args.precision:
            seconds = step_seconds(recipe, args, precision, device)
            hours = [images // args.batch_size * epochs * seconds / 3600 for images, epochs in BUDGETS.values()]
            yield [precision, f"{seconds * 1000:.1f}", f"{args.batch_size / seconds:.0f}",
                   *(f"{h:.1f}" for h in hours)]

    lines += run_tables(args.runs, header, rows)
    write_report(lines, args.out or default_report("qgnet_prior_step", str(device)), device=str(device), echo=False)


def step_seconds(recipe: PaperPriorSettings, args: argparse.Namespace, precision: str, device: torch.device) -> float:
    """Seconds per training step at ``precision``: a fresh model, ``args.warmup`` untimed steps, then the mean of
    ``args.steps`` timed ones (synchronised at the start and end on CUDA)."""
    model, optimizer = pretraining_model(replace(recipe, batch_size=args.batch_size, precision=precision), device)
    generator = torch.Generator().manual_seed(0)
    pairs = {"global": torch.randint(0, 256, (args.batch_size, 2, 3, args.image_size, args.image_size),
                                     dtype=torch.uint8, generator=generator),
             "local": torch.randint(0, 256, (args.batch_size, 2, 3, args.patch_size, args.patch_size),
                                    dtype=torch.uint8, generator=generator)}
    if device.type == "cuda":
        pairs = {key: value.pin_memory() for key, value in pairs.items()}
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        training_step(model, optimizer, pairs, LOSS_SETS[recipe.losses], generator, precision == "bf16")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / args.steps


if __name__ == "__main__":
    main()
