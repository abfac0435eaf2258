"""QGNet speed on the toy tier: pretraining images/s, superpixels per image, evaluation episodes/s.

    python benchmarks/qgnet_speed.py    # -> benchmarks/results/qgnet_speed_toy.md

* **Pretraining** times :func:`~fsslib.pretrain.qgnet_prior.train.train_prior_extractor` with the
  shipped recipe's batch (64 images) for ``--steps`` steps, per loss set; images/s counts the
  batch's images once per step (the global loss encodes two views of each, the local loss two
  views of one patch of each). Superpixels are computed before the clock starts, and the held-out
  learning curve's evaluation (its last point is always taken) is not counted.
* **Superpixels**: SLIC and Felzenszwalb with the toy settings on 64 x 64 toy scenes, one process.
* **Evaluation** runs the toy preset's QGNet (random prior extractor and weights: speed does not
  depend on them) over test episodes of fold 0 through :func:`fsslib.engine.evaluate_model`,
  data loading included.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from fsslib.config import make_config
from fsslib.data.episodes import EpisodeDataset
from fsslib.engine import evaluate_model, open_source
from fsslib.methods import build_method
from fsslib.pretrain.qgnet_prior.patches import TOY_SUPERPIXELS, compute_table
from fsslib.pretrain.qgnet_prior.train import PriorSettings, train_prior_extractor, training_images
from timing import write_report

RESULTS = Path(__file__).resolve().parent / "results"


def pretraining_images_per_s(losses: str, steps: int, workdir: Path, precision: str = "fp32") -> float:
    """Images per second of ``steps`` pretraining steps with the shipped batch size (superpixels cached first)."""
    settings = PriorSettings(steps=steps, losses=losses, pool_size=512, eval_every=10 ** 9, precision=precision)
    train_prior_extractor(workdir / "warmup.pt", replace(settings, steps=1), cache=workdir, progress=False,
                          n_eval_images=40)
    metadata = train_prior_extractor(workdir / f"{losses}.pt", settings, cache=workdir, progress=False,
                                     n_eval_images=40)
    seconds = metadata["wall_time_s"]
    return steps * settings.batch_size / (seconds["train"] - seconds["of_which_curve"])  # the learning curve not counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="pretraining steps timed per loss set")
    parser.add_argument("--images", type=int, default=200, help="images segmented per superpixel method")
    parser.add_argument("--episodes", type=int, default=300, help="evaluation episodes per setting")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = [f"QGNet on the toy tier, {args.threads} CPU threads (`python benchmarks/qgnet_speed.py`).", "",
             "| measurement | value |", "|---|---|"]
    with tempfile.TemporaryDirectory() as workdir:
        for losses in ("global", "global_local"):
            rate = pretraining_images_per_s(losses, args.steps, Path(workdir))
            lines.append(f"| pretraining, losses {losses}, batch 64, {args.steps} steps | {rate:.1f} images/s |")
    images = training_images(PriorSettings(pool_size=args.images))
    for method, settings in TOY_SUPERPIXELS.items():
        start = time.perf_counter()
        compute_table(images, method, settings, workers=1)
        milliseconds = 1e3 * (time.perf_counter() - start) / len(images)
        lines.append(f"| superpixels, {method} {settings}, one process | {milliseconds:.2f} ms/image |")
    for shots in (1, 5):
        cfg = make_config(method="qgnet", fold=0, shots=shots, progress=False,
                          options={"prior_extractor": "random", "feature_dim": 64})
        model = build_method(cfg)
        episodes = EpisodeDataset(open_source(cfg, "test"), 0, shots, cfg.image_size, args.episodes, cfg.seed)
        summary = evaluate_model(model, episodes, replace(cfg, eval_batch_size=16), torch.device("cpu"))
        lines.append(f"| evaluation, 1-way {shots}-shot, batch 16 (data loading included) | "
                     f"{summary['episodes_per_s']:.1f} episodes/s |")
    write_report(lines, RESULTS / "qgnet_speed_toy.md")


if __name__ == "__main__":
    main()
