"""The paper tier's measured GPU rates, in one place, and the GPU-hours a run takes by them.

The rates are the table "Every method, one GPU" of ``benchmarks/README.md`` (its result file
``benchmarks/results/paper_train_step_h200.md``): one NVIDIA H200, torch 2.11 with CUDA 13, bf16 autocast,
random weights, 1-way 1-shot, batches of 4 episodes, each method at its paper preset's input size. PFENet, PI-CLIP
and QGNet are the second run's, on PSPNet's deep-stem ResNet-50 (their paper backbone); BAM, HDMNet and PI-CLIP on
them a third run's. ``tests/test_paper_grids.py`` checks that every number here is the README's.

:func:`estimate` turns them into hours for one run of a grid (``python -m fsslib.runs GRID --plan``):

* training: ``epochs x episodes_per_epoch`` episodes at the measured episodes per second (steps/s x 4);
* evaluation: ``episodes x eval_seeds`` episodes per (ways, shots) evaluated, at the measured rate;
* an episode of K shots and N ways costs its images over the measured episode's: ``(1 + N K) / 2`` measured
  1-shot episodes, or ``(1 + N K) / 6`` measured 5-shot episodes where the method has a 5-shot measurement and
  K >= 5; an input of side S costs ``(S / measured side)^2``. Both are scalings, not measurements. The images
  scaling over-counts: measured at 5 shots, PFENet's family trains at 0.54-0.76x its 1-shot steps/s, not 0.33x
  (the README's 5-shot table), hence the 5-shot measurements.

Not counted: data loading (the measurement fed fabricated batches), checkpoints, the all-foreground reference,
and the second sliding window that PASCAL's landscape queries take in CLIP-DINOiser's evaluation. The 1-shot hours
are therefore a lower bound; with ``gpus_per_run`` G, a run's GPU-hours stay the same and its wall time is about 1/G.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fsslib.config import Config

HARDWARE = "one NVIDIA H200, torch 2.11 (CUDA 13), bf16 autocast, random weights, 1- and 5-shot, batches of 4 episodes"
SOURCE = "benchmarks/README.md, 'Every method, one GPU' (benchmarks/results/paper_train_step_h200.md)"
MEASURED_BATCH = 4  # episodes per measured training step


@dataclass(frozen=True)
class MeasuredRate:
    """One method's measured speed on :data:`HARDWARE`."""

    method: str
    input_size: int  # the side the measurement ran at (the paper preset's)
    train_steps_per_s: float
    eval_episodes_per_s: float
    five_shot: tuple[float, float] | None = None  # (train steps/s, eval episodes/s) at 1-way 5-shot, where measured

    def seconds_per_episode(self, ways: int, shots: int, training: bool) -> float:
        """GPU seconds of one episode of ``ways`` and ``shots`` at the measured input size: the nearest measured
        setting (5-shot from K = 5 on, where measured), scaled by the images per episode."""
        steps_per_s, eval_per_s, measured_shots = self.train_steps_per_s, self.eval_episodes_per_s, 1
        if self.five_shot and shots >= 5:
            (steps_per_s, eval_per_s), measured_shots = self.five_shot, 5
        per_s = steps_per_s * MEASURED_BATCH if training else eval_per_s
        return (1 + ways * shots) / (1 + measured_shots) / per_s


RATES: dict[str, MeasuredRate] = {rate.method: rate for rate in (
    MeasuredRate("prototype", 473, 80.1, 416),
    MeasuredRate("pfenet", 473, 40.1, 291, five_shot=(23.6, 122.6)),  # 5-shot: the third run's, as below
    MeasuredRate("piclip", 473, 19.8, 100, five_shot=(10.68, 49.4)),
    MeasuredRate("lfss", 400, 20.5, 90),
    MeasuredRate("qgnet", 473, 35.2, 207),
    MeasuredRate("clip-dinoiser-support", 448, 57.5, 218),  # measured with the trained adapter; training-free: the same
    MeasuredRate("bam", 473, 37.34, 237.5, five_shot=(20.11, 112.6)),  # the third run (a random base learner)
    MeasuredRate("hdmnet", 473, 13.34, 129, five_shot=(8.02, 48.2)),
    MeasuredRate("piclip-bam", 473, 15.34, 61.5, five_shot=(9.99, 43.9)),
    MeasuredRate("piclip-hdmnet", 473, 8.78, 61.7, five_shot=(5.95, 31.2)),
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
    train_s = cfg.epochs * cfg.episodes_per_epoch * rate.seconds_per_episode(1, cfg.shots, True) if trains else 0.0
    eval_s = sum(cfg.episodes * max(1, cfg.eval_seeds) * rate.seconds_per_episode(ways, shots, False)
                 for ways, shots in evaluations)
    return Estimate(pixels * train_s / 3600, pixels * eval_s / 3600)
