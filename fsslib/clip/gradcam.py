"""GradCAM on CLIP's last-layer tokens (ViT patch tokens or ResNet layer4 positions), for a
whole batch with one backward pass.

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
``reshape_transform`` does. A ResNet's last block is layer4: A is its output, one token
per position (row-major). PI-CLIP's score is :func:`softmax_score` (Eqs. 1-2) and its
maps are min-max scaled per image afterwards (``normalize=True``, pytorch-grad-cam's
``scale_cam_image``: :func:`fsslib.blocks.correlation.min_max_normalise`, eps 1e-7).

A ViT's tower before the tapped layer runs without gradient. When the caller has already run it on the same
images (:func:`fsslib.clip.dense.block_taps`, as PI-CLIP does for its VVP and PIR), ``taps=`` hands over the
recorded block output the activation starts from, and GradCAM runs only the layers after it: the maps are equal
bit for bit, and one pass of the tower is saved.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fsslib.blocks.correlation import min_max_normalise
from fsslib.clip.dense import (
    CLIP_TEMPERATURE,
    _require_vit,
    _resnet_trunk,
    _vit_embed,
    Taps,
    attention_pool,
    prepare_images,
    project_tokens,
)
from fsslib.clip.loading import ClipBundle, ClipInputError

ScoreFn = Callable[[Tensor], Tensor]  # last-block tokens (B, N, C) -> one score per image (B,)
ACTIVATIONS = ("last_block_output", "last_block_ln_1")


def gradcam_from_activations(activations: Tensor, gradients: Tensor, grid: tuple[int, int]) -> Tensor:
    """GradCAM maps (B, h, w) from activations and gradients (B, N, C): Eqs. 3-4."""
    weights = gradients.mean(dim=1)  # (B, C)
    cam = torch.relu(torch.einsum("bnc,bc->bn", activations, weights))  # (B, N)
    return cam.reshape(cam.shape[0], *grid)


def gradcam_start_block(bundle: ClipBundle, activation: str) -> int:
    """The ViT block (0-based) whose recorded output GradCAM from ``taps`` starts from: the last block
    (``last_block_output``), or the one before it, whose output is the last block's input (``last_block_ln_1``)."""
    return bundle.num_blocks - (1 if activation == "last_block_output" else 2)


def _recorded_block_output(bundle: ClipBundle, images: Tensor, taps: Taps, block: int) -> Tensor:
    """The output (B, 1+N, C) of ViT ``block`` (0-based) that ``taps`` recorded for ``images``, class token first."""
    if block < 0 or block not in taps.tokens:
        needed = "the block before the last" if block == bundle.num_blocks - 2 else "the last block"
        raise ClipInputError(
            f"GradCAM was given taps without {needed}'s output (block {block}); it starts from there.",
            f"record it: block_taps(bundle, images, [..., {block}]), or call gradcam without taps=.",
        )
    tokens = taps.tokens[block]  # (B, N, C)
    if tokens.shape[0] != images.shape[0]:
        raise ClipInputError(f"The taps hold {tokens.shape[0]} images, the batch {images.shape[0]}.",
                             "pass the block_taps of the same images.")
    return torch.cat([taps.class_tokens[block][:, None], tokens], dim=1)


