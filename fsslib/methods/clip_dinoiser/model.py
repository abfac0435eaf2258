"""CLIP-DINOiser's parts: the correlation and background heads, guided pooling and the background rule.

Wysoczańska et al., "CLIP-DINOiser: Teaching CLIP a few DINO tricks" (ECCV 2024); checked against
wysoczanska/clip_dinoiser ``models/clip_dinoiser/clip_dinoiser.py`` and ``train.py``. That paper's text is not in
this repository (only the support-image report is), so the map below names each part and its function, with the
formula as the official code computes it, rather than the paper's equation numbers.

With X (B, C, h, w) an intermediate CLIP block's features (``ln_2`` of block -3 of ViT-B/16;
:func:`fsslib.clip.maskclip_features_and_tap`) and F (B, D, h, w) the MaskCLIP features:

* **Correlation head** (:class:`CorrelationHead`): ``Z = conv3x3(X)`` (C -> 256, replicate padding),
  ``A[n, m] = cos(Z_n, Z_m)``; trained so that ``A`` predicts the teacher's correlations
  ``cos(v_n, v_m) >= gamma`` (DINO's last-block values, gamma = 0.2; :func:`teacher_targets`), BCE with
  ``max(A, 0)`` as the logits (:func:`correlation_loss`).
* **Background head** (:class:`BackgroundHead`): ``b = conv1x1(X / |X|)`` (C -> 1), a foreground logit; trained
  against the background teacher's (FOUND's) saliency > 0.5, BCE (:func:`background_loss`).
* **Guided pooling** (:func:`guided_pooling`): ``A' = A`` where ``A >= gamma``, else 0;
  ``F'_n = sum_m A'[n, m] F_m / (sum_m A'[n, m] + 1e-6)``.
* **Scores** (:func:`class_log_scores`): ``P = softmax(100 cos(F'_n, t_c))`` over the vocabulary t_c (class 0 =
  background); fsslib keeps them as log-probabilities.
* **Background rule** (:func:`apply_background`): where the background head says background
  (``sigmoid(b) <= 0.5``) and the pixel is uncertain (``max_c P_c < delta``, delta = 0.99), class 0 gets score 1.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fsslib.errors import CheckpointError
from fsslib.models.files import read_weights
from fsslib.paths import CHECKPOINT_DIR, WEIGHTS_DOC

GAMMA = 0.2  # correlations below gamma do not pool (and are the teacher's negatives)
DELTA = 0.99  # a pixel whose top class probability is below delta is uncertain
PROJECTION_DIM = 256
SCORE_SCALE = 100.0  # CLIP's logit scale: softmax(100 cos)
POOL_EPSILON = 1e-6


class CorrelationHead(nn.Module):
    """``conv3x3`` (replicate padding) to ``dim`` channels; cosine correlations of its outputs."""

    def __init__(self, in_channels: int, dim: int = PROJECTION_DIM, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size, padding=kernel_size // 2, padding_mode="replicate")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, N, N) cosine correlations A, N = h * w row-major."""
        projected = F.normalize(self.proj(features).flatten(2), dim=1)  # (B, dim, N)
        return projected.transpose(1, 2) @ projected


class BackgroundHead(nn.Module):
    """``conv1x1`` on L2-normalised features: (B, C, h, w) -> (B, 1, h, w) foreground logits."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(F.normalize(features, dim=1))


class DinoiserHeads(nn.Module):
    """The two trained parts of CLIP-DINOiser (all else is frozen CLIP)."""

    def __init__(self, in_channels: int, dim: int = PROJECTION_DIM, kernel_size: int = 3) -> None:
        super().__init__()
        self.correlation = CorrelationHead(in_channels, dim, kernel_size)
        self.background = BackgroundHead(in_channels)


def teacher_targets(teacher_features: torch.Tensor, gamma: float | None = GAMMA) -> torch.Tensor:
    """(B, N, N) binary targets ``cos(v_n, v_m) >= gamma`` of teacher tokens (B, N, C) (the official ``> 0`` after
    zeroing the correlations below gamma; a correlation of exactly 0 is negative in both). ``gamma`` None or 0:
    no threshold, ``cos > 0``, as the official training does without one."""
    unit = F.normalize(teacher_features.float(), dim=-1)
    correlations = unit @ unit.transpose(1, 2)  # (B, N, N)
    positive = correlations > 0
    return (positive & (correlations >= gamma) if gamma else positive).float()


def correlation_loss(predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE with ``max(A, 0)`` as logits against the teacher's binarised correlations (both (B, N, N))."""
    return F.binary_cross_entropy_with_logits(predicted.clamp(min=0), targets)


def background_loss(logits: torch.Tensor, teacher_saliency: torch.Tensor) -> torch.Tensor:
    """BCE of foreground logits (B, 1, h, w) against the teacher's saliency (B, 1, h, w) binarised at 0.5."""
    return F.binary_cross_entropy_with_logits(logits, (teacher_saliency > 0.5).float())


