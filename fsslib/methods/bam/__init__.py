"""BAM (Lang et al., CVPR 2022) as an fsslib method: ``build(cfg)``, ``OPTIONS``, ``PRESETS``, ``VARIANTS``.

:mod:`~fsslib.methods.bam.model` holds the meta learner and the ensemble; the frozen base learner (backbone included)
comes from the fold's file that ``python -m fsslib.pretrain base-learner --fold F`` writes (BAM's stage 1,
:mod:`fsslib.pretrain.base_learner`); it is not in a BAM checkpoint, and a run's provenance names it
(:func:`frozen_files`).

Presets: ``paper`` is ``config/pascal/pascal_split0_resnet50.yaml`` with ``train.sh``'s 4 GPUs -- SGD, momentum 0.9,
weight decay 1e-4, poly 0.9, 200 epochs, 473 x 473, batch 8 (2 per GPU) -- and a learning rate of 0.05: the config's
``base_lr`` is 0.005, but its ``index_split: -1`` makes ``poly_learning_rate`` give every parameter group ten times
it. ``toy`` is PFENet's toy recipe (:data:`fsslib.methods.base.TOY_TRAINING`) at 160 epochs, twice PFENet's: the
budget whose doubling on fold 0 moved test mIoU by less than two rows' noise (grid ``piclip_baselines_budget_320``;
each zoo model's ``.json`` records it). Both train on BAM's data rule (``novel_rule="bam"``: training
images that hold a novel class are dropped, the official ``fss_list`` built with ``filter_intersection=True``);
variant ``pfenet_rule`` keeps them with their novel pixels as background, the rule of fsslib's other toy rows.
"""
from __future__ import annotations

from dataclasses import dataclass

from fsslib.blocks.priors import PriorSource
from fsslib.data.benchmarks import benchmark_of
from fsslib.methods.base import TOY_TRAINING, MethodConfig
from fsslib.methods.bam.model import ASPP_RATES, BAM, GRAM_LEVELS
from fsslib.methods.options import BaseLearnerOptions, DecoderOptions, option
from fsslib.models.backbones import DEEP_STEM


@dataclass(frozen=True)
class BAMOptions(DecoderOptions, BaseLearnerOptions):
    method = "bam"
    aspp_rates: str = option("fixed", "the ASPP's dilations: fixed (BAM's 6 / 12 / 18 on every map) or scaled to the "
                             "map as fsslib's other ASPP (1 / 2 / 2 at the toy tier's 8 x 8)", ASPP_RATES)
    shot_hidden: int = option(2, "hidden channels of the K-shot weighting (the official kshot_trans_dim; 0: one 1x1 "
                              "convolution starting as the mean)", at_least=0)
    gram_level: str = option("layer2", "the backbone level whose Gram matrices give the scene difference (the "
                             "official low_fea)", GRAM_LEVELS)
    aux_weight: float = option(1.0, "weight of the meta learner's own cross-entropy (the official aux_weight1)",
                               at_least=0)
    base_dropout: bool = option(True, "True: the frozen base learner's Dropout2d acts while meta-training, as the "
                                "official model.train() leaves it; False: the base learner stays in eval mode")


OPTIONS = BAMOptions
PAPER_TRAINING = dict(epochs=200, batch_size=8, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4,
                      poly_power=0.9, image_size=473)
PRESETS = {
    "toy": dict(TOY_TRAINING, epochs=160, novel_rule="bam", options={"feature_dim": 64}),
    "paper": dict(**PAPER_TRAINING, novel_rule="bam", backbone=DEEP_STEM, options={"init": "pytorch"}),
}
VARIANTS = {"pfenet_rule": {"novel_rule": "pfenet"}}

__all__ = ["BAM", "BAMOptions", "OPTIONS", "PAPER_TRAINING", "PRESETS", "VARIANTS", "bam_model", "build", "frozen_files",
           "shots_fixed_by_training"]


def shots_fixed_by_training(options: dict) -> bool:
    """The K-shot weighting has K inputs: a model trained on K-shot episodes fits K-shot episodes only."""
    return True


def frozen_files(cfg: MethodConfig) -> dict[str, str]:
    """The base learner's file of a configuration (its fold's by default), unless random."""
    return BAMOptions.parse(cfg.options).base_learner_files(cfg)


def build(cfg: MethodConfig) -> BAM:
    """BAM on the frozen base learner of ``cfg``'s fold."""
    return bam_model(cfg, BAMOptions.parse(cfg.options))


def bam_model(cfg: MethodConfig, options: BAMOptions, prior: PriorSource | None = None) -> BAM:
    """BAM of ``options`` (BAM's or a subclass's, e.g. PI-CLIP(BAM)'s) on the fold's frozen base learner; ``prior``
    replaces BAM's own prior (PI-CLIP's CLIP priors)."""
    base_classes = benchmark_of(cfg).base_classes(cfg.fold)
    return BAM(options.frozen_base_learner(cfg, base_classes), base_classes, cfg.shots, feature_dim=options.feature_dim,
               dropout=options.dropout, he_init=options.init == "he_normal", aspp_rates=options.aspp_rates,
               shot_hidden=options.shot_hidden, gram_level=options.gram_level, aux_weight=options.aux_weight,
               base_dropout=options.base_dropout, prior=prior)
