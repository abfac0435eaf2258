"""A toy training episode's images warped in one batch against one at a time (toy tier, one thread).

    python benchmarks/toy_augmentation.py              # -> benchmarks/results/toy_augmentation_toy.md
    python benchmarks/toy_augmentation.py --episodes 8 # a smoke run

PFENet's training augmentation (scale, rotation, flip, blur) warps the query and the K supports of an episode.
``EpisodeDataset`` draws each image's parameters in turn from the episode's generator and warps them in one batched
call (``fsslib.data.episodes.augment_keeping_objects``); :func:`episode_one_image_at_a_time` builds the same episode
with one warp per image, as fsslib did before. Both paths are timed alternately in one process (CPU time,
``time.process_time``, one torch thread) on the toy training images of fold 0, decoded into the source's memory cache
first as after a run's first epoch, and every episode of both paths is compared bit for bit.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from fsslib.config import make_config
from fsslib.data.benchmarks import get_benchmark
from fsslib.data.episodes import IGNORE, EpisodeDataset, load_episode_image, random_augment
from fsslib.engine import open_source

REPO = Path(__file__).resolve().parents[1]


def episode_one_image_at_a_time(dataset: EpisodeDataset, index: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(image (3, S, S), mask (S, S)) of training episode ``index``'s query and then its supports (1-way), each
    loaded and augmented alone from the episode's generator; an image whose warp loses its object stays unwarped."""
    query, supports, classes = dataset.sample_names(index)
    rng = np.random.default_rng([dataset.seed, dataset.epoch, index, 2])
    images = []
    resizes = [dataset.query_resize] + [dataset.support_resize] * len(supports[0])
    for (name, ways), resize in zip([(query, classes), *((support, [classes[0]]) for support in supports[0])], resizes):
        image, mask, _ = load_episode_image(dataset.source, name, ways, dataset.image_size, resize)
        warped, warped_mask = random_augment(image, mask, rng)
        in_view = bool(((warped_mask >= 1) & (warped_mask != IGNORE)).any())
        images.append((warped, warped_mask) if in_view else (image, mask))
    return images


def same_episode(dataset: EpisodeDataset, index: int) -> bool:
    """Whether ``dataset[index]`` equals the episode built one image at a time, bit for bit."""
    episode, expected = dataset[index], episode_one_image_at_a_time(dataset, index)
    return (torch.equal(episode.query_image, expected[0][0]) and torch.equal(episode.query_mask, expected[0][1])
            and torch.equal(episode.support_images[0], torch.stack([image for image, _ in expected[1:]]))
            and torch.equal(episode.support_masks[0], torch.stack([mask for _, mask in expected[1:]])))


def measure(shots: int, episodes: int, repeats: int) -> str:
    cfg = make_config(method="pfenet", preset="toy", fold=0, shots=shots)
    dataset = EpisodeDataset(open_source(cfg, get_benchmark("toy").train_split), cfg.fold, shots, cfg.image_size,
                             episodes, cfg.seed, mode="train")
    for name in dataset.source.names:
        dataset.source.load(name)  # the memory cache, as after a run's first epoch
    equal = all(same_episode(dataset, index) for index in range(episodes))
    batched, looped = [], []
    for _ in range(repeats):  # alternated, so that the machine's drift falls on both
        start = time.process_time()
        for index in range(episodes):
            dataset[index]
        batched.append(1e3 * (time.process_time() - start) / episodes)
        start = time.process_time()
        for index in range(episodes):
            episode_one_image_at_a_time(dataset, index)
        looped.append(1e3 * (time.process_time() - start) / episodes)
    one_batch, one_at_a_time = statistics.median(batched), statistics.median(looped)
    return (f"| {shots} | {1 + shots} | {one_at_a_time:.2f} | {one_batch:.2f} | {one_batch / one_at_a_time:.2f}x | "
            f"{'yes' if equal else 'NO'} |")


def main() -> None:
    from timing import write_report  # the benchmarks' shared footer (this script's folder is on sys.path when run)

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=200, help="training episodes per timing, fold 0")
    parser.add_argument("--repeats", type=int, default=7, help="alternated timings of each path (their median)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "toy_augmentation_toy.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["# A toy training episode's images warped in one batch against one at a time (toy tier, one thread)", "",
             "Made by `python benchmarks/toy_augmentation.py` (its docstring says what is timed). CPU ms to build one "
             "training episode of fold 0 (load from the memory cache, mask, resize, augment), medians of "
             f"{args.repeats} "
             f"alternated timings over {args.episodes} episodes.", "",
             "| shots | images per episode | one warp per image, ms | one batched warp, ms | batched / one at a time "
             "| every episode equal bit for bit |", "|---|---|---|---|---|---|"]
    lines += [measure(shots, args.episodes, args.repeats) for shots in (1, 5)]
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
