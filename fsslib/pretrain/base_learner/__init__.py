"""BAM's base learner (Lang et al., CVPR 2022, stage 1): PSPNet trained on a fold's base classes, backbone included.

BAM and HDMNet read it back frozen: its fine-tuned backbone feeds their meta learners, its base-class
probabilities their learner ensembles (:mod:`fsslib.blocks.base_learner`, :mod:`fsslib.blocks.ensemble`).

* :mod:`~fsslib.pretrain.base_learner.data` -- base-class labels, training images and augmentation (``BaseData``).
* :mod:`~fsslib.pretrain.base_learner.train` -- the training loop (``train_base_learner``), presets, base mIoU.
* :mod:`~fsslib.pretrain.base_learner.files` -- the weight file: written, found and read back.
* :mod:`~fsslib.pretrain.base_learner.cli` -- ``python -m fsslib.pretrain base-learner``.

Checked against chunbolang/BAM ``train_base.py``, ``util/dataset.py`` (``BaseData``), ``util/util.py``
(``poly_learning_rate``) and ``config/pascal/pascal_split0_resnet50_base.yaml``.
"""
from fsslib.pretrain.base_learner.files import (
    base_learner_file,
    base_learner_path,
    frozen_base_learner,
    load_base_learner,
    random_base_learner,
    remake_command,
)

__all__ = ["base_learner_file", "base_learner_path", "frozen_base_learner", "load_base_learner", "random_base_learner",
           "remake_command"]
