"""Pretraining of the toy tier's stand-ins for pretrained weights (one home; open_clip's
separation of model configs, ``loss.py`` and ``training/`` is the pattern).

The architectures and their loading stay in the model layers (``fsslib.models.backbones``,
``fsslib.clip``); this package makes the weights that ship in ``fsslib/checkpoints/``:

* :mod:`~fsslib.pretrain.registry` -- the stand-ins by name; ``python -m fsslib.pretrain NAME ...``.
* :mod:`~fsslib.pretrain.scenes` -- pools of toy scenes rendered from seeded streams.
* :mod:`~fsslib.pretrain.captions` -- captions of toy scenes (contrastive pretraining).
* :mod:`~fsslib.pretrain.losses` -- contrastive and dense multiple-instance losses.
* :mod:`~fsslib.pretrain.schedules` -- learning-rate schedules.
* :mod:`~fsslib.pretrain.views` -- random views (MoCo v2's aug-plus, DINO's multi-crop), batched.
* :mod:`~fsslib.pretrain.saving` -- checkpoints with a provenance JSON beside them.
* one subpackage per stand-in, each with its training loop and acceptance metrics:
  :mod:`~fsslib.pretrain.toy_resnet` (ImageNet ResNet-50), :mod:`~fsslib.pretrain.toy_clip`
  (CLIP ViT-B/16 and RN50), :mod:`~fsslib.pretrain.qgnet_prior` (QGNet's prior extractor).
"""
from fsslib.pretrain.registry import PRETRAINERS, Pretrainer

__all__ = ["PRETRAINERS", "Pretrainer"]
