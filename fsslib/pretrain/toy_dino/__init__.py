"""The toy DINO: the toy tier's stand-in for DINO ViT-B/16 (CLIP-DINOiser's teacher) and ViT-S/8 (FOUND's).

A small ViT (:data:`fsslib.models.vit.TOY_DINO`) trained from scratch on unlabelled toy scenes by
DINO's self-distillation (Caron et al., ICCV 2021; checked against facebookresearch/dino
``main_dino.py``): a student and an EMA teacher with the same head, the teacher's centred,
sharpened outputs on the global views as targets for the student's outputs on every other view.

* :mod:`~fsslib.pretrain.toy_dino.dino` -- the projection head, the loss (centring, temperatures), the EMA.
* :mod:`~fsslib.pretrain.toy_dino.train` -- the training loop (``train_toy_dino``).
* :mod:`~fsslib.pretrain.toy_dino.metrics` -- does the toy DINO group objects better than the toy CLIP?
* :mod:`~fsslib.pretrain.toy_dino.cli` -- ``python -m fsslib.pretrain toy-dino``.
"""
from fsslib.pretrain.toy_dino.dino import DinoHead, DinoLoss, update_teacher
from fsslib.pretrain.toy_dino.train import DinoSettings, train_toy_dino

__all__ = ["DinoHead", "DinoLoss", "DinoSettings", "train_toy_dino", "update_teacher"]
