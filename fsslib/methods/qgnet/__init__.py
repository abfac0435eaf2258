"""QGNet (Liu et al., "Few-Shot Segmentation with Global and Local Contrastive Learning", arXiv:2108.05293) on
PFENet: ``build(cfg)``, ``OPTIONS``, ``PRESETS``, ``VARIANTS``. Official code: liuweide01/QGNet-Few-shot-segmentation
(the segmenter; its prior extractor's pretraining was not released).

:mod:`~fsslib.methods.qgnet.model` holds the equations (prior region map, Eqs. 8-12) and the
choices made; the prior extractor is pretrained by :mod:`fsslib.pretrain.qgnet_prior`
(global + local contrastive learning, Eqs. 1-7), the part the official release lacks.

Options: :class:`QGNetOptions`; the shipped toy prior extractors are :data:`TOY_PRIORS`, each with
the pretraining flags that make it.

``VARIANTS``: ``official_projection``, one per toy prior extractor of Tables V-VI but the
default, and ``untrained_prior`` (``prior_extractor="random"``): Table VI's row without either
contrastive loss, which the paper does not describe further; fsslib reads it as a prior extractor
that was never trained. Table VI's other rows are the global loss alone and both losses; the local
loss alone (``local_only``) is the combination it leaves out, asked here beyond the paper. A QGNet
without the prior region map is PFENet itself (``method="pfenet"``).
"""
from __future__ import annotations

from dataclasses import dataclass

from fsslib.errors import CheckpointError, unknown
from fsslib.methods.base import TOY_TRAINING, MethodConfig
from fsslib.methods.options import DecoderOptions, option
from fsslib.methods.pfenet import PFENet
from fsslib.methods.qgnet.model import PROJECTIONS, QgnetOptionError, RegionMaps, prior_region_map, region_map_statistics
from fsslib.models.backbones import (DEEP_STEM, MOCO_BACKBONE, MultiLevelBackbone, ToyResNet, build_backbone,
                                     load_moco_resnet50, load_toy_resnet)
from fsslib.paths import CHECKPOINT_DIR, WEIGHTS_DOC

TOY_PRIORS = {  # shipped toy prior extractor -> the `python -m fsslib.pretrain toy-qgnet-prior` flags that make it
    "slic": "",  # the recipe's defaults (PriorSettings): SLIC patches, both losses
    "felzenszwalb": "--patches felzenszwalb",  # Table V
    "slic_shorter": "--steps 6000",  # Table V's budget question, asked with a quarter of the steps (its row: twice)
    "global_only": "--losses global",  # Table VI
    "local_only": "--losses local",  # beyond Table VI: the combination it leaves out
}


@dataclass(frozen=True)
class QGNetOptions(DecoderOptions):
    method = "qgnet"
    prior_extractor: str | None = option(
        None, "the frozen prior extractor's weights: None (the shipped toy checkpoint toy_prior), a local file (paper "
        "tier: a MoCo-format ResNet-50 checkpoint, as qgnet-prior writes; toy tier: one written by toy-qgnet-prior) or "
        "random (shape checks)")
    toy_prior: str = option("slic", "which shipped toy prior extractor None means: slic (the paper's choice), "
                            "felzenszwalb and slic_shorter (Table V's questions: other patches; another budget, "
                            "here a quarter), global_only (Table VI), local_only (the loss set Table VI leaves out)",
                            tuple(TOY_PRIORS))
    moco_encoder: str = option("encoder_k", "which encoder of a MoCo checkpoint (encoder_k: the official code's)",
                               ("encoder_k", "encoder_q"))
    projection: str = option("none", "none: Eqs. 9-12; official: the code's learned 3x3 convolutions before the cosine",
                             PROJECTIONS)


OPTIONS = QGNetOptions
PRESETS = {
    "toy": dict(**TOY_TRAINING, options={"feature_dim": 64}),
    # the official code's: PFENet's recipe (SGD 0.0025, poly 0.9, batch 4, 200 epochs, 473 x 473) and bridge
    # backbone (the deep-stem ResNet-50); the prior extractor is a standard-stem MoCo ResNet-50 whatever the backbone
    "paper": dict(backbone=DEEP_STEM, options={"init": "pytorch"}),  # else QGNetOptions' defaults
}
VARIANTS = {
    "official_projection": {"projection": "official"},
    **{name: {"toy_prior": name} for name in TOY_PRIORS if name != QGNetOptions.toy_prior},  # Tables V-VI
    "untrained_prior": {"prior_extractor": "random"},  # Table VI: neither contrastive loss
}

