"""FOUND's background discovery and its light head (Siméoni et al., CVPR 2023, Sec. 3).

* **Seed** (Sec. 3.1): with the last block's class-token attention ``A_h`` (B, heads, N), summed
  over the heads, the seed is ``s = argmin_p sum_h A_h[p]``, the patch that attracts the least
  attention. (FOUND also re-weights the heads by how sparse their maps are; with the toy DINO's
  few heads the plain sum is kept.)
* **Coarse background** (Sec. 3.1): ``M_b[p] = 1`` where ``cos(k_p, k_s) >= tau`` (tau = 0.3),
  k the last block's keys; the coarse foreground is ``1 - M_b``.
* **Head** (Sec. 3.2): one 1x1 convolution from the keys to a foreground logit, trained with
  ``L = BCE(y, 1 - M_b) + BCE(y, [sigmoid(y) > 0.5])`` (the second term, self-training, uses the
  head's own binarised output, detached). FOUND smooths both targets with a bilateral solver;
  on 8 x 8 toy grids it is left out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslib.models.vit import LastBlockTaps

SIMILARITY_THRESHOLD = 0.3  # tau


def background_seed(cls_attention: torch.Tensor) -> torch.Tensor:
    """(B,) index of the patch with the least class-token attention summed over heads: (B, heads, N) -> (B,)."""
    return cls_attention.sum(dim=1).argmin(dim=1)


def coarse_background(taps: LastBlockTaps, tau: float = SIMILARITY_THRESHOLD) -> torch.Tensor:
    """(B, N) bool: patches whose key is at least ``tau``-similar (cosine) to the seed's key."""
    keys = F.normalize(taps.keys.float(), dim=-1)  # (B, N, C)
    seed = background_seed(taps.cls_attention)  # (B,)
    seed_keys = keys[torch.arange(len(keys)), seed]  # (B, C)
    return torch.einsum("bnc,bc->bn", keys, seed_keys) >= tau


class FoundHead(nn.Module):
    """One 1x1 convolution: keys (B, C, h, w) -> foreground logits (B, 1, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, keys: torch.Tensor) -> torch.Tensor:
        return self.conv(keys)


def found_loss(logits: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """FOUND's loss: BCE to the coarse foreground (B, 1, h, w) plus BCE to the head's own binarised output."""
    foreground = (~background).float()
    own = (logits.detach().sigmoid() > 0.5).float()
    return F.binary_cross_entropy_with_logits(logits, foreground) + F.binary_cross_entropy_with_logits(logits, own)
