"""The toy CLIP's pretraining: the toy tier's stand-in for CLIP ViT-B/16 and RN50.

The architecture, tokenizer and loading live in the CLIP layer (``fsslib.clip.toy``,
``fsslib.clip.load_clip``); this package trains it contrastively on captions of toy scenes
and crops, plus two multiple-instance losses on the MaskCLIP dense features.

* :mod:`~fsslib.pretrain.toy_clip.train` -- the training loop (``train_toy_clip``) and its ``TrainSettings``.
* :mod:`~fsslib.pretrain.toy_clip.recipes` -- the stages that make the shipped checkpoints.
* :mod:`~fsslib.pretrain.toy_clip.metrics` -- the acceptance metrics on held-out scenes.
* :mod:`~fsslib.pretrain.toy_clip.cli` -- ``python -m fsslib.pretrain toy-clip train|recipe|evaluate``.
"""
from fsslib.pretrain.toy_clip.metrics import acceptance_metrics
from fsslib.pretrain.toy_clip.recipes import RECIPES, Stage, train_recipe
from fsslib.pretrain.toy_clip.train import TrainSettings, train_toy_clip

__all__ = ["RECIPES", "Stage", "TrainSettings", "acceptance_metrics", "train_recipe", "train_toy_clip"]
