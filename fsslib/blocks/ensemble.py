"""BAM's learner ensemble: suppress what a base-class segmenter recognises (Lang et al., CVPR 2022).

A meta learner trained on base classes also fires on base-class objects it should leave alone. BAM adds the base
learner (:class:`~fsslib.blocks.base_learner.BaseLearner`) and moves its base-class probability into the meta
learner's background. How much it trusts the meta learner depends on how different the query's scene is from the
supports': the scene difference. HDMNet and PI-CLIP(HDMNet) keep this ensemble unchanged.

Map to the official code (``model/BAM.py``; BAM's paper text is not in this repository, so the map names the
code's lines rather than the paper's equation numbers):

* :func:`gram_matrix` -- ``get_gram_matrix``: the channels' cosine-similarity matrix of low-level (``layer2``)
  features.
* :func:`scene_difference` -- ``est_val``: ``psi = ||G_q - G_s||_F / ||1||_F``, one value per shot, in [0, 1]
  (the Frobenius norm of a C x C matrix of ones is C).
* :class:`ShotWeighting` -- ``kshot_rw``, K-shot: the K differences, sorted, go through two 1x1 convolutions
  (``kshot_trans_dim = 2`` hidden channels) and a softmax; the weights average the shots' differences (and, in
  BAM, their priors and prototypes).
* :class:`LearnerEnsemble` -- the "Classifier Ensemble" lines: ``p_bg = cls_merge([gram_merge([p_meta_bg, psi]), p_base_fg])``,
  ``p_fg = gram_merge([p_meta_fg, psi])``, where ``p_base_fg`` sums the base learner's foreground probabilities.
  During training the episode's own class (a base class then) is left out of that sum. Both merges are 1x1
  convolutions without bias that start as the identity of their first input (weights [1, 0]).

Two things the official code does that the paper does not say, followed here:

* The output is a pair of probability-like scores, not logits, and the official loss applies cross-entropy to
  them all the same (``criterion(final_out, y_m)``): the methods do the same.
* HDMNet's copy of the K-shot weighting (``model/HDMNet.py``, also in PI-CLIP's ``model/PI_CLIP.py``) gathers the
  sorted weights with ``idx1.gather(1, idx2)``, which is the identity permutation: its weights stay in the sorted
  order while the differences they multiply are in the shots' order. ``ShotWeighting(unsort=False)`` is that code;
  BAM's (``unsort=True``) gives each shot the weight computed at its rank.

Checked against chunbolang/BAM ``model/BAM.py`` and Pbihao/HDMNet ``model/HDMNet.py`` (tests/test_ensemble.py
transcribes their lines without fsslib and matches them).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.errors import EpisodeShapeError

GRAM_EPS = 1e-7  # the official get_gram_matrix's


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, C): cosine similarity between every pair of channels over the positions."""
    flat = features.flatten(2)  # (N, C, hw)
    norms = flat.norm(dim=2, keepdim=True)  # (N, C, 1)
    return flat @ flat.transpose(1, 2) / (norms @ norms.transpose(1, 2) + GRAM_EPS)


