"""HDMNet (Peng et al., CVPR 2023) as an fsslib method: ``build(cfg)``, ``OPTIONS``, ``PRESETS``, ``VARIANTS``.

:mod:`~fsslib.methods.hdmnet.model` holds the pipeline and the official code's departures; the transformer and its
distillation loss are shared blocks (:mod:`fsslib.blocks.hierarchical`). PI-CLIP on HDMNet builds the whole model
through :func:`hdmnet_model` with its own prior source (:mod:`fsslib.methods.piclip.hdmnet`).

The frozen base learner (PSPNet on the fold's base classes) is BAM's first stage, the same file for BAM and
HDMNet: ``fsslib/checkpoints/zoo/base-learner-fold{F}.pt`` on the toy world (:func:`frozen_files`), made by
``python -m fsslib.pretrain base-learner --fold F``. ``base_learner="random"`` builds an untrained one (shape checks).

Training follows the official ``get_optim`` and config: AdamW, weight decay 0.01, base lr 1e-4 for the transformer,
10 times it for everything else (:meth:`HDMNet.parameter_groups`), poly 0.9; BAM's data rule (training images with a
novel class are dropped). The toy preset: half the transformer's width, lr 1e-3 (x10 outside the transformer), 160
epochs of 480 episodes: the budget whose doubling on fold 0 moved test mIoU by less than two rows' noise (grid
``piclip_baselines_budget_320_hdmnet``; each zoo model's ``.json`` records it). The lr was read off fold 0's validation
curves at 3e-4, 1e-3 and 3e-3 over 40 epochs (those curves were not kept); the budget: docs/methods/piclip_reference.md,
"HDMNet, the baseline of PI-CLIP's best rows".
"""
from __future__ import annotations

from dataclasses import dataclass

from fsslib.blocks.hierarchical import INITS, TransformerSize
from fsslib.blocks.priors import PriorSource
from fsslib.data.benchmarks import benchmark_of
from fsslib.methods.base import MethodConfig
from fsslib.methods.hdmnet.model import SIMILARITY_LEVELS, SIMILARITY_SCALE, HDMNet
from fsslib.methods.options import BaseLearnerOptions, OptionError, option
from fsslib.models.backbones import DEEP_STEM


@dataclass(frozen=True)
class HDMNetOptions(BaseLearnerOptions):
    method = "hdmnet"
    feature_dim: int = option(256, "channels of the reduced layer3 + layer2 features (the official 256)", at_least=1)
    dropout: float = option(0.5, "Dropout2d of the feature reductions (the official 0.5)", at_least=0, at_most=1)
    embed_dims: int = option(64, "the transformer's width (the official 64)", at_least=1)
    heads: tuple[int, ...] = option((2, 4, 8), "attention heads of each level's self-attention (the official 2,4,8)",
                                    at_least=1)
    sr_ratios: tuple[int, ...] = option((4, 2, 1), "each level's spatial reduction of keys and values (4,2,1)",
                                        at_least=1)
    patch_sizes: tuple[int, ...] = option((1, 3, 3), "each level's patch-embedding kernel (1,3,3)", at_least=1)
    strides: tuple[int, ...] = option((1, 2, 2), "each level's patch-embedding stride (1,2,2)", at_least=1)
    match_heads: int = option(2, "heads of the matching cross-attention (the official 2)", at_least=1)
    mlp_ratio: int = option(4, "Mix-FFN width over the transformer's (the official 4)", at_least=1)
    transformer_dropout: float = option(0.1, "dropout inside the transformer (the official 0.1)", at_least=0, at_most=1)
    transformer_init: str = option("official", "official: what the official code really runs (PyTorch defaults, "
                                   "He-normal matching convs); init_weights: its uncalled init_weights", INITS)
    fixed_batchnorm: bool = option(True, "keep the transformer's BatchNorm in eval mode while training (the official "
                                   "fix_bn: a learned affine map); False: batch statistics")
    shot_unsort: bool = option(False, "K-shot weights given back to each shot's rank (BAM's); False: the official "
                               "HDMNet gather, which keeps them in the sorted order")
    train_shot_weighting: bool = option(False, "train the K-shot weighting; False: the official, whose optimiser leaves "
                                        "it at its random initial weights")
    base_dropout: bool = option(True, "the base learner's Dropout2d(0.1) active while training, as the "
                                        "official train mode leaves it")
    lr_scale: float = option(10.0, "lr multiplier of every trained part but the transformer (the official 10)", above=0)
    similarity_maps: tuple[str, ...] = option(SIMILARITY_LEVELS, "the base learner's levels whose similarity maps "
                                              "guide the transformer (the official both); one alone is a control",
                                              SIMILARITY_LEVELS)

    def transformer_size(self) -> TransformerSize:
        return TransformerSize(self.embed_dims, self.heads, self.sr_ratios, self.patch_sizes, self.strides,
                               self.match_heads, self.mlp_ratio, self.transformer_dropout)


