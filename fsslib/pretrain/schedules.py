"""Learning-rate schedules of the pretraining loops."""
from __future__ import annotations

import math


def warmup_cosine(step: int, fraction: float, warmup_steps: int) -> float:
    """Learning-rate factor at optimiser step ``step`` (0-based) with ``fraction`` of the budget spent.

    A linear warm-up over the first ``warmup_steps`` steps times a cosine from 1 down to 0
    over the whole budget (steps or wall time).
    """
    return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * fraction))


def cosine_between(start: float, end: float, fraction: float) -> float:
    """A value going from ``start`` (fraction 0) to ``end`` (fraction 1) on a half cosine (DINO's schedules)."""
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))


def poly(fraction: float, power: float) -> float:
    """The poly policy's factor with ``fraction`` of the budget spent: (1 - fraction) ** power (PSPNet, BAM)."""
    return max(0.0, 1 - fraction) ** power
