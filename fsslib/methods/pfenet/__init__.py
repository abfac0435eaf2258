"""PFENet (Tian et al., TPAMI 2020) as an fsslib method: ``build(cfg)``, ``PRESETS``.

Options (``cfg.options``): ``feature_dim`` (256 paper, 64 toy), ``dropout`` of the feature
reductions (0.5, as PFENet). The backbone is always frozen. Training settings come from
the tier presets: the paper tier is PFENet's PASCAL recipe (SGD lr 0.0025, momentum 0.9,
weight decay 1e-4, poly 0.9, batch 4, 200 epochs, 473 x 473, ImageNet ResNet-50 dilated).
"""
from __future__ import annotations

from fsslib.config import Config
from fsslib.methods.pfenet.model import FeatureEnrichmentModule, PFENet, max_cosine_similarity, min_max_normalise, pfenet_prior
from fsslib.models.backbones import build_backbone

DEFAULT_OPTIONS = {"feature_dim": 256, "dropout": 0.5}
PRESETS = {
    "toy": dict(epochs=5, episodes_per_epoch=480, val_episodes=100, batch_size=8,
                options={"feature_dim": 64, "dropout": 0.5}),
    "paper": dict(options={"feature_dim": 256, "dropout": 0.5}),
}

__all__ = ["DEFAULT_OPTIONS", "PRESETS", "FeatureEnrichmentModule", "PFENet", "build", "max_cosine_similarity", "min_max_normalise",
           "pfenet_prior"]


def build(cfg: Config) -> PFENet:
    options = {**DEFAULT_OPTIONS, **cfg.options}
    return PFENet(build_backbone(cfg.backbone, cfg.backbone_weights), feature_dim=int(options["feature_dim"]),
                  dropout=float(options["dropout"]))