def _tap(bundle: ClipBundle, images: Tensor, activation: str, taps: Taps | None = None
         ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
    """Run the tower up to the tapped activations, with grad from there on; a ViT starts from ``taps`` when given.

    Returns the tapped leaf (which the gradient is taken for), its patch tokens A (B, N, C),
    the tokens the score function receives (B, N, C) and the grid (h, w).
    """
    visual = bundle.visual
    if taps is not None:
        _require_vit(bundle, "GradCAM from recorded taps")
        recorded = _recorded_block_output(bundle, images, taps, gradcam_start_block(bundle, activation))
        if activation == "last_block_output":
            tapped = recorded.detach().requires_grad_(True)
            return tapped, tapped[:, 1:], tapped[:, 1:], taps.grid
        return _from_last_block_input(visual.transformer.resblocks[-1], recorded, taps.grid)  # the last block's input
    pixels = prepare_images(bundle, images)
    if bundle.kind == "rn":
        if activation != "last_block_output":
            raise ClipInputError(
                f"GradCAM activation {activation!r} exists only for ViTs; {bundle.name} is a ResNet.",
                "use activation='last_block_output' (layer4's output) with a ResNet.",
            )
        with torch.no_grad():
            trunk = _resnet_trunk(visual, pixels)  # (B, C, h, w)
        tapped = trunk.flatten(2).transpose(1, 2).requires_grad_(True)  # (B, N, C)
        return tapped, tapped, tapped, (trunk.shape[-2], trunk.shape[-1])
    _require_vit(bundle, "GradCAM")
    blocks = visual.transformer.resblocks
    with torch.no_grad():
        x, grid = _vit_embed(visual, pixels)  # (B, 1+N, C)
        for block in blocks[:-1]:
            x = block(x)
    last = blocks[-1]
    if activation == "last_block_output":
        with torch.no_grad():
            tapped = last(x)  # (B, 1+N, C)
        tapped.requires_grad_(True)
        return tapped, tapped[:, 1:], tapped[:, 1:], grid
    return _from_last_block_input(last, x, grid)


def _from_last_block_input(last: torch.nn.Module, x: Tensor, grid: tuple[int, int]
                           ) -> tuple[Tensor, Tensor, Tensor, tuple[int, int]]:
    """The official code's target layer: the last block's ``ln_1`` output is the leaf, and only the attention
    branch carries its gradient (the residual input ``x`` (B, 1+N, C) has none)."""
    tapped = last.ln_1(x).detach().requires_grad_(True)  # (B, 1+N, C)
    attended = last.attn(tapped, tapped, tapped, need_weights=False)[0]
    y = x + last.ls_1(attended)
    y = y + last.ls_2(last.mlp(last.ln_2(y)))
    return tapped, tapped[:, 1:], y[:, 1:], grid


def gradcam(
    bundle: ClipBundle,
    images: Tensor,
    score_fn: ScoreFn,
    *,
    activation: Literal["last_block_output", "last_block_ln_1"] = "last_block_output",
    normalize: bool = False,
    taps: Taps | None = None,
) -> Tensor:
    """GradCAM maps (B, h, w) of a ViT or ResNet CLIP for per-image scores ``score_fn(tokens)``.

    ``score_fn`` receives the last block's patch tokens (B, N, C) (ViT: before ``ln_post``;
    use :func:`fsslib.clip.dense.project_tokens` to reach the joint space; ResNet: layer4's
    positions, row-major) and must return one score per image, shape (B,). See the module
    docstring for ``activation``. ``taps``: :func:`~fsslib.clip.dense.block_taps` of the same ``images`` (ViT) that
    recorded the last block (``last_block_output``) or the one before it (``last_block_ln_1``): the tower is not
    run again.
    """
    if torch.is_inference_mode_enabled():
        raise ClipInputError(
            "GradCAM needs gradients, but it was called inside torch.inference_mode().",
            "call gradcam outside inference_mode (torch.no_grad() around it is fine: gradcam re-enables grad).",
        )
    if activation not in ACTIVATIONS:
        raise ClipInputError(f"Unknown GradCAM activation {activation!r}.", f"use one of: {', '.join(ACTIVATIONS)}.")
    with torch.enable_grad():
        tapped, activations, tokens, grid = _tap(bundle, images, activation, taps)
        scores = score_fn(tokens)
        if not isinstance(scores, Tensor) or scores.shape != (tokens.shape[0],):
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ClipInputError(
                f"The GradCAM score function returned {shape}; it must return one score per image, "
                f"shape ({tokens.shape[0]},).",
                "reduce over tokens/classes inside score_fn, e.g. pick the target class's probability per image.",
            )
        (gradients,) = torch.autograd.grad(scores.sum(), tapped)  # tapped's shape
    if bundle.kind == "vit":
        gradients = gradients[:, 1:]  # (B, N, C): the class token dropped
    maps = gradcam_from_activations(activations.detach().float(), gradients.float(), grid)
    return min_max_normalise(maps) if normalize else maps


def _image_token(bundle: ClipBundle, tokens: Tensor) -> Tensor:
    """The image embedding (B, D) a softmax score compares with text, from last-block tokens (B, N, C).

    ViT: PI-CLIP's Eq. 1, the mean of the projected patch tokens. ResNet: the model's own
    attention pool over the layer4 grid, which is read as square.
    """
    if bundle.kind == "vit":
        return project_tokens(bundle, tokens).mean(dim=1)
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ClipInputError(
            f"A ResNet's softmax score pools its layer4 grid, read as square, but {tokens.shape[1]} positions "
            "are not a square grid.",
            f"pass square images (e.g. {bundle.image_size}x{bundle.image_size}) to gradcam with a ResNet.",
        )
    return attention_pool(bundle.visual, tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side))


def softmax_score(
    bundle: ClipBundle,
    text_embeddings: Tensor,
    target: int | Tensor,
    temperature: float = CLIP_TEMPERATURE,
    valid: Tensor | None = None,
) -> ScoreFn:
    """PI-CLIP's softmax-GradCAM score (Eqs. 1-2) as a ``score_fn`` for :func:`gradcam`.

    The image token is the mean of the projected patch tokens (Eq. 1; a ResNet's is its
    attention pool); its cosine with
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
        image = F.normalize(_image_token(bundle, tokens).float(), dim=-1)  # (B, D)
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