def guided_pooling(dense: torch.Tensor, correlations: torch.Tensor, gamma: float | None = GAMMA) -> torch.Tensor:
    """Pool dense features (B, D, h, w) with correlations (B, N, N): ``F'_n = sum_m A'[n,m] F_m / (sum_m A'[n,m] + eps)``,
    ``A' = A * [A >= gamma]``: one batched product. ``gamma`` None or 0 thresholds nothing, ``A' = A``
    (negative correlations included), as the official ``if self.gamma:`` does."""
    weights = correlations * (correlations >= gamma) if gamma else correlations  # (B, N, N)
    pooled = torch.einsum("bnm,bdm->bdn", weights, dense.flatten(2))  # (B, D, N)
    pooled = pooled / (weights.sum(dim=-1)[:, None, :] + POOL_EPSILON)
    return pooled.view_as(dense)


def class_log_scores(features: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """``log softmax(100 cos(F_n, t_c))`` over the vocabulary: features (B, D, h, w), embeddings (B or 1, n, D) -> (B, n, h, w).

    Log-probabilities (rather than the official probabilities) keep a gradient where a class is far
    from winning, for the trained adapter; ``exp`` gives the official scores.
    """
    features = F.normalize(features.float(), dim=1)
    embeddings = F.normalize(embeddings.float(), dim=-1).expand(len(features), -1, -1)
    return torch.log_softmax(SCORE_SCALE * torch.einsum("bdhw,bnd->bnhw", features, embeddings), dim=1)


def apply_background(log_scores: torch.Tensor, foreground_logits: torch.Tensor, delta: float = DELTA) -> torch.Tensor:
    """Class 0 (background) gets score 1 (log 0) where ``sigmoid(b) <= 0.5`` and ``max_c P_c < delta``.

    log_scores (B, n, h, w), foreground logits (B, 1, h, w) at the same grid (upsample them first).
    The official code writes 1 into the probabilities in place (for one image); this is the same rule, batched.
    """
    uncertain = log_scores.amax(dim=1, keepdim=True) < math.log(delta)  # (B, 1, h, w)
    background = foreground_logits.sigmoid() <= 0.5
    replaced = log_scores[:, :1].masked_fill(uncertain & background, 0.0)
    return torch.cat([replaced, log_scores[:, 1:]], dim=1)


TOY_HEADS_CHECKPOINT = CHECKPOINT_DIR / "toy_clip_dinoiser_heads.pt"
TOY_HEADS_RETRAIN = "python -m fsslib.pretrain toy-clip-dinoiser --threads 1 --out"
OFFICIAL_FEATURE_BLOCK = -3  # resblocks[-3].ln_2 of ViT-B/16
OFFICIAL_NAMES = {"obj_proj.": "correlation.proj.", "bkg_decoder.": "background.proj."}


def load_heads(checkpoint: str | Path | None = None) -> tuple[DinoiserHeads, int, str | None]:
    """Trained heads in eval mode, the CLIP block they read, and the CLIP they were trained on (None: not recorded).

    ``None``: the shipped toy heads (``{"heads", "feature_block", "clip"}``, written by
    ``python -m fsslib.pretrain toy-clip-dinoiser``); a path: such a file, or the official
    release's ``last.pt`` (``{"model_state_dict": {"obj_proj.*", "bkg_decoder.*"}}``, block -3 of
    ViT-B/16).
    """
    path = Path(checkpoint or TOY_HEADS_CHECKPOINT)
    fix = (f"re-create the toy heads with `{TOY_HEADS_RETRAIN} {path}`, or pass the official checkpoint "
           f"(checkpoints/last.pt of wysoczanska/clip_dinoiser; {WEIGHTS_DOC}).")
    payload = read_weights(path, "CLIP-DINOiser heads", fix)
    if isinstance(payload, dict) and isinstance(payload.get("model_state_dict"), dict):
        state = {next(ours + key[len(theirs):] for theirs, ours in OFFICIAL_NAMES.items() if key.startswith(theirs)): value
                 for key, value in payload["model_state_dict"].items() if key.startswith(tuple(OFFICIAL_NAMES))}
        block, clip = OFFICIAL_FEATURE_BLOCK, None
    elif isinstance(payload, dict) and isinstance(payload.get("heads"), dict) and "feature_block" in payload:
        state, block, clip = payload["heads"], int(payload["feature_block"]), payload.get("clip")
    else:
        raise CheckpointError(f"{path} holds neither fsslib's toy heads nor the official model_state_dict.", fix)
    weight = state.get("correlation.proj.weight")
    if weight is None or weight.ndim != 4:
        raise CheckpointError(f"{path} has no correlation head weights.", fix)
    heads = DinoiserHeads(in_channels=weight.shape[1], dim=weight.shape[0], kernel_size=weight.shape[-1])
    try:
        heads.load_state_dict({key: value.float() for key, value in state.items()})
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit CLIP-DINOiser's heads: {str(error)[:300]}", fix)
    return heads.eval(), block, clip
