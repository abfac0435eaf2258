"""CLIP-DINOiser's heads trained on the frozen toy CLIP against the toy teachers (toy DINO, toy FOUND).

* :mod:`~fsslib.pretrain.clip_dinoiser_heads.train` -- the training loop (``train_dinoiser_heads``) and its
  held-out acceptance metrics.
* :mod:`~fsslib.pretrain.clip_dinoiser_heads.cli` -- ``python -m fsslib.pretrain toy-clip-dinoiser``.

The heads' architecture, losses and loading live with the method (:mod:`fsslib.methods.clip_dinoiser`).
"""
from fsslib.pretrain.clip_dinoiser_heads.train import HeadSettings, train_dinoiser_heads

__all__ = ["HeadSettings", "train_dinoiser_heads"]
