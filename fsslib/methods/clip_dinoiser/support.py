"""CLIP-DINOiser with support images (Verriello 2024): ``build(cfg)``, ``PRESETS``, ``VARIANTS``.

The paper replaces CLIP-DINOiser's text class embeddings with the L2-normalised CLIP image
embeddings of the support images (its Sec. 4.3: the whole image resized to 224, no mask); fsslib
averages them over the K shots and scores N-way K-shot episodes. Its public fork (MicheleVerriello/clip_dinoiser)
does not run and its reported 4.8% / 4.1% mIoU was scored against the query image instead of its mask
(``shared/reference``), so there is no valid published number to compare with.

Options: those of ``clip-dinoiser`` (:mod:`fsslib.methods.clip_dinoiser`) with ``prompts="support"``.
``VARIANTS``: ``trained_adapter`` (fsslib's training on base-class episodes with the paper's Sec. 4.2 settings,
see the segmenter), ``masked_support`` and ``text_support`` (beyond the paper), and the ablations of guided
pooling and of the background head.
"""
from __future__ import annotations

from dataclasses import dataclass

from fsslib.methods.base import MethodConfig
from fsslib.methods.clip_dinoiser import PRESETS as TEXT_PRESETS
from fsslib.methods.clip_dinoiser import ClipDinoiserOptions, build_segmenter, support_inputs_of
from fsslib.methods.options import redefault
from fsslib.methods.clip_dinoiser.segmenter import ClipDinoiserSegmenter

SUPPORT_ANNOTATION = "images (no masks)"
BACKBONE = False  # no ResNet backbone: backbone_weights does not apply
VARIANT_ANNOTATIONS = {"masked_support": "images + pixel masks", "text_support": "images + class names"}


@dataclass(frozen=True)
class SupportOptions(ClipDinoiserOptions):
    method = "clip-dinoiser-support"
    prompts: str = redefault(ClipDinoiserOptions, "prompts", "support")


OPTIONS = SupportOptions
# the paper's training settings (Sec. 4.2), used by the trained variant only: AdamW 1e-4, x0.1 every 10 epochs,
# batch 4, 50 epochs (the other variants are training-free). Weight decay 0.01 is AdamW's default (the paper gives
# none); its early stopping on validation mIoU is the trainer's best.pt (the epoch of best validation mIoU).
TRAINING = dict(optimizer="adamw", lr=1e-4, weight_decay=0.01, lr_step_epochs=10, lr_step_gamma=0.1, batch_size=4,
                epochs=50)
PRESETS = {tier: {**TRAINING, **preset} for tier, preset in TEXT_PRESETS.items()}
VARIANTS = {
    "trained_adapter": {"adapter": True},
    "masked_support": {"prompts": "masked_support"},
    "text_support": {"prompts": "text_support"},
    "no_pooling": {"pooling": False},
    "no_background_head": {"background_head": False},
}

__all__ = ["OPTIONS", "PRESETS", "SupportOptions", "SUPPORT_ANNOTATION", "VARIANTS", "VARIANT_ANNOTATIONS", "build",
           "support_inputs_of"]


def build(cfg: MethodConfig) -> ClipDinoiserSegmenter:
    """The segmenter of ``clip-dinoiser`` with support-image prompts (unless an option says otherwise)."""
    return build_segmenter(cfg, SupportOptions)
