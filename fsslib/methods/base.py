"""The interface every few-shot segmenter implements, and how frozen pretrained models are held.

``forward(batch) -> (B, 1 + N, H, W)`` logits for an N-way :class:`~fsslib.data.episodes.EpisodeBatch`
(channel 0 = background, channel n = way n). Most methods are 1-way by design: they implement
:meth:`FewShotSegmenter.segment` for binary episodes and inherit the N-way rule below; a
natively N-way method overrides :meth:`FewShotSegmenter.forward` instead.

**N-way rule for 1-way methods** (one-vs-rest):
the N-way batch is flattened into B x N binary episodes (the query paired with each way's
supports; one batched forward), each giving foreground-vs-background log-odds
``d_n = logit_fg - logit_bg``; the logits returned are ``[0, d_1, ..., d_N]``. Their argmax
is the way whose foreground beats its background the most, and the background wherever no
way's foreground beats its own background. For N = 1 the method's own two logits are
returned unchanged (same argmax, same cross-entropy).

**Frozen pretrained models** (a CLIP, a frozen backbone, a teacher) are held with
:meth:`~fsslib.blocks.frozen.HoldsFrozen.hold_frozen`: kept in eval mode without gradients,
outside ``parameters()``, ``state_dict()`` and so the optimizer and checkpoints, yet moved by
``.to(device)`` with the method.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, Protocol
import torch
import torch.nn.functional as F

from fsslib.data.episodes import IGNORE, EpisodeBatch, OneWayBatch
from fsslib.errors import EpisodeShapeError, FsslibError
from fsslib.blocks.frozen import HoldsFrozen


class OptionError(FsslibError, ValueError):
    """A method option of the wrong type or value."""


class MethodConfig(Protocol):
    """The settings a method's ``build(cfg)`` reads (:class:`fsslib.config.Config` has them all)."""

    method: str
    variant: str
    preset: str
    shots: int
    benchmark: str
    coco_folds: str
    backbone: str
    backbone_weights: str | None
    options: dict[str, Any]


class FewShotSegmenter(HoldsFrozen, metaclass=ABCMeta):
    """An N-way K-shot segmenter: ``forward(batch) -> (B, 1 + N, H, W)`` logits at the input size.

    ``trainable = False`` marks training-free methods (the evaluator then needs no checkpoint).
    Subclasses with extra losses (e.g. auxiliary heads) override :meth:`loss`; those that count
    events worth reporting (e.g. LFSS's empty pseudo masks) override :meth:`diagnostics`, which
    the evaluator writes to ``metrics.json``.
    """

    trainable: bool = True

    def reset_diagnostics(self) -> None:
        """Start counting afresh (the evaluator calls it before its first episode)."""

    def diagnostics(self) -> dict[str, int | float]:
        """Counts gathered since :meth:`reset_diagnostics` (none by default)."""
        return {}

    @abstractmethod
    def segment(self, batch: OneWayBatch) -> torch.Tensor:
        """(B, 2, H, W) background / foreground logits of B binary episodes."""

    def forward(self, batch: EpisodeBatch) -> torch.Tensor:
        """(B, 1 + N, H, W) logits of an N-way batch by the one-vs-rest rule of the module docstring."""
        logits = self.segment(batch.one_way())  # (B*N, 2, H, W)
        if batch.ways == 1:
            return logits
        log_odds = (logits[:, 1] - logits[:, 0]).unflatten(0, (len(batch), batch.ways))  # (B, N, H, W)
        return torch.cat([torch.zeros_like(log_odds[:, :1]), log_odds], dim=1)  # (B, 1+N, H, W)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """Cross-entropy of the query prediction, ignoring label 255."""
        return segmentation_loss(self(batch), batch.query_masks)


def require_one_way(batch: EpisodeBatch) -> OneWayBatch:
    """The binary view of a 1-way training batch (episodic training is 1-way)."""
    if batch.ways != 1:
        raise EpisodeShapeError(f"Training episodes must be 1-way, got {batch.ways}-way.",
                                "train on 1-way episodes (the trainer's default); evaluate N-way with --ways N.")
    return batch.one_way()


def require_flags(options: dict[str, Any], keys: tuple[str, ...], method: str) -> None:
    """Raise a clear error unless each of ``options[key]`` is a bool (``bool("False")`` would be True)."""
    wrong = {key: options[key] for key in keys if not isinstance(options[key], bool)}
    if wrong:
        raise OptionError(f"{method} options {sorted(wrong)} must be true or false, got {wrong}.",
                          f"pass booleans, e.g. --options {next(iter(wrong))}=false (JSON) or options={{...: False}}.")


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """CE between (B, C, h, w) logits (upsampled to the mask size) and (B, H, W) masks in 0..C-1 or 255."""
    if logits.shape[-2:] != masks.shape[-2:]:
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=True)
    return F.cross_entropy(logits.float(), masks, ignore_index=IGNORE)
