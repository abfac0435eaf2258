"""PI-CLIP's training-free priors (Wang et al., CVPR 2024) as standalone batched functions.

* VTP, visual-text prior (Eqs. 1-4): :func:`visual_text_prior` wires the softmax score of the
  target prompt against the non-target one (Eqs. 1-2, :func:`fsslib.clip.gradcam.softmax_score`)
  into GradCAM (Eqs. 3-4, :func:`fsslib.clip.gradcam.gradcam_from_activations`). The prompts
  "a photo of {c}." and "a photo without {c}." are the official code's (Sec. 3.3 writes them
  without the full stop).
* VVP, visual-visual prior (Eqs. 5-8): :func:`visual_visual_prior`, max cosine similarity
  of every query token to the masked support tokens, min-max normalised.
* PIR, prior information refinement (Eqs. 9-11): the block-averaged attention of Eq. 9 is
  :meth:`fsslib.clip.dense.Taps.mean_attention`; Eq. 10 is :func:`sinkhorn_normalise` and
  :func:`refinement_matrix`; Eq. 11 is :func:`box_mask` and :func:`refine_prior`.

Every function works on a whole batch at once (one GradCAM backward pass for all queries);
the official code loops over the images of a batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from fsslib.clip import ClipBundle, Taps, gradcam, softmax_score
from fsslib.errors import FsslibError
from fsslib.blocks.correlation import COSINE_EPS, max_cosine_similarity, min_max_normalise
from fsslib.blocks.masks import foreground_weights

BOX_THRESHOLD = 0.4  # CLIP-ES box mask: components of the CAM above 0.4 * max (PI-CLIP Eq. 11, "following [24]")
PIR_BLOCKS = 8  # PI-CLIP: attention of the last l = 8 blocks (Eq. 9)


class PriorInputError(FsslibError, ValueError):
    """Tensors handed to a PI-CLIP prior function have shapes that do not fit together."""


# --------------------------------------------------------------------------- VTP (Eqs. 1-4)


def visual_text_prior(
    bundle: ClipBundle,
    query_images: torch.Tensor,
    prompts: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    temperature: float = 0.01,
    activation: Literal["last_block_output", "last_block_ln_1"] = "last_block_output",
    taps: Taps | None = None,
) -> torch.Tensor:
    """VTP P_vt (B, h, w) in [0, 1]: softmax-GradCAM of the target prompt (Eqs. 1-4), min-max scaled.

    query_images: (B, 3, H, W) in [0, 1]; prompts: (B, n, D) normalised text embeddings with the
    target prompt "a photo of {c}." first. Build them with :func:`vtp_prompt_table`:

    * paper (Sec. 3.3): per query the 2 prompts of the episode class, [target, non-target];
      uses nothing but the class being segmented.
    * official code (``get_cam.py``): the target and non-target prompts of *every class present
      in the query image*, softmax over all 2m of them. This reads the query's image-level
      labels (from its annotation) at test time, i.e. it leaks ground truth about the query.

    ``temperature`` is tau (0.01 for pretrained CLIP; toy models: ``bundle.logit_temperature``).
    ``activation``: GradCAM w.r.t. the last block's output patch tokens (Eq. 3 as written), or
    the last block's ``ln_1`` output as the official code's pytorch-grad-cam target layer.
    One backward pass for the whole batch (scores of different images do not interact).
    ``taps``: the query's :func:`~fsslib.clip.dense.block_taps`, holding the block GradCAM starts from (see
    :func:`~fsslib.clip.gradcam.gradcam`): the CLIP tower is not run a second time, and the map is the same.
    """
    if prompts.ndim != 3 or prompts.shape[0] != query_images.shape[0] or prompts.shape[-1] != bundle.embed_dim:
        raise PriorInputError(
            f"VTP prompts must be (B={query_images.shape[0]}, n, {bundle.embed_dim}), got {tuple(prompts.shape)}.",
            "build them with vtp_prompt_table(...) for the same batch and CLIP model.",
        )
    score_fn = softmax_score(bundle, prompts, target=0, temperature=temperature, valid=valid)  # Eqs. 1-2: S_f
    return gradcam(bundle, query_images, score_fn, activation=activation, normalize=True, taps=taps)  # (B, h, w), Eq. 4


def vtp_prompt_table(
    target_text: torch.Tensor,
    non_target_text: torch.Tensor,
    class_indices: torch.Tensor,
    present_indices: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query VTP prompts (B, n, D) and validity (B, n) from per-class text tables.

    target_text / non_target_text: (n_classes, D) embeddings of "a photo of {c}." / "a photo
    without {c}."; class_indices: (B,) row of each query's episode class. Without
    ``present_indices`` (paper): [target, non-target] of the episode class. With it (official
    code, leaks the query's labels): [target of c, non-target of c, target and non-target of every
    other present class], padded to the longest list with invalid entries.
    """
    batch = class_indices.shape[0]
    if present_indices is None:  # [target, non-target] of each query's class: gathered on the device, nothing read back
        prompts = torch.stack([target_text[class_indices], non_target_text[class_indices]], dim=1)  # (B, 2, D)
        return prompts, torch.ones(batch, 2, dtype=torch.bool, device=target_text.device)
    if len(present_indices) != batch:
        raise PriorInputError(f"present_indices has {len(present_indices)} entries for {batch} queries.",
                              "pass one list of present class rows per query.")
    others = [[int(c) for c in present if int(c) != int(target)]
              for present, target in zip(present_indices, class_indices)]
    classes = target_text.shape[0]
    table = torch.cat([target_text, non_target_text, target_text.new_zeros(1, target_text.shape[-1])])  # (2C+1, D)
    padding = 2 * classes  # the zero row: an invalid entry
    width = 2 + 2 * max(len(o) for o in others)
    index = torch.full((batch, width), padding, dtype=torch.long)  # (B, n) rows of the table
    for row, (target, other) in enumerate(zip(class_indices.tolist(), others)):  # the labels are host-side lists
        entries = [target, classes + target, *other, *(classes + c for c in other)]
        index[row, : len(entries)] = torch.tensor(entries)
    index = index.to(target_text.device)
    return table[index], index != padding  # (B, n, D), (B, n)