OPTIONS = HDMNetOptions
PAPER_BACKBONE = DEEP_STEM  # HDMNet's PSPNet: model/resnet.py's resnet50(deep_base=True), PFENet's
# The toy tier's 8 x 8 map: the paper's strides give levels of 8, 4 and 2, and its reductions shrink the keys to 2 x 2 at
# every level; half the paper's width (32, heads 1/2/4) trains faster on 2 cores than the paper's width.
TOY_SIZE = dict(feature_dim=64, embed_dims=32, heads=[1, 2, 4], match_heads=1)
PRESETS = {
    "toy": dict(epochs=160, lr=1e-3, episodes_per_epoch=480, val_episodes=300, batch_size=8, optimizer="adamw",
                weight_decay=0.01, novel_rule="bam", options=TOY_SIZE),
    # the official pascal config: AdamW 1e-4 (x10 outside the transformer), wd 0.01, batch 4, 200 epochs, poly 0.9
    "paper": dict(backbone=PAPER_BACKBONE, optimizer="adamw", lr=1e-4, weight_decay=0.01, batch_size=4, epochs=200,
                  novel_rule="bam"),
}

# Controls, not rows of a paper: the transformer guided by one of the two similarity maps alone
VARIANTS = {"embedding_map": {"similarity_maps": ["embedding"]}, "layer4_map": {"similarity_maps": ["layer4"]}}


__all__ = ["HDMNet", "HDMNetOptions", "OPTIONS", "PAPER_BACKBONE", "PRESETS", "VARIANTS", "build", "frozen_files",
           "hdmnet_model", "shots_fixed_by_training"]


def shots_fixed_by_training(options: dict) -> bool:
    """The K-shot weighting has K inputs: a model trained on K-shot episodes fits K-shot episodes only."""
    return True


def frozen_files(cfg: MethodConfig) -> dict[str, str]:
    """The base learner's file of a configuration (its fold's by default), unless random."""
    return HDMNetOptions.parse(cfg.options).base_learner_files(cfg)


def build(cfg: MethodConfig) -> HDMNet:
    """HDMNet on the frozen base learner of ``cfg``'s fold."""
    return hdmnet_model(cfg, HDMNetOptions.parse(cfg.options))


def hdmnet_model(cfg: MethodConfig, options: HDMNetOptions, guide: PriorSource | None = None,
                 guide_scale: float = SIMILARITY_SCALE) -> HDMNet:
    """HDMNet of ``options`` (HDMNet's or a subclass's, e.g. PI-CLIP(HDMNet)'s) on the fold's frozen base learner;
    ``guide`` replaces its two similarity maps (PI-CLIP's CLIP priors, unscaled), times ``guide_scale`` where they
    enter ``query_merge``."""
    if guide is not None and options.similarity_maps != SIMILARITY_LEVELS:
        raise OptionError(f"Option similarity_maps of {options.method} has no effect: its guide replaces HDMNet's "
                          "similarity maps.", "leave similarity_maps at its default for this method.")
    base_class_ids = benchmark_of(cfg).base_classes(cfg.fold)
    return HDMNet(options.frozen_base_learner(cfg, base_class_ids), base_class_ids, shots=cfg.shots,
                  feature_dim=options.feature_dim, dropout=options.dropout, size=options.transformer_size(),
                  transformer_init=options.transformer_init, fixed_batchnorm=options.fixed_batchnorm,
                  shot_unsort=options.shot_unsort, train_shot_weighting=options.train_shot_weighting,
                  base_dropout=options.base_dropout, lr_scale=options.lr_scale, guide=guide, guide_scale=guide_scale,
                  similarity_maps=options.similarity_maps)
