"""The interface every few-shot segmenter implements, and how frozen pretrained models are held.

``forward(inputs) -> (B, 1 + N, H, W)`` logits for N-way :class:`~fsslib.data.episodes.EpisodeInputs`
(channel 0 = background, channel n = way n): a model reads the supports with their annotation, the queries
and the class names, never the query's ground truth, which stays with the
:class:`~fsslib.data.episodes.EpisodeBatch` for :meth:`FewShotSegmenter.loss` and the meter (as nanoGPT's
``forward(idx, targets=None)``). A model that reads image-level labels of the query (a comparison row, not
a few-shot result) says so with ``reads_image_labels`` and is given them. Most methods are 1-way by design: they implement
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

from fsslib.data.episodes import IGNORE, EpisodeBatch, EpisodeInputs, OneWayBatch, OneWayInputs
from fsslib.errors import EpisodeShapeError, FsslibError
from fsslib.blocks.frozen import HoldsFrozen

# The toy budget of PFENet and of the methods that share its schedule (PI-CLIP, QGNet, BAM): docs/protocol.md,
# "How the toy budgets were chosen"
TOY_TRAINING = dict(epochs=80, lr=3e-3, episodes_per_epoch=480, val_episodes=300, batch_size=8)


class MethodConfig(Protocol):
    """The settings a method's ``build(cfg)`` reads (:class:`fsslib.config.Config` has them all)."""

    method: str
    variant: str
    preset: str
    fold: int
    shots: int
    benchmark: str
    coco_folds: str
    extra_classes: list[str]
    novel_classes: list[int]
    backbone: str
    backbone_weights: str | None
    options: dict[str, Any]


class FewShotSegmenter(HoldsFrozen, metaclass=ABCMeta):
    """An N-way K-shot segmenter: ``forward(inputs) -> (B, 1 + N, H, W)`` logits at the input size.

    ``trainable = False`` marks training-free methods (the evaluator then needs no checkpoint).
    Subclasses with extra losses (e.g. auxiliary heads) override :meth:`loss`; those that count
    events worth reporting (e.g. LFSS's empty pseudo masks) override :meth:`diagnostics`, which
    the evaluator writes to ``metrics.json``.
    """

    trainable: bool = True
    reads_image_labels: bool = False  # True: reads the classes in the query's label (EpisodeInputs.query_classes)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups, each ``{"params": [...]}`` with an optional ``"lr_scale"`` (the group's
        learning rate is the configured one times it). Default: one group of every parameter that trains; a method
        whose official optimiser gives its parts different learning rates overrides it (e.g. HDMNet)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def reset_diagnostics(self) -> None:
        """Start counting afresh (the evaluator calls it before its first episode)."""

    def diagnostics(self) -> dict[str, int | float]:
        """Counts gathered since :meth:`reset_diagnostics` (none by default)."""
        return {}

    @abstractmethod
    def segment(self, inputs: OneWayInputs) -> torch.Tensor:
        """(B, 2, H, W) background / foreground logits of B binary episodes."""

    def forward(self, inputs: EpisodeInputs) -> torch.Tensor:
        """(B, 1 + N, H, W) logits of N-way episodes by the one-vs-rest rule of the module docstring."""
        logits = self.segment(model_inputs(self, inputs).one_way())  # (B*N, 2, H, W)
        if inputs.ways == 1:
            return logits
        log_odds = (logits[:, 1] - logits[:, 0]).unflatten(0, (len(inputs), inputs.ways))  # (B, N, H, W)
        return torch.cat([torch.zeros_like(log_odds[:, :1]), log_odds], dim=1)  # (B, 1+N, H, W)

    def loss(self, batch: EpisodeBatch) -> torch.Tensor:
        """Cross-entropy of the query prediction, ignoring label 255 (the batch's targets are read here only)."""
        return segmentation_loss(self(batch.inputs(self.reads_image_labels)), batch.query_masks)


def model_inputs(model: FewShotSegmenter, inputs: EpisodeInputs) -> EpisodeInputs:
    """``inputs`` checked: an :class:`EpisodeInputs` (not a batch with targets), with image-level labels exactly
    when the model asks for them."""
    if not isinstance(inputs, EpisodeInputs):
        raise FsslibError(f"{type(model).__name__} reads episode inputs, got {type(inputs).__name__}.",
                          "pass batch.inputs() (the supports, queries and class names; the targets stay with the batch).")
    if model.reads_image_labels and inputs.query_classes is None:
        raise FsslibError(f"{type(model).__name__} reads the classes in each query's label (a comparison setting).",
                          "pass batch.inputs(image_labels=True).")
    return inputs


def require_one_way(batch: EpisodeBatch) -> OneWayBatch:
    """The binary view of a 1-way training batch with its targets (episodic training is 1-way)."""
    if batch.ways != 1:
        raise EpisodeShapeError(f"Training episodes must be 1-way, got {batch.ways}-way.",
                                "train on 1-way episodes (the trainer's default); evaluate N-way with --ways N.")
    return batch.one_way()


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """CE between (B, C, h, w) logits (upsampled to the mask size) and (B, H, W) masks in 0..C-1 or 255."""
    if logits.shape[-2:] != masks.shape[-2:]:
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=True)
    return F.cross_entropy(logits.float(), masks, ignore_index=IGNORE)
