"""PFENet (Tian et al., TPAMI 2020) as an fsslib method: ``build(cfg)``, ``PRESETS``.

Options: :class:`PFENetOptions`. The backbone is always frozen. Training settings come from
the tier presets: the paper tier is PFENet's PASCAL recipe (SGD lr 0.0025, momentum 0.9,
weight decay 1e-4, poly 0.9, batch 4, 200 epochs, 473 x 473) on the official code's backbone,
PSPNet's deep-stem ImageNet ResNet-50 dilated (``PAPER_BACKBONE``; ``backbone="resnet50"`` is
torchvision's).
The toy budget (:data:`fsslib.methods.base.TOY_TRAINING`, shared with PI-CLIP, QGNet and BAM) is 80 epochs at lr 3e-3:
twice it moved PFENet and PI-CLIP on fold 1 by less than the noise (``piclip_budget_160``); how it was chosen,
and what the validation curves say at it: docs/protocol.md, "How the toy budgets were chosen" (``piclip_toy``
shows each fold's curve).
"""
from __future__ import annotations

from fsslib.blocks.priors import MaskedSupportPrior, NoPrior
from dataclasses import dataclass

from fsslib.methods.base import TOY_TRAINING, MethodConfig
from fsslib.methods.options import DecoderOptions, option
from fsslib.methods.pfenet.model import PFENet
from fsslib.models.backbones import DEEP_STEM, build_backbone

PRIOR_SOURCES = {"masked_support": MaskedSupportPrior, "none": NoPrior}


@dataclass(frozen=True)
class PFENetOptions(DecoderOptions):
    method = "pfenet"
    prior: str = option("masked_support", "the prior mask: PFENet's (masked_support) or a zero prior (none, the ablation "
                        "without it)", tuple(PRIOR_SOURCES))


OPTIONS = PFENetOptions
VARIANTS = {"no_prior": {"prior": "none"}}
PAPER_BACKBONE = DEEP_STEM  # the official model/resnet.py's resnet50(deep_base=True)
PRESETS = {
    "toy": dict(**TOY_TRAINING, options={"feature_dim": 64}),
    "paper": dict(backbone=PAPER_BACKBONE, options={"init": "pytorch"}),  # else PFENetOptions' defaults: the paper's
}

__all__ = ["OPTIONS", "PAPER_BACKBONE", "PFENet", "PFENetOptions", "PRESETS", "TOY_TRAINING", "VARIANTS", "build"]


def build(cfg: MethodConfig) -> PFENet:
    options = PFENetOptions.parse(cfg.options)
    return PFENet(build_backbone(cfg.backbone, cfg.backbone_weights), PRIOR_SOURCES[options.prior](),
                  feature_dim=options.feature_dim, dropout=options.dropout, he_init=options.init == "he_normal")
