"""Where a toy training step's CPU time goes, and what would make the long toy runs cheaper (toy tier, one thread).

    python benchmarks/toy_step_costs.py            # -> benchmarks/results/toy_step_costs.md
    python benchmarks/toy_step_costs.py --steps 3  # a smoke run

For BAM's base learner (``python -m fsslib.pretrain base-learner``, batch 16) and for the meta learners that train
longest (BAM, HDMNet, PI-CLIP on them: ``python -m fsslib.train``, batch 8, 1-shot), one process of one torch
thread times, step after step: building the batch (loading, augmenting, collating: what a ``DataLoader`` worker
would take off the training process) and the model's step (forward, loss, backward, optimiser). Then two levers on
the model's step, each timed alternately with the plain step on the same batch so that the machine's drift falls on
both: channels-last memory format, and bfloat16 autocast (which changes the numbers: a candidate only with a control
run that shows the same mIoU). CPU time of this process (``time.process_time``), medians over the steps; the toy
images are decoded into the sources' memory caches first, as they are after a run's first epoch.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fsslib.blocks.base_learner import BaseLearner
from fsslib.config import make_config
from fsslib.data.benchmarks import get_benchmark
from fsslib.data.episodes import EpisodeDataset, Source, collate_episodes
from fsslib.engine import open_source
from fsslib.methods import build_method
from fsslib.methods.base import segmentation_loss
from fsslib.models.backbones import build_backbone
from fsslib.pretrain.base_learner.data import BaseTrainingImages, training_names
from fsslib.pretrain.base_learner.train import tier_settings
from fsslib.train import make_optimizer
from timing import write_report  # the benchmarks' shared footer (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
METHODS = ("bam", "hdmnet", "piclip-bam", "piclip-hdmnet")


def cpu_ms(function: Callable[[], object]) -> tuple[object, float]:
    """``function()``'s result and the CPU milliseconds this process spent on it."""
    start = time.process_time()
    result = function()
    return result, 1e3 * (time.process_time() - start)


def warm(source: Source) -> Source:
    """``source`` with every image in its memory cache, as after a run's first epoch (toy sources cache)."""
    for name in source.names:
        source.load(name)
    return source


def base_learner_case() -> tuple[Callable[[], object], Callable[[object], Callable[[], object]], torch.nn.Module]:
    """(next batch, the step on a batch, the model) of the toy base learner of fold 0."""
    settings = tier_settings("toy")
    benchmark = get_benchmark("toy")
    base = benchmark.base_classes(0)
    source = warm(Source(benchmark, benchmark.train_split, None, cache=True))
    images = BaseTrainingImages(source, training_names(source, benchmark.fold_classes(0), settings.novel_rule), base,
                                settings.crop, (settings.scale_min, settings.scale_max), settings.max_angle, 0)
    batches = iter(DataLoader(images, batch_size=settings.batch_size, drop_last=True))
    learner = BaseLearner(build_backbone(settings.backbone, None), len(base), hidden=settings.hidden)
    optimizer = torch.optim.SGD(learner.parameters(), lr=settings.lr, momentum=settings.momentum)

    def step(batch) -> Callable[[], object]:
        views, labels = batch

        def run() -> None:
            loss = segmentation_loss(learner(views), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return run
    return lambda: next(batches), step, learner


def meta_learner_case(method: str) -> tuple[Callable[[], object], Callable[[object], Callable[[], object]], torch.nn.Module]:
    """(next batch, the step on a batch, the model) of ``method``'s toy training on fold 0, 1-shot."""
    cfg = make_config(method=method, preset="toy", fold=0, shots=1)
    torch.manual_seed(cfg.seed)
    model = build_method(cfg).train()
    episodes = EpisodeDataset(warm(open_source(cfg, get_benchmark("toy").train_split)), cfg.fold, cfg.shots, cfg.image_size,
                              cfg.episodes_per_epoch, cfg.seed, mode="train", novel_rule=cfg.novel_rule,
                              augment=cfg.augment, resize=cfg.resize)
    batches = iter(DataLoader(episodes, batch_size=cfg.batch_size, collate_fn=collate_episodes))
    optimizer = make_optimizer(cfg, model)

    def step(batch) -> Callable[[], object]:
        def run() -> None:
            loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return run
    return lambda: next(batches), step, model


def measure(name: str, case, steps: int) -> str:
    next_batch, step, model = case
    step(next_batch())()  # warm-up
    data, plain, last, bf16 = [], [], [], []
    for _ in range(steps):
        batch, ms = cpu_ms(next_batch)
        data.append(ms)
        plain.append(cpu_ms(step(batch))[1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16.append(cpu_ms(step(batch))[1])
        model.to(memory_format=torch.channels_last)
        last.append(cpu_ms(step(batch))[1])  # the batch's images convert on the first convolution
        model.to(memory_format=torch.contiguous_format)
    median = statistics.median
    share = median(data) / (median(data) + median(plain))
    return (f"| {name} | {median(data):.1f} | {median(plain):.1f} | {share:.0%} | {median(last) / median(plain):.2f}x "
            f"| {median(bf16) / median(plain):.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per model")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "toy_step_costs.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["# Where a toy training step's CPU time goes (toy tier, one thread)", "",
             "Made by `python benchmarks/toy_step_costs.py` (its docstring says what is timed). CPU ms per step, "
             f"medians of {args.steps} steps; the levers as the ratio of the step's time to the plain step's.", "",
             "| model (batch) | build the batch, ms | model step, ms | batch's share | channels-last step | "
             "bf16 autocast step |", "|---|---|---|---|---|---|",
             measure("base learner, fold 0 (16 images)", base_learner_case(), args.steps)]
    lines += [measure(f"{method}, fold 0 (8 episodes)", meta_learner_case(method), args.steps) for method in METHODS]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
