"""QGNet (Liu et al., "Few-Shot Segmentation with Global and Local Contrastive Learning") on PFENet:
``build(cfg)``, ``DEFAULT_OPTIONS``, ``PRESETS``, ``VARIANTS``.

:mod:`~fsslib.methods.qgnet.model` holds the equations (prior region map, Eqs. 8-12) and the
choices made; the prior extractor is pretrained by :mod:`fsslib.pretrain.qgnet_prior`
(global + local contrastive learning, Eqs. 1-7), the part the official release lacks.

Options (``cfg.options``):

* ``prior_extractor``: the frozen prior extractor's weights -- ``None`` (the toy tier's shipped
  checkpoint of ``prior_patches``, made by ``python -m fsslib.pretrain toy-qgnet-prior``), a
  local file (paper tier: a MoCo-format ResNet-50 checkpoint, its ``moco_encoder``; toy tier: a
  checkpoint written by ``toy-qgnet-prior``), or ``"random"`` (shape checks only);
* ``prior_patches``: which shipped toy checkpoint ``None`` means -- ``"slic"`` (Table V's best),
  ``"felzenszwalb"``, ``"global_only"`` or ``"local_only"`` (Table VI's rows);
* ``moco_encoder``: ``"encoder_k"`` (the official code's) or ``"encoder_q"``;
* ``projection``: ``"none"`` (Eqs. 9-12, the default) or ``"official"`` (the code's learned 3x3
  convolutions before the cosine);
* PFENet's ``feature_dim`` and ``dropout``.

``VARIANTS``: ``official_projection``; ``felzenszwalb``, ``global_only``, ``local_only`` (the
prior extractor of Tables V-VI); ``no_prior_region`` is PFENet itself (``method="pfenet"``).
"""
from __future__ import annotations

from fsslib.errors import CheckpointError, unknown
from fsslib.methods.base import MethodConfig
from fsslib.methods.pfenet import TOY_TRAINING, PFENet
from fsslib.methods.qgnet.model import PROJECTIONS, QgnetOptionError, RegionMaps, prior_region_map
from fsslib.models.backbones import MultiLevelBackbone, ToyResNet, build_backbone, load_moco_resnet50, load_toy_resnet
from fsslib.paths import CHECKPOINT_DIR

PRIOR_PATCHES = ("slic", "felzenszwalb", "global_only", "local_only")
DEFAULT_OPTIONS = {"prior_extractor": None, "prior_patches": "slic", "moco_encoder": "encoder_k", "projection": "none",
                   "feature_dim": 256, "dropout": 0.5}
PRESETS = {
    "toy": dict(**TOY_TRAINING, options={"feature_dim": 64}),
    # the official code's: PFENet's recipe (SGD 0.0025, poly 0.9, batch 4, 200 epochs, 473 x 473, ResNet-50)
    "paper": dict(options={"feature_dim": 256}),
}
VARIANTS = {
    "official_projection": {"projection": "official"},
    "felzenszwalb": {"prior_patches": "felzenszwalb"},  # Table V
    "global_only": {"prior_patches": "global_only"},  # Table VI
    "local_only": {"prior_patches": "local_only"},  # Table VI
}

__all__ = ["DEFAULT_OPTIONS", "PRESETS", "PRIOR_PATCHES", "PROJECTIONS", "QgnetOptionError", "RegionMaps", "VARIANTS",
           "build", "prior_region_map", "toy_prior_checkpoint"]


def toy_prior_checkpoint(patches: str) -> str:
    """The shipped toy prior extractor pretrained with ``patches`` (fsslib/checkpoints/toy_qgnet_prior_<patches>.pt)."""
    if patches not in PRIOR_PATCHES:
        raise unknown("QGNet prior_patches", patches, PRIOR_PATCHES)
    return str(CHECKPOINT_DIR / f"toy_qgnet_prior_{patches}.pt")


def load_prior_extractor(cfg: MethodConfig, options: dict) -> MultiLevelBackbone:
    """The frozen prior extractor ``F_p`` of Eq. 8 (architecture of the backbone, weights from ``options``)."""
    weights = options["prior_extractor"]
    if cfg.backbone == "toy-resnet":
        if weights == "random":
            return ToyResNet()
        path = weights or toy_prior_checkpoint(options["prior_patches"])
        try:
            return load_toy_resnet(path)
        except CheckpointError as error:
            raise CheckpointError(f"QGNet's toy prior extractor {path} could not be loaded ({error.problem})",
                                  f"make it with `python -m fsslib.pretrain toy-qgnet-prior --patches "
                                  f"{options['prior_patches']} --out {path}`, or pass options={{'prior_extractor': PATH}}.") from None
    if weights == "random":
        return build_backbone(cfg.backbone, "random")
    if weights is None:
        raise CheckpointError("QGNet at the paper tier needs its prior extractor, a ResNet-50 pretrained by MoCo v2 "
                              "with the global + local losses.",
                              "pretrain one (python -m fsslib.pretrain toy-qgnet-prior shows the recipe) or pass "
                              "options={'prior_extractor': '/path/to/moco_checkpoint.pth.tar'}.")
    return load_moco_resnet50(weights, options["moco_encoder"])


def build(cfg: MethodConfig) -> PFENet:
    """PFENet with :class:`RegionMaps` (guided + prior region maps) as its prior source."""
    options = {**DEFAULT_OPTIONS, **cfg.options}
    backbone = build_backbone(cfg.backbone, cfg.backbone_weights)
    prior = RegionMaps(load_prior_extractor(cfg, options), backbone.channels["layer4"], projection=options["projection"],
                       feature_dim=int(options["feature_dim"]), dropout=float(options["dropout"]))
    return PFENet(backbone, prior, feature_dim=int(options["feature_dim"]), dropout=float(options["dropout"]))
