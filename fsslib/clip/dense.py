"""Dense CLIP features: MaskCLIP, per-block taps of a ViT, and text-driven segmentation.

All functions take images as floats in [0, 1], shape (B, 3, H, W), and normalise them
with the bundle's mean/std. Any input size works: positional embeddings are resized
(bicubic, class token kept) to the image's token grid, so ViT-B/16 at 473 x 473 sees a
29 x 29 grid (PI-CLIP's setting).

MaskCLIP (Zhou et al., ECCV 2022; used by LFSS Sec. 3.3) reads dense features out of
CLIP's *value* path, skipping the query-key attention of the last layer:

* ViT: blocks 1..L-1 run normally; the last block becomes
  ``x <- x + out_proj(v(ln_1(x)))`` then ``x <- x + mlp(ln_2(x))``, followed by
  ``ln_post`` and the projection into the joint space, for every patch token.
* Modified ResNet: the attention pool's query and key are dropped; its value projection
  and output projection ``c_proj`` are applied at every position (MaskCLIP's code writes
  them as 1x1 convolutions; fsslib applies the linear layers to the position tokens).

Its two optional refinements act on the class scores (see :func:`denoise_prompts` and
:func:`smooth_with_keys`). Nothing here switches autograd off: wrap inference in
``torch.no_grad()``; :func:`image_and_dense_embeddings` serves training.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import Tensor, nn

from fsslib.clip.loading import ClipBundle, ClipInputError, attention_pool_grid
from fsslib.models.vit import resize_positional_embedding

REMOVED_CLASS_LOGIT = -100.0  # MaskCLIP's logit for classes removed by prompt denoising
CLIP_TEMPERATURE = 0.01  # CLIP's learned logit scale is 100 = 1 / 0.01
RANGE_TOLERANCE = 1e-3


def prepare_images(bundle: ClipBundle, images: Tensor) -> Tensor:
    """Check a batch of [0, 1] images and normalise it with the bundle's mean/std."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ClipInputError(
            f"Expected a batch of RGB images of shape (B, 3, H, W), got {shape}.",
            "stack images into a float tensor (B, 3, H, W) in [0, 1]; for one image use image[None].",
        )
    if not images.is_floating_point():
        raise ClipInputError(
            f"Images have dtype {images.dtype}; the CLIP layer expects floats in [0, 1].",
            "convert with images.float() / 255.",
        )
    low, high = (float(v) for v in torch.aminmax(images.detach()))
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ClipInputError(
            f"Image values span [{low:.3g}, {high:.3g}], outside [0, 1].",
            "pass un-normalised images in [0, 1] (divide 0-255 images by 255); the bundle applies "
            "CLIP's mean/std itself.",
        )
    height, width = images.shape[-2:]
    if min(height, width) < bundle.patch_size:
        raise ClipInputError(
            f"Images of {height}x{width} pixels are smaller than one {bundle.patch_size}-pixel "
            f"{'patch' if bundle.kind == 'vit' else 'output cell'} of {bundle.name}.",
            f"resize images to at least {bundle.patch_size}x{bundle.patch_size} (native size: {bundle.image_size}).",
        )
    images = images.to(device=bundle.device, dtype=torch.float32)
    mean = torch.tensor(bundle.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std  # (B, 3, H, W)


def _require_vit(bundle: ClipBundle, what: str) -> None:
    if bundle.kind != "vit":
        raise ClipInputError(
            f"{what} needs a ViT image encoder, but {bundle.name} is a ResNet.",
            "load a ViT, e.g. load_clip('ViT-B-16', 'openai') or load_clip('toy-vit').",
        )
    transformer = bundle.visual.transformer
    plain_blocks = all(type(block) is ResidualAttentionBlock for block in transformer.resblocks)
    if not (transformer.batch_first and plain_blocks and bundle.visual.attn_pool is None):
        raise ClipInputError(
            f"{bundle.name}'s ViT uses custom attention blocks, an attentional pooler or sequence-first "
            "blocks, which the CLIP layer does not reimplement.",
            "use a standard CLIP ViT (ViT-B-16, ViT-B-32, ViT-L-14 or toy-vit).",
        )


def _vit_embed(visual: nn.Module, pixels: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Patch embedding + class token + resized positional embedding + ln_pre."""
    patches = visual.conv1(pixels)  # (B, C, h, w)
    batch, channels, grid_height, grid_width = patches.shape
    tokens = patches.reshape(batch, channels, grid_height * grid_width).permute(0, 2, 1)  # (B, N, C)
    class_token = visual.class_embedding.view(1, 1, -1).expand(batch, -1, -1).to(tokens.dtype)  # (B, 1, C)
    x = torch.cat([class_token, tokens], dim=1)  # (B, 1+N, C)
    grid = (grid_height, grid_width)
    positions = resize_positional_embedding(visual.positional_embedding, visual.grid_size, grid)  # (1+N, C)
    x = visual.patch_dropout(x + positions.to(x.dtype))
    return visual.ln_pre(x), grid


def _split_in_proj(attention: nn.MultiheadAttention, part: Literal["q", "k", "v"]) -> tuple[Tensor, Tensor | None]:
    width = attention.embed_dim
    start = {"q": 0, "k": width, "v": 2 * width}[part]
    bias = attention.in_proj_bias
    return attention.in_proj_weight[start : start + width], None if bias is None else bias[start : start + width]


def head_averaged_attention(block: nn.Module, x: Tensor) -> Tensor:
    """Softmax attention of one ViT block on its input x (B, T, C), averaged over heads: (B, T, T)."""
    attention: nn.MultiheadAttention = block.attn
    normed = block.ln_1(x)  # (B, T, C)
    queries = F.linear(normed, *_split_in_proj(attention, "q"))  # (B, T, C)
    keys = F.linear(normed, *_split_in_proj(attention, "k"))  # (B, T, C)
    heads = attention.num_heads
    queries = queries.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, T, C/heads)
    keys = keys.unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, T, C/heads)
    scale = queries.shape[-1] ** -0.5
    weights = torch.softmax((queries * scale) @ keys.transpose(-2, -1), dim=-1)  # (B, heads, T, T)
    return weights.mean(dim=1)


def _value_path_block(block: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """MaskCLIP's last ViT block: attention replaced by the value path. Returns (x, keys)."""
    attention: nn.MultiheadAttention = block.attn
    normed = block.ln_1(x)  # (B, T, C)
    keys = F.linear(normed, *_split_in_proj(attention, "k"))  # (B, T, C)
    values = F.linear(normed, *_split_in_proj(attention, "v"))  # (B, T, C)
    x = x + block.ls_1(attention.out_proj(values))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, keys


def project_tokens(bundle: ClipBundle, tokens: Tensor) -> Tensor:
    """Map ViT tokens (B, N, C) of the last block into CLIP's joint space: ln_post, then proj -> (B, N, D)."""
    return bundle.visual.ln_post(tokens) @ bundle.visual.proj


def _resnet_trunk(visual: nn.Module, pixels: Tensor) -> Tensor:
    x = visual.stem(pixels)
    for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = stage(x)
    return x  # (B, C, h, w)


def attention_pool(visual: nn.Module, features: Tensor) -> Tensor:
    """A ResNet's attention pool on its layer4 features (B, C, h, w) of any size: image embeddings (B, D).

    Equals open_clip's ``attnpool`` at the native grid; elsewhere its positional embedding is resized.
    """
    pool = visual.attnpool
    native = attention_pool_grid(visual)
    positions = resize_positional_embedding(pool.positional_embedding, (native, native), features.shape[-2:])
    x = features.reshape(features.shape[0], features.shape[1], -1).permute(2, 0, 1)  # (hw, B, C)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (1+hw, B, C)
    x = x + positions[:, None, :].to(x.dtype)
    pooled, _ = F.multi_head_attention_forward(
        query=x, key=x, value=x,
        embed_dim_to_check=x.shape[-1],
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    return pooled[0]  # (B, D)


def encode_image(bundle: ClipBundle, images: Tensor) -> Tensor:
    """CLIP image embeddings (B, D), unnormalised, for images of any size.

    Equals ``model.encode_image`` at the native size; elsewhere the positional embedding
    (ViT) or the attention pool's positional embedding (ResNet) is resized.
    """
    if bundle.kind == "vit":
        return block_taps(bundle, images, blocks=[], with_attention=False).image_embedding
    return attention_pool(bundle.visual, _resnet_trunk(bundle.visual, prepare_images(bundle, images)))


def _run_blocks(blocks: Sequence[nn.Module], x: Tensor, tap_block: int | None) -> tuple[Tensor, Tensor | None]:
    """Run ViT blocks on tokens x (B, T, C); block ``tap_block`` also returns ``ln_2`` of its mid-block tokens
    ``x + attn(ln_1(x))`` (the input of its MLP, where CLIP-DINOiser hooks its features): (x, tap or None)."""
    tapped = None
    for index, block in enumerate(blocks):
        if index == tap_block:
            mid = x + block.ls_1(block.attention(q_x=block.ln_1(x)))
            tapped = block.ln_2(mid)
            x = mid + block.ls_2(block.mlp(tapped))
        else:
            x = block(x)
    return x, tapped


def _dense_pass(
    bundle: ClipBundle, pixels: Tensor, with_image_embedding: bool, tap_block: int | None = None
) -> tuple[Tensor | None, Tensor, Tensor, tuple[int, int], Tensor | None]:
    """One pass of the image tower on normalised pixels (B, 3, H, W), autograd left as the caller set it.

    Returns the image embeddings (B, D) (None unless ``with_image_embedding``), the MaskCLIP
    dense tokens (B, N, D), the last layer's keys (B, N, C), the grid (h, w), N = h * w
    row-major, and (ViT, ``tap_block`` given) block ``tap_block``'s ``ln_2`` patch tokens (B, N, C).
    The image embedding is computed first, so a loss on both back-propagates in the same
    order on every call.
    """
    visual = bundle.visual
    if bundle.kind == "rn":
        trunk = _resnet_trunk(visual, pixels)  # (B, C, h, w)
        image = attention_pool(visual, trunk) if with_image_embedding else None
        tokens = trunk.flatten(2).transpose(1, 2)  # (B, N, C)
        pool = visual.attnpool
        return image, pool.c_proj(pool.v_proj(tokens)), pool.k_proj(tokens), (trunk.shape[-2], trunk.shape[-1]), None
    _require_vit(bundle, "MaskCLIP")
    x, grid = _vit_embed(visual, pixels)  # (B, 1+N, C)
    blocks = visual.transformer.resblocks
    x, tapped = _run_blocks(blocks[:-1], x, tap_block)
    image = None
    if with_image_embedding:
        pooled, _ = visual._pool(blocks[-1](x))  # (B, C): open_clip's own pooling
        image = pooled @ visual.proj
    x, keys = _value_path_block(blocks[-1], x)
    return image, project_tokens(bundle, x[:, 1:]), keys[:, 1:], grid, None if tapped is None else tapped[:, 1:]


def _as_map(tokens: Tensor, grid: tuple[int, int]) -> Tensor:
    """Tokens (B, N, C) of a row-major grid (h, w) -> a feature map (B, C, h, w)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def maskclip_features_and_keys(bundle: ClipBundle, images: Tensor) -> tuple[Tensor, Tensor]:
    """MaskCLIP dense features (B, D, h, w) in CLIP's joint space, and the last layer's keys (B, C, h, w).

    The keys are what key smoothing compares: the last ViT block's key projection of
    ``ln_1(x)`` (all heads concatenated), or the ResNet attention pool's ``k_proj`` applied
    at every position (no positional embedding, as in MaskCLIP). MaskCLIP's released ViT
    code also sends its keys through the attention's ``out_proj`` (a side effect of how it
    extracts v); fsslib keeps the plain keys the paper describes.
    """
    _, tokens, keys, grid, _ = _dense_pass(bundle, prepare_images(bundle, images), with_image_embedding=False)
    return _as_map(tokens, grid), _as_map(keys, grid)


def maskclip_features(bundle: ClipBundle, images: Tensor) -> Tensor:
    """MaskCLIP dense features (B, D, h, w) in CLIP's joint space (L2-normalise before cosine)."""
    return maskclip_features_and_keys(bundle, images)[0]


def image_and_dense_embeddings(bundle: ClipBundle, images: Tensor) -> tuple[Tensor, Tensor]:
    """CLIP image embeddings (B, D) and MaskCLIP dense embeddings (B, N, D), N = h * w row-major,
    from one pass of the image tower, with autograd: a loss on both trains the tower (the toy
    CLIP's pretraining, :mod:`fsslib.pretrain.toy_clip`). The image embedding equals
    ``model.encode_image`` at the native size.
    """
    image, tokens, _, _, _ = _dense_pass(bundle, prepare_images(bundle, images), with_image_embedding=True)
    return image, tokens


def maskclip_features_and_tap(bundle: ClipBundle, images: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """MaskCLIP dense features (B, D, h, w) and, from the same pass, an intermediate block's features (B, C, h, w).

    The intermediate features are ``ln_2`` of block ``block``'s mid-block tokens, where
    CLIP-DINOiser hooks its correlation and background heads (``resblocks[-3].ln_2`` of ViT-B/16
    in wysoczanska/clip_dinoiser ``models/clip_dinoiser/clip_dinoiser.py``). ``block`` counts
    from 0 or, negative, from the end; the last block, which MaskCLIP runs on its value path,
    cannot be tapped.
    """
    _require_vit(bundle, "maskclip_features_and_tap")
    blocks = len(bundle.visual.transformer.resblocks)
    index = _block_indices([block], blocks)[0]
    if index == blocks - 1:
        raise ClipInputError(f"Block {block} is the last block, which MaskCLIP replaces by its value path.",
                             f"tap one of blocks 0..{blocks - 2} (or -{blocks}..-2).")
    _, tokens, _, grid, tapped = _dense_pass(bundle, prepare_images(bundle, images), with_image_embedding=False,
                                             tap_block=index)
    return _as_map(tokens, grid), _as_map(tapped, grid)


@dataclass
class Taps:
    """What :func:`block_taps` recorded; dicts are keyed by non-negative block index (0 = first)."""

    tokens: dict[int, Tensor]  # block -> (B, N, C) patch tokens after the block
    class_tokens: dict[int, Tensor]  # block -> (B, C)
    attentions: dict[int, Tensor]  # block -> (B, 1+N, 1+N), or (B, N, N) with drop_cls
    image_embedding: Tensor  # (B, D), equals model.encode_image at the native size
    grid: tuple[int, int]  # (h, w) token grid, N = h * w

    def token_map(self, block: int) -> Tensor:
        """Patch tokens of ``block`` as a feature map (B, C, h, w)."""
        tokens = self.tokens[block]  # (B, N, C)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid)

    def mean_attention(self, blocks: Sequence[int] | None = None) -> Tensor:
        """Average of the recorded attention maps (PI-CLIP Eq. 9), over ``blocks`` or all recorded: (B, T, T)."""
        if not self.attentions:
            raise ClipInputError(
                "No attention maps were recorded.", "call block_taps(bundle, images, blocks, with_attention=True)."
            )
        chosen = sorted(self.attentions) if blocks is None else list(blocks)
        return torch.stack([self.attentions[block] for block in chosen]).mean(dim=0)


def _block_indices(blocks: Sequence[int], num_blocks: int) -> list[int]:
    indices = []
    for block in blocks:
        if not -num_blocks <= int(block) < num_blocks:
            raise ClipInputError(
                f"Block index {block} is out of range for a ViT with {num_blocks} blocks.",
                f"use 0..{num_blocks - 1} (0 = first block) or -{num_blocks}..-1 (-1 = last block).",
            )
        indices.append(int(block) % num_blocks)
    return indices


def block_taps(
    bundle: ClipBundle,
    images: Tensor,
    blocks: Sequence[int],
    *,
    with_attention: bool = True,
    drop_cls: bool = False,
) -> Taps:
    """Record patch tokens and head-averaged attention of chosen ViT blocks in one forward pass.

    ``blocks`` are 0-based (negative counts from the end: PI-CLIP's "last 8 blocks" is
    ``range(-8, 0)``). Tokens are the block's output; the attention map is the block's own
    softmax attention on its input. ``drop_cls`` slices the class token's row and column
    away (``A[:, 1:, 1:]``, not renormalised, as PI-CLIP does).
    """
    _require_vit(bundle, "block_taps")
    visual = bundle.visual
    resblocks = visual.transformer.resblocks
    wanted = set(_block_indices(blocks, len(resblocks)))
    x, grid = _vit_embed(visual, prepare_images(bundle, images))  # (B, 1+N, C)
    tokens, class_tokens, attentions = {}, {}, {}
    for index, block in enumerate(resblocks):
        if index in wanted and with_attention:
            attention = head_averaged_attention(block, x)  # (B, 1+N, 1+N)
            attentions[index] = attention[:, 1:, 1:] if drop_cls else attention
        x = block(x)
        if index in wanted:
            tokens[index], class_tokens[index] = x[:, 1:], x[:, 0]
    pooled, _ = visual._pool(x)  # (B, C): open_clip's own pooling (class token + ln_post by default)
    return Taps(tokens, class_tokens, attentions, pooled @ visual.proj, grid)


def _normalised_text(bundle: ClipBundle, text_embeddings: Tensor, device: torch.device) -> Tensor:
    is_matrix = isinstance(text_embeddings, Tensor) and text_embeddings.ndim == 2
    if not is_matrix or text_embeddings.shape[1] != bundle.embed_dim:
        shape = tuple(text_embeddings.shape) if isinstance(text_embeddings, Tensor) else type(text_embeddings).__name__
        raise ClipInputError(
            f"Expected text embeddings of shape (n_classes, {bundle.embed_dim}), got {shape}.",
            "build them with fsslib.clip.text.class_embeddings(bundle, names) or prompt_embeddings(bundle, prompts) "
            "using the same bundle.",
        )
    return F.normalize(text_embeddings.to(device=device, dtype=torch.float32), dim=-1)  # (n, D)


def cosine_logits(features: Tensor, text_embeddings: Tensor) -> Tensor:
    """Cosine similarity of dense features (B, D, h, w) with class embeddings (n, D): (B, n, h, w)."""
    features = F.normalize(features.float(), dim=1)
    return torch.einsum("bdhw,nd->bnhw", features, F.normalize(text_embeddings.float(), dim=-1))


def denoise_prompts(logits: Tensor, threshold: float = 0.5, temperature: float = CLIP_TEMPERATURE) -> Tensor:
    """MaskCLIP prompt denoising: drop classes that are nowhere confident.

    With ``p = softmax(logits / temperature)`` over classes (B, n, h, w), class c of
    image b is removed when ``max_{i} p[b, c, i] < threshold``: its logits are set to
    ``REMOVED_CLASS_LOGIT`` (-100) everywhere. MaskCLIP uses threshold t = 0.5.
    """
    probabilities = torch.softmax(logits / temperature, dim=1)  # (B, n, h, w)
    confidence = probabilities.flatten(2).amax(dim=-1)  # (B, n)
    removed = confidence < threshold  # (B, n)
    return logits.masked_fill(removed[:, :, None, None], REMOVED_CLASS_LOGIT)


def smooth_with_keys(
    logits: Tensor,
    keys: Tensor,
    threshold: float = 1.0,
    temperature: float = CLIP_TEMPERATURE,
    normalize_over: Literal["channels", "positions"] = "channels",
) -> Tensor:
    """MaskCLIP key smoothing: average class probabilities over positions with similar keys.

    ``p_i = softmax(logits_i / temperature)`` (B, N, n) at position i; then
    ``p'_i = sum_j cos(k_i, k_j) p_j`` for every position whose top probability is below
    ``threshold`` (MaskCLIP uses 1.0, i.e. everywhere); other positions keep ``p_i``.
    Returns the smoothed class scores (B, n, h, w): not logits, not normalised; use argmax.

    ``normalize_over="channels"`` L2-normalises each key vector, giving the cosine of the
    paper. MaskCLIP's released code instead normalises each key channel over positions
    (``F.normalize(k)`` on a (B, N, C) tensor, dim 1); ``"positions"`` reproduces that.
    """
    batch, classes, height, width = logits.shape
    probabilities = torch.softmax(logits / temperature, dim=1).flatten(2).transpose(1, 2)  # (B, N, n)
    key_vectors = keys.flatten(2).transpose(1, 2).float()  # (B, N, C)
    key_vectors = F.normalize(key_vectors, dim=2 if normalize_over == "channels" else 1)
    similarity = key_vectors @ key_vectors.transpose(1, 2)  # (B, N, N)
    smoothed = similarity @ probabilities  # (B, N, n)
    uncertain = probabilities.amax(dim=-1, keepdim=True) < threshold  # (B, N, 1)
    scores = torch.where(uncertain, smoothed, probabilities)  # (B, N, n)
    return scores.transpose(1, 2).reshape(batch, classes, height, width)


def segment_with_text(
    bundle: ClipBundle,
    images: Tensor,
    text_embeddings: Tensor,
    *,
    prompt_denoising: float | None = None,
    key_smoothing: float | None = None,
    temperature: float = CLIP_TEMPERATURE,
) -> Tensor:
    """Text-driven segmentation scores (B, n_classes, h, w) from MaskCLIP features.

    Plain call: cosine logits in [-1, 1]. ``prompt_denoising=t`` applies
    :func:`denoise_prompts` (MaskCLIP: t = 0.5); ``key_smoothing=t`` then applies
    :func:`smooth_with_keys` (MaskCLIP: t = 1.0) and the result becomes smoothed class
    scores. Upsample to the label size before taking the argmax.
    """
    text = _normalised_text(bundle, text_embeddings, bundle.device)  # (n, D)
    features, keys = maskclip_features_and_keys(bundle, images)  # (B, D, h, w), (B, C, h, w)
    logits = cosine_logits(features, text)  # (B, n, h, w)
    if prompt_denoising is not None:
        logits = denoise_prompts(logits, prompt_denoising, temperature)
    if key_smoothing is not None:
        logits = smooth_with_keys(logits, keys, key_smoothing, temperature)
    return logits
