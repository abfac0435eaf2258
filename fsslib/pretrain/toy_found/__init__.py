"""The toy background teacher: FOUND (Siméoni et al., CVPR 2023) on the toy DINO.

CLIP-DINOiser's background head is distilled from FOUND's saliency. FOUND finds the background
first: the patch the class token attends to least is a *background seed*, and the background
is every patch whose DINO key is similar to the seed's (cosine > tau). A 1x1 convolution on
the keys is then trained to predict the rest, the foreground, from those coarse masks, then to
agree with its own binarised output (FOUND's self-training).

* :mod:`~fsslib.pretrain.toy_found.found` -- seed, coarse masks, the head and its losses.
* :mod:`~fsslib.pretrain.toy_found.train` -- the training loop and held-out foreground IoU; loading the
  toy teacher (:func:`load_found`) or FOUND's release (:func:`load_found_release`, paper tier).
* :mod:`~fsslib.pretrain.toy_found.cli` -- ``python -m fsslib.pretrain toy-found``.
"""
from fsslib.pretrain.toy_found.found import FoundHead, background_seed, coarse_background, found_loss, head_weights
from fsslib.pretrain.toy_found.train import FoundSettings, load_found, load_found_release, train_toy_found

__all__ = ["FoundHead", "FoundSettings", "background_seed", "coarse_background", "found_loss", "head_weights",
           "load_found", "load_found_release", "train_toy_found"]
