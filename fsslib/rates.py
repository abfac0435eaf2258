"""The paper tier's measured GPU rates, in one place, and the GPU-hours a run takes by them.

The rates are the table "Every method, one GPU" of ``benchmarks/README.md`` (its result file
``benchmarks/results/paper_train_step_h200.md``): one NVIDIA H200, torch 2.11 with CUDA 13, bf16 autocast,
random weights, 1-way 1-shot, batches of 4 episodes, each method at its paper preset's input size. PFENet, PI-CLIP
and QGNet are the second run's, on PSPNet's deep-stem ResNet-50 (their paper backbone); BAM, HDMNet and PI-CLIP on
them a third run's. ``tests/test_paper_grids.py`` checks that every number here is the README's.

:func:`estimate` turns them into hours for one run of a grid (``python -m fsslib.runs GRID --plan``):

* training: ``epochs x episodes_per_epoch`` episodes at the measured episodes per second (steps/s x 4);
* evaluation: ``episodes x eval_seeds`` episodes per (ways, shots) evaluated, at the measured rate;
* an episode of K shots and N ways costs ``(1 + N K) / 2`` measured episodes (its images over the measured
  episode's two), and an input of side S ``(S / measured side)^2``: both are scalings, not measurements. One
  check: HDMNet and PI-CLIP(HDMNet) measured at 5 shots train at 0.60x and 0.68x their 1-shot rates, not the
  scaling's 0.33x, so their 5-shot hours here are about twice the measured ones.

Not counted: data loading (the measurement fed fabricated batches), checkpoints, the all-foreground reference,
and the second sliding window that PASCAL's landscape queries take in CLIP-DINOiser's evaluation. The 1-shot hours
are therefore a lower bound; with ``gpus_per_run`` G, a run's GPU-hours stay the same and its wall time is about 1/G.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsslib.config import Config

HARDWARE = "one NVIDIA H200, torch 2.11 (CUDA 13), bf16 autocast, random weights, 1-shot, batches of 4 episodes"
SOURCE = "benchmarks/README.md, 'Every method, one GPU' (benchmarks/results/paper_train_step_h200.md)"
MEASURED_BATCH = 4  # episodes per measured training step
MEASURED_IMAGES = 2  # images per measured episode: one support, one query


@dataclass(frozen=True)
class MeasuredRate:
    """One method's measured speed on :data:`HARDWARE`."""

    method: str
    input_size: int  # the side the measurement ran at (the paper preset's)
    train_steps_per_s: float
    eval_episodes_per_s: float

    @property
    def train_episodes_per_s(self) -> float:
        return self.train_steps_per_s * MEASURED_BATCH


RATES: dict[str, MeasuredRate] = {rate.method: rate for rate in (
    MeasuredRate("prototype", 473, 80.1, 416),
    MeasuredRate("pfenet", 473, 40.1, 291),
    MeasuredRate("piclip", 473, 19.8, 100),
    MeasuredRate("lfss", 400, 20.5, 90),
    MeasuredRate("qgnet", 473, 35.2, 207),
    MeasuredRate("clip-dinoiser-support", 448, 57.5, 218),  # measured with the trained adapter; training-free: the same
    MeasuredRate("bam", 473, 37.34, 237.5),  # the third run (a random base learner), as the three below
    MeasuredRate("hdmnet", 473, 13.34, 129),
    MeasuredRate("piclip-bam", 473, 15.34, 61.5),
    MeasuredRate("piclip-hdmnet", 473, 8.78, 61.7),
)}


@dataclass(frozen=True)
class Estimate:
    """The GPU-hours of one run: training and evaluation."""

    train_hours: float
    eval_hours: float

    @property
    def hours(self) -> float:
        return self.train_hours + self.eval_hours


def estimate(cfg: Config, evaluations: list[tuple[int, int]], trains: bool) -> Estimate | None:
    """The GPU-hours of a run of ``cfg`` that trains (``trains``) and then evaluates at each (ways, shots) of
    ``evaluations``, by :data:`RATES` (the module's rules); None for a method without a measured rate."""
    rate = RATES.get(cfg.method)
    if rate is None:
        return None
    pixels = (cfg.image_size / rate.input_size) ** 2

    def cost(ways: int, shots: int) -> float:  # measured episodes per episode of this setting
        return pixels * (1 + ways * shots) / MEASURED_IMAGES

    train_s = cfg.epochs * cfg.episodes_per_epoch * cost(1, cfg.shots) / rate.train_episodes_per_s if trains else 0.0
    eval_s = sum(cfg.episodes * max(1, cfg.eval_seeds) * cost(ways, shots) / rate.eval_episodes_per_s
                 for ways, shots in evaluations)
    return Estimate(train_s / 3600, eval_s / 3600)
