"""GradCAM on ViT patch tokens, for a whole batch with one backward pass.

Standard GradCAM (Selvaraju et al. 2017) as PI-CLIP writes it (Eqs. 3-4) for the
activations A (B, N, C) of the tapped layer and a score S_b per image:

    w_{b,c} = (1 / N) * sum_i dS_b / dA_{b,i,c}        (Eq. 3: spatial mean of the gradient)
    P_{b,i} = ReLU(sum_c w_{b,c} * A_{b,i,c})          (Eq. 4)

One backward of ``sum_b S_b`` gives every image's gradient at once: S_b depends only on
image b's tokens (attention never mixes images), so the gradients do not mix.

Which activations? ``activation="last_block_output"`` taps the patch tokens leaving the
last block (what the score function receives). PI-CLIP's code (inherited from CLIP-ES,
via pytorch-grad-cam with ``target_layers=[visual.transformer.resblocks[-1].ln_1]``) taps
the output of the last block's ``ln_1`` instead, i.e. the normalised *input* of the last
block, and only the attention branch carries its gradient (the residual input is
computed without gradient); ``activation="last_block_ln_1"`` reproduces that. In both
cases the class token is dropped from A and from the gradient, as PI-CLIP's
``reshape_transform`` does. PI-CLIP's score is :func:`softmax_score` (Eqs. 1-2) and its
maps are min-max scaled per image afterwards (``normalize=True``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fsslib.clip.dense import CLIP_TEMPERATURE, _require_vit, _vit_embed, prepare_images, project_tokens
from fsslib.clip.loading import ClipBundle, ClipInputError

ScoreFn = Callable[[Tensor], Tensor]  # last-block patch tokens (B, N, C) -> one score per image (B,)
MIN_MAX_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image epsilon
ACTIVATIONS = ("last_block_output", "last_block_ln_1")


def gradcam_from_activations(activations: Tensor, gradients: Tensor, grid: tuple[int, int]) -> Tensor:
    """GradCAM maps (B, h, w) from activations and gradients (B, N, C): Eqs. 3-4."""
    weights = gradients.mean(dim=1)  # (B, C)
    cam = torch.relu(torch.einsum("bnc,bc->bn", activations, weights))  # (B, N)
    return cam.reshape(cam.shape[0], *grid)


def min_max_scale(maps: Tensor) -> Tensor:
    """Scale each map (B, h, w) to [0, 1] as pytorch-grad-cam's ``scale_cam_image`` does."""
    shifted = maps - maps.flatten(1).amin(dim=1)[:, None, None]
    return shifted / (shifted.flatten(1).amax(dim=1)[:, None, None] + MIN_MAX_EPS)


def gradcam(
    bundle: ClipBundle,
    images: Tensor,
    score_fn: ScoreFn,
    *,
    activation: Literal["last_block_output", "last_block_ln_1"] = "last_block_output",
    normalize: bool = False,
) -> Tensor:
    """GradCAM maps (B, h, w) of a ViT for per-image scores ``score_fn(tokens)``.

    ``score_fn`` receives the last block's patch tokens (B, N, C) (before ``ln_post``; use
    :func:`fsslib.clip.dense.project_tokens` to reach the joint space) and must return
    one score per image, shape (B,). See the module docstring for ``activation``.
    """
    _require_vit(bundle, "GradCAM")
    if torch.is_inference_mode_enabled():
        raise ClipInputError(
            "GradCAM needs gradients, but it was called inside torch.inference_mode().",
            "call gradcam outside inference_mode (torch.no_grad() around it is fine: gradcam re-enables grad).",
        )
    if activation not in ACTIVATIONS:
        raise ClipInputError(f"Unknown GradCAM activation {activation!r}.", f"use one of: {', '.join(ACTIVATIONS)}.")
    visual = bundle.visual
    blocks = visual.transformer.resblocks
    with torch.no_grad():
        x, grid = _vit_embed(visual, prepare_images(bundle, images))  # (B, 1+N, C)
        for block in blocks[:-1]:
            x = block(x)
    last = blocks[-1]
    with torch.enable_grad():
        if activation == "last_block_output":
            with torch.no_grad():
                tapped = last(x)  # (B, 1+N, C)
            tapped.requires_grad_(True)
            tokens = tapped[:, 1:]
        else:
            tapped = last.ln_1(x).detach().requires_grad_(True)  # (B, 1+N, C)
            attended = last.attn(tapped, tapped, tapped, need_weights=False)[0]
            y = x + last.ls_1(attended)
            y = y + last.ls_2(last.mlp(last.ln_2(y)))
            tokens = y[:, 1:]  # (B, N, C)
        scores = score_fn(tokens)
        if not isinstance(scores, Tensor) or scores.shape != (x.shape[0],):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ClipInputError(
                f"The GradCAM score function returned {shape}; it must return one score per image, "
                f"shape ({x.shape[0]},).",
                "reduce over tokens/classes inside score_fn, e.g. pick the target class's probability per image.",
            )
        (gradients,) = torch.autograd.grad(scores.sum(), tapped)  # (B, 1+N, C)
    maps = gradcam_from_activations(tapped.detach()[:, 1:].float(), gradients[:, 1:].float(), grid)
    return min_max_scale(maps) if normalize else maps


def softmax_score(
    bundle: ClipBundle,
    text_embeddings: Tensor,
    target: int | Tensor,
    temperature: float = CLIP_TEMPERATURE,
    valid: Tensor | None = None,
) -> ScoreFn:
    """PI-CLIP's softmax-GradCAM score (Eqs. 1-2) as a ``score_fn`` for :func:`gradcam`.

    The image token is the mean of the projected patch tokens (Eq. 1); its cosine with
    each text embedding over ``temperature`` goes through a softmax over the prompts, and
    the score is the probability of prompt ``target`` (Eq. 2). ``text_embeddings`` is
    (n, D) for all images or (B, n, D) per image (PI-CLIP: target and non-target prompts
    of the classes present); ``target`` is an index, or one index per image (B,); ``valid``
    (B, n) bool leaves padding prompts out of the softmax.
    """
    if text_embeddings.ndim not in (2, 3) or text_embeddings.shape[-1] != bundle.embed_dim:
        raise ClipInputError(
            f"Expected text embeddings (n, {bundle.embed_dim}) or (B, n, {bundle.embed_dim}), "
            f"got {tuple(text_embeddings.shape)}.",
            "build them with fsslib.clip.text.prompt_embeddings(bundle, prompts) using the same bundle.",
        )
    text = F.normalize(text_embeddings.float(), dim=-1)

    def score(tokens: Tensor) -> Tensor:
        image = F.normalize(project_tokens(bundle, tokens).mean(dim=1).float(), dim=-1)  # (B, D)
        prompts = text.to(image.device)
        if prompts.ndim == 2:
            logits = image @ prompts.T  # (B, n)
        else:
            logits = torch.einsum("bd,bnd->bn", image, prompts)  # (B, n)
        if valid is not None:
            logits = logits.masked_fill(~valid.to(image.device), float("-inf"))
        probabilities = torch.softmax(logits / temperature, dim=-1)  # (B, n)
        index = torch.as_tensor(target, device=image.device).long().expand(image.shape[0])  # (B,)
        return probabilities.gather(1, index[:, None])[:, 0]

    return score
