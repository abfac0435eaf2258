"""The toy ResNet: the toy tier's stand-in for an ImageNet-pretrained ResNet-50.

The paper tier starts from an ImageNet-pretrained ResNet-50, whose 1000 classes cover
PASCAL's 20. Likewise ``ToyResNet`` (``fsslib.models.backbones``) is pretrained by
multi-label classification over all 20 toy classes: global average pool of layer4 ->
linear head -> 20 logits, binary cross-entropy against the classes present in each
scene's mask.

* :mod:`~fsslib.pretrain.toy_resnet.model` -- the classifier that is trained, and its targets.
* :mod:`~fsslib.pretrain.toy_resnet.train` -- the training loop (``train_toy_backbone``).
* :mod:`~fsslib.pretrain.toy_resnet.metrics` -- held-out mAP and class-activation IoU.
* :mod:`~fsslib.pretrain.toy_resnet.cli` -- ``python -m fsslib.pretrain toy-resnet``.
"""
from fsslib.pretrain.toy_resnet.metrics import evaluate_checkpoint
from fsslib.pretrain.toy_resnet.model import ToyClassifier
from fsslib.pretrain.toy_resnet.train import train_toy_backbone

__all__ = ["ToyClassifier", "evaluate_checkpoint", "train_toy_backbone"]