__all__ = ["OPTIONS", "PRESETS", "QGNetOptions", "PROJECTIONS", "QgnetOptionError", "RegionMaps", "VARIANTS",
           "TOY_PRIORS", "build", "frozen_files", "prior_region_map", "remake_command", "region_map_statistics",
           "toy_prior_checkpoint"]


def toy_prior_checkpoint(name: str) -> str:
    """The shipped toy prior extractor ``name`` of :data:`TOY_PRIORS` (fsslib/checkpoints/toy_qgnet_prior_<name>.pt)."""
    if name not in TOY_PRIORS:
        raise unknown("QGNet toy_prior", name, list(TOY_PRIORS))
    return str(CHECKPOINT_DIR / f"toy_qgnet_prior_{name}.pt")


def remake_command(name: str) -> str:
    """The command that pretrains the shipped toy prior extractor ``name`` again (add ``--out PATH``)."""
    return " ".join(["python -m fsslib.pretrain toy-qgnet-prior", *TOY_PRIORS[name].split()])


def frozen_files(cfg: MethodConfig) -> dict[str, str]:
    """The prior extractor's weight file of a configuration, if a file."""
    parsed = QGNetOptions.parse(cfg.options)
    if parsed.prior_extractor == "random" or (parsed.prior_extractor is None and cfg.backbone != "toy-resnet"):
        return {}
    return {"prior_extractor": parsed.prior_extractor or toy_prior_checkpoint(parsed.toy_prior)}


def load_prior_extractor(cfg: MethodConfig, options: QGNetOptions) -> MultiLevelBackbone:
    """The frozen prior extractor ``F_p`` of Eq. 8, weights from ``options``: at the toy tier a toy ResNet, else
    MoCo's architecture (torchvision's standard-stem ResNet-50, :func:`load_moco_resnet50`) whatever the bridge's."""
    weights = options.prior_extractor
    if cfg.backbone == "toy-resnet":
        if weights == "random":
            return ToyResNet()
        shipped = toy_prior_checkpoint(options.toy_prior)
        path = frozen_files(cfg)["prior_extractor"]
        remake = f"make it with `{remake_command(options.toy_prior)} --out {path}`" \
            if path == shipped else "pass the path of a checkpoint that `python -m fsslib.pretrain toy-qgnet-prior` wrote"
        try:
            return load_toy_resnet(path)
        except CheckpointError as error:
            raise CheckpointError(f"QGNet's toy prior extractor {path} could not be loaded ({error.problem})",
                                  f"{remake}, or pass options={{'prior_extractor': PATH}}.") from None
    if weights == "random":
        return build_backbone(MOCO_BACKBONE, "random")
    if weights is None:
        raise CheckpointError("QGNet at the paper tier needs its prior extractor, a ResNet-50 pretrained by MoCo v2 "
                              "with the global + local losses.",
                              "pretrain one with `python -m fsslib.pretrain qgnet-prior` or pass "
                              f"options={{'prior_extractor': '/path/to/moco_checkpoint.pth.tar'}} ({WEIGHTS_DOC}).")
    return load_moco_resnet50(weights, options.moco_encoder)


def build(cfg: MethodConfig) -> PFENet:
    """PFENet with :class:`RegionMaps` (guided + prior region maps) as its prior source."""
    options = QGNetOptions.parse(cfg.options)
    backbone = build_backbone(cfg.backbone, cfg.backbone_weights)
    prior = RegionMaps(load_prior_extractor(cfg, options), backbone.channels["layer4"], projection=options.projection,
                       feature_dim=options.feature_dim, dropout=options.dropout)
    return PFENet(backbone, prior, feature_dim=options.feature_dim, dropout=options.dropout,
                  he_init=options.init == "he_normal")
