"""Learning-rate schedules of the pretraining loops."""
from __future__ import annotations

import math


def warmup_cosine(step: int, fraction: float, warmup_steps: int) -> float:
    """Learning-rate factor at optimiser step ``step`` (0-based) with ``fraction`` of the budget spent.

    A linear warm-up over the first ``warmup_steps`` steps times a cosine from 1 down to 0
    over the whole budget (steps or wall time).
    """
    return min(1.0, (step + 1) / warmup_steps) * 0.5 * (1 + math.cos(math.pi * fraction))
