"""QGNet's prior extractor: MoCo v2 (global loss, Eq. 1) plus a local contrastive loss on superpixel patches
(Eq. 6, SLIC or Felzenszwalb), L = L_local + L_global (Eq. 7). The official QGNet release has no pretraining
code; this is a complete one, measured on the toy tier, and the same losses on a benchmark's images for the paper
tier (not yet run at the paper's size).

* :mod:`~fsslib.pretrain.qgnet_prior.patches` -- superpixels (computed once, cached) and patch crops.
* :mod:`~fsslib.pretrain.qgnet_prior.moco` -- the encoders, queues and losses.
* :mod:`~fsslib.pretrain.qgnet_prior.train` -- the training loop (``train_prior_extractor``).
* :mod:`~fsslib.pretrain.qgnet_prior.metrics` -- held-out kNN mAP and prior-region-map recall.
* :mod:`~fsslib.pretrain.qgnet_prior.cli` -- ``python -m fsslib.pretrain toy-qgnet-prior``.
* :mod:`~fsslib.pretrain.qgnet_prior.paper` -- the paper tier: a ResNet-50 on PASCAL's or COCO's images, written as
  a MoCo checkpoint (``python -m fsslib.pretrain qgnet-prior``, :mod:`~fsslib.pretrain.qgnet_prior.paper_cli`).
"""
from fsslib.pretrain.qgnet_prior.moco import LOSS_SETS, ContrastiveEncoder, GlobalLocalMoCo
from fsslib.pretrain.qgnet_prior.train import PriorSettings, train_prior_extractor

__all__ = ["LOSS_SETS", "ContrastiveEncoder", "GlobalLocalMoCo", "PriorSettings", "train_prior_extractor"]