def scene_difference(query: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
    """BAM's scene difference of a query's low-level features (B, C, h, w) and its K supports'
    (B, K, C, h', w'): ``||G_q - G_s||_F / C`` per shot, (B, K). Computed in float32 at least, outside autocast:
    the differences between Gram matrices are small, and bf16 (a GPU run's autocast) would round them away. The
    official code trains in float32."""
    batch, shots = supports.shape[:2]
    with torch.autocast(query.device.type, enabled=False):
        query, supports = _at_least_float32(query), _at_least_float32(supports)
        query_gram = gram_matrix(query).unsqueeze(1)  # (B, 1, C, C)
        support_gram = gram_matrix(supports.flatten(0, 1)).view(batch, shots, *query_gram.shape[-2:])  # (B, K, C, C)
        return (query_gram - support_gram).flatten(2).norm(dim=2) / query.shape[1]


def _at_least_float32(features: torch.Tensor) -> torch.Tensor:
    """``features`` in float32 if they are in a half-precision type (bf16 autocast), else unchanged (float64 stays)."""
    return features.float() if features.dtype in (torch.float16, torch.bfloat16) else features


class ShotWeighting(nn.Module):
    """Weights (B, K) summing to 1 over the K shots from their scene differences (B, K); all ones for one shot.

    ``hidden`` = 0: one 1x1 convolution K -> K that starts as the average; else K -> hidden -> K with a ReLU
    (the official ``kshot_trans_dim``, 2). ``unsort``: give each shot the weight computed at its rank (BAM); False:
    keep the weights in the sorted order (HDMNet's official gather, the identity permutation).
    """

    def __init__(self, shots: int, hidden: int = 2, unsort: bool = True) -> None:
        super().__init__()
        self.shots = shots
        self.unsort = unsort
        self.transform: nn.Module | None = None
        if shots > 1 and hidden == 0:
            self.transform = nn.Conv2d(shots, shots, 1, bias=False)
            nn.init.constant_(self.transform.weight, 1.0 / shots)
        elif shots > 1:
            self.transform = nn.Sequential(nn.Conv2d(shots, hidden, 1), nn.ReLU(inplace=True),
                                           nn.Conv2d(hidden, shots, 1))

    def forward(self, differences: torch.Tensor) -> torch.Tensor:
        if differences.shape[1] != self.shots:  # a 1-shot model would sum K shots; a K-shot one cannot read others
            raise EpisodeShapeError(
                f"This model's K-shot weighting was built for {self.shots} support(s) per class and was given "
                f"{differences.shape[1]}: its layers fit the number of shots it was trained on.",
                f"give {self.shots} support(s) per class, or use a model trained on {differences.shape[1]}-shot "
                "episodes (the zoo holds 1- and 5-shot models: --ckpt zoo:5shot)")
        if self.transform is None:
            return torch.ones_like(differences)
        ordered, order = differences.sort(dim=1)  # (B, K) ascending
        weights = self.transform(ordered[:, :, None, None])[:, :, 0, 0]  # (B, K), in sorted order
        if self.unsort:
            weights = weights.gather(1, order.argsort(dim=1))  # shot k gets the weight of its rank
        return weights.softmax(dim=1)


def base_foreground(base_probabilities: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """The base learner's probability (B, 1, h, w) that a pixel holds any base class: the sum over its foreground
    channels of (B, 1 + C_base, h, w) probabilities, without channel ``exclude[b]`` (1-based; 0 excludes nothing)."""
    keep = torch.ones(base_probabilities.shape[:2], dtype=base_probabilities.dtype, device=base_probabilities.device)
    keep[:, 0] = 0
    if exclude is not None:
        keep.scatter_(1, exclude.view(-1, 1), 0.0)
        keep[:, 0] = 0
    return (base_probabilities * keep[:, :, None, None]).sum(dim=1, keepdim=True)


class LearnerEnsemble(nn.Module):
    """BAM's ensemble: meta logits (B, 2, h, w), base logits (B, 1 + C_base, h', w') and the scene
    difference (B,) -> ensemble scores (B, 2, h, w) (probability-like; the official loss reads them as logits).

    ``exclude`` (B,): the episode class's base index during training
    (:func:`~fsslib.blocks.base_learner.base_class_index`), left out of the base foreground; None at test time. A
    base map of another size is resized to the meta map (bilinear, aligned corners: PI-CLIP's official code).
    """

    def __init__(self) -> None:
        super().__init__()
        self.gram_merge = nn.Conv2d(2, 1, 1, bias=False)
        self.cls_merge = nn.Conv2d(2, 1, 1, bias=False)
        for merge in (self.gram_merge, self.cls_merge):
            with torch.no_grad():
                merge.weight.copy_(torch.tensor([1.0, 0.0]).view_as(merge.weight))

    def forward(self, meta_logits: torch.Tensor, base_logits: torch.Tensor, difference: torch.Tensor,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
        meta = meta_logits.softmax(dim=1)  # (B, 2, h, w)
        base = base_foreground(base_logits.softmax(dim=1), exclude)  # (B, 1, h', w')
        if base.shape[-2:] != meta.shape[-2:]:
            base = F.interpolate(base, meta.shape[-2:], mode="bilinear", align_corners=True)
        psi = difference.view(-1, 1, 1, 1).expand_as(meta[:, :1])  # (B, 1, h, w)
        background = self.gram_merge(torch.cat([meta[:, :1], psi], dim=1))
        foreground = self.gram_merge(torch.cat([meta[:, 1:], psi], dim=1))
        background = self.cls_merge(torch.cat([background, base], dim=1))
        return torch.cat([background, foreground], dim=1)
