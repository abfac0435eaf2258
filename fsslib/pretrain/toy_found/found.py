"""FOUND's background discovery and its light head (Siméoni et al., CVPR 2023, Sec. 3; checked against
valeoai/FOUND ``bkg_seg.py``, ``model.py`` and ``main_found_train.py`` with ``configs/found_DUTS-TR.yaml``).

With ``A_h`` (B, heads, N) the last block's class-token attention and ``k`` its keys:

* **Head weights** (CroW's sparsity weighting): with ``t`` the mean of all heads' attention of the
  image, ``Q_h`` the share of patches where ``A_h > t`` and ``beta_h = log(sum_h' Q_h' / Q_h)``
  (both with eps = 1e-10 added), each head's attention and its slice of the keys are scaled by beta_h.
* **Seed**: ``s = argmin_p sum_h beta_h A_h[p]``, the patch that attracts the least attention.
* **Coarse background**: ``M_b[p] = 1`` where ``cos(k'_p, k'_s) > tau`` (tau = 0.3), k' the weighted keys;
  the coarse foreground is ``1 - M_b``.
* **Head**: one 1x1 convolution from the keys to a foreground logit y. FOUND's loss at step i:
  ``1.5 BCE(y, S([sigmoid(y) > 0.5]))`` plus ``BCE(y, S(1 - M_b))`` for the first 100 steps, then
  ``4 BCE(y, [sigmoid(y) > 0.5])`` instead (self-training); S is a bilateral solver that smooths
  the masks along the image's edges. On the toy tier's 8 x 8 grids fsslib leaves S out (S = identity).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslib.models.vit import LastBlockTaps

SIMILARITY_THRESHOLD = 0.3  # tau
EPSILON = 1e-10
STOP_BACKGROUND_STEPS = 100  # FOUND trains on the coarse masks for its first 100 iterations only
SOLVER_WEIGHT, SELF_WEIGHT = 1.5, 4.0


def head_weights(cls_attention: torch.Tensor) -> torch.Tensor:
    """CroW sparsity weights beta (B, heads) of class-token attention maps (B, heads, N)."""
    threshold = cls_attention.flatten(1).mean(dim=1)  # (B,)
    share = (cls_attention > threshold[:, None, None]).float().mean(dim=-1) + EPSILON  # Q_h (B, heads)
    return torch.log(share.sum(dim=1, keepdim=True) / share)


def background_seed(cls_attention: torch.Tensor) -> torch.Tensor:
    """(B,) index of the patch with the least weighted class-token attention: (B, heads, N) -> (B,)."""
    return (cls_attention * head_weights(cls_attention)[:, :, None]).sum(dim=1).argmin(dim=1)


def coarse_background(taps: LastBlockTaps, tau: float = SIMILARITY_THRESHOLD) -> torch.Tensor:
    """(B, N) bool: patches whose weighted key is more than ``tau``-similar (cosine) to the seed's."""
    heads = taps.cls_attention.shape[1]
    keys = taps.keys.float().unflatten(-1, (heads, -1)) * head_weights(taps.cls_attention)[:, None, :, None]
    keys = F.normalize(keys.flatten(2), dim=-1)  # (B, N, C)
    seed = background_seed(taps.cls_attention)  # (B,)
    seed_keys = keys[torch.arange(len(keys)), seed]  # (B, C)
    return torch.einsum("bnc,bc->bn", keys, seed_keys) > tau


class FoundHead(nn.Module):
    """One 1x1 convolution: keys (B, C, h, w) -> foreground logits (B, 1, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, keys: torch.Tensor) -> torch.Tensor:
        return self.conv(keys)


def found_loss(logits: torch.Tensor, background: torch.Tensor, step: int,
               stop_background_steps: int = STOP_BACKGROUND_STEPS) -> torch.Tensor:
    """FOUND's loss at optimiser step ``step`` (0-based): logits (B, 1, h, w), coarse background (B, 1, h, w) bool."""
    own = (logits.detach().sigmoid() > 0.5).float()
    loss = SOLVER_WEIGHT * F.binary_cross_entropy_with_logits(logits, own)
    if step < stop_background_steps:
        return loss + F.binary_cross_entropy_with_logits(logits, (~background).float())
    return loss + SELF_WEIGHT * F.binary_cross_entropy_with_logits(logits, own)