# --------------------------------------------------------------------------- VVP (Eqs. 5-8)


def support_token_weights(support_masks: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(N, H, W) masks {0, 1, 255} -> (N, 1, h, w) fraction of each token's patch covered by the mask.

    The official code samples the mask with nearest interpolation; area fractions keep small
    objects (toy tier: 8 x 8 tokens) from vanishing. Any covered token counts for the cosine max.
    """
    return foreground_weights(support_masks, grid, mode="area")


def visual_visual_prior(query_tokens: torch.Tensor, support_tokens: torch.Tensor, support_masks: torch.Tensor,
                        min_max: bool = True) -> torch.Tensor:
    """VVP P_vv (B, K, h, w): one prior per shot (concatenate them for K shots, as the paper).

    query_tokens: (B, C, h, w) CLIP patch tokens of one block (CLS dropped, before ln_post and
    the projection: official code, blocks 11 and 12 of ViT-B/16); support_tokens: (B, K, C, h, w)
    of the same block; support_masks: (B, K, H, W). Eq. 5 masks the support tokens, Eqs. 6-7 take
    the max cosine over support positions for every query position, Eq. 8 min-max normalises
    with eps 1e-7. ``min_max=False`` skips Eq. 8, as the official code does: the raw cosine (at most 1) keeps how
    similar the query is at all, which min-max scaling removes (each image's most similar region becomes 1).
    """
    batch, shots = support_tokens.shape[:2]
    if query_tokens.shape[0] != batch or query_tokens.shape[1:] != support_tokens.shape[2:]:
        raise PriorInputError(
            f"Query tokens {tuple(query_tokens.shape)} and support tokens {tuple(support_tokens.shape)} do not match.",
            "pass query tokens (B, C, h, w) and support tokens (B, K, C, h, w) of the same CLIP block.",
        )
    weights = support_token_weights(support_masks.flatten(0, 1), support_tokens.shape[-2:])  # (B*K, 1, h, w)
    masked_support = support_tokens.flatten(0, 1) * weights  # (B*K, C, h, w), Eq. 5
    query_repeated = query_tokens.repeat_interleave(shots, dim=0)  # (B*K, C, h, w)
    similarity = max_cosine_similarity(query_repeated, masked_support, COSINE_EPS)  # (B*K, h, w), Eqs. 6-7
    if min_max:
        similarity = min_max_normalise(similarity)  # Eq. 8
    return similarity.view(batch, shots, *similarity.shape[-2:])


# --------------------------------------------------------------------------- PIR (Eqs. 9-11)


def sinkhorn_normalise(attention: torch.Tensor) -> torch.Tensor:
    """D = Sinkhorn(A) (Eq. 10) for (B, N, N) maps: divide by column sums, then by row sums.

    One iteration, as the official code: afterwards rows sum to 1 exactly and columns approximately.
    """
    columns_normalised = attention / attention.sum(dim=1, keepdim=True)  # columns sum to 1
    return columns_normalised / columns_normalised.sum(dim=2, keepdim=True)  # rows sum to 1


def refinement_matrix(mean_attention: torch.Tensor, squarings: int = 0) -> torch.Tensor:
    """R = max(D, D D^T), D = Sinkhorn(A_bar) (Eq. 10); (B, N, N) -> (B, N, N).

    ``squarings=1`` reproduces the official code, which additionally replaces R by R @ R once.
    """
    transition = sinkhorn_normalise(mean_attention)  # (B, N, N)
    refinement = torch.maximum(transition, transition @ transition.transpose(1, 2))
    for _ in range(squarings):
        refinement = refinement @ refinement
    return refinement


def box_mask(prior: torch.Tensor, threshold: float = BOX_THRESHOLD) -> torch.Tensor:
    """B (Eq. 11): union of the bounding boxes of the connected regions of ``prior > threshold * max``.

    prior: (B, h, w); returns a float {0, 1} mask (B, h, w). Components use 8-connectivity (the
    outer contours that CLIP-ES's ``scoremap2bbox`` finds with OpenCV); labelling runs on the CPU.
    A map that is all zero gives an all-zero box mask.
    """
    maps = prior.detach().float().cpu().numpy()
    boxes = np.zeros_like(maps, dtype=np.float32)
    for index, score_map in enumerate(maps):  # one labelling per map: one 3-D labelling of the batch ran slower
        peak = score_map.max()
        if peak <= 0:
            continue
        components, _ = ndimage.label(score_map > threshold * peak, structure=np.ones((3, 3)))
        for rows, cols in ndimage.find_objects(components):
            boxes[index, rows, cols] = 1.0
    return torch.from_numpy(boxes).to(prior.device)


def refine_prior(prior: torch.Tensor, refinement: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Refined prior (Eq. 11), min-max scaled: P_hat(i) = sum_j R(i, j) B(j) P(j).

    prior: (B, h, w), or (B, C, h, w) for C priors refined at once (the VVP's channels); boxes: (B, h, w);
    refinement: (B, N, N) with N = h * w. The box mask weights the source positions j, as the official code's
    ``trans_mat * aff_mask`` (mask on columns). Returns the prior's shape.
    """
    if prior.ndim not in (3, 4) or boxes.shape != (prior.shape[0], *prior.shape[-2:]):
        raise PriorInputError(f"A prior to refine is (B, h, w) or (B, C, h, w) with boxes (B, h, w); got "
                              f"{tuple(prior.shape)} and boxes {tuple(boxes.shape)}.",
                              "flatten the extra dimensions into C (e.g. the VVP's blocks and shots: "
                              "vvp.flatten(1, 2)).")
    batch, height, width = prior.shape[0], *prior.shape[-2:]
    if refinement.shape != (batch, height * width, height * width):
        raise PriorInputError(
            f"Refinement matrix {tuple(refinement.shape)} does not fit a prior of {tuple(prior.shape)}.",
            "compute the attention on the same images and token grid as the prior (CLS row/column dropped).",
        )
    channels = prior.view(batch, -1, height, width)  # (B, C, h, w)
    source = (boxes[:, None] * channels).flatten(2).transpose(1, 2)  # (B, N, C)
    refined = (refinement @ source).transpose(1, 2).reshape(channels.shape)  # (B, C, h, w)
    return min_max_normalise(refined).view_as(prior)


def refine_with_attention(prior: torch.Tensor, mean_attention: torch.Tensor, box_source: torch.Tensor | None = None,
                          threshold: float = BOX_THRESHOLD, squarings: int = 0) -> torch.Tensor:
    """PIR end to end (Eqs. 9-11): box mask from ``box_source`` (default: the prior itself), refine ``prior``.

    mean_attention: (B, N, N) head- and block-averaged attention without the CLS token (Eq. 9).
    PI-CLIP builds the box mask from the VTP; refining the VVP reuses the VTP's boxes.
    """
    boxes = box_mask(prior if box_source is None else box_source, threshold)  # (B, h, w)
    return refine_prior(prior, refinement_matrix(mean_attention, squarings), boxes)
