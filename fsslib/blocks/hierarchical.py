"""HDMNet's hierarchical dense matching transformer and its correlation distillation loss.

Peng et al., "Hierarchical Dense Correlation Distillation for Few-Shot Segmentation" (CVPR 2023). HDMNet uses
these blocks, and so does PI-CLIP on HDMNet (its official code feeds the matching convolutions more guide
channels). The paper's text is not in ``shared/papers``; the map below names its parts, checked against the
official code (Pbihao/HDMNet, ``model/Transformer.py``, ``model/MaskMultiheadAttention.py``, ``model/HDMNet.py``).

* Hierarchical dense features: :class:`DownStage`, one per level. A patch embedding (a conv of
  ``patch_size`` and ``stride``, padding ``stride // 2``, then LayerNorm), two :class:`EncoderLayer` s of efficient
  self-attention (keys and values shrunk by a ``sr_ratio`` conv + LayerNorm, SegFormer's) with a
  :class:`MixFFN` (1x1, depthwise 3x3, GELU, 1x1), then LayerNorm. Query and supports share the weights.
* The correlation mechanism: :class:`MaskedAttention` with ``cross=True``. Queries and keys are L2-normalised
  and their scores divided by the temperature 0.1; the softmax runs over the QUERY positions (dim -2), not
  over the keys; support positions outside the mask get zero attention. It also returns the correlation map:
  for each query position the mean score over the support foreground, averaged over heads.
* Matching at each level, coarse to fine (:class:`MatchStage`): a cross-attention :class:`EncoderLayer`, then
  a 3x3 conv + BatchNorm + ReLU over the output and the guide channels (HDMNet's two similarity maps).
* Coarse-to-fine parsing and the classifier: :class:`HierarchicalTransformer`.
* Correlation distillation: :func:`correlation_distillation_loss`. It is the KL divergence between softmaxes
  over positions. The first teacher, of the coarsest level, is the ground truth (1 on the object, -1e9 elsewhere);
  each level's detached correlation then teaches the next finer one. The sum is divided by the number of levels (official ``/ 3``).

Sizes are parameters (:class:`TransformerSize`): the paper's (:data:`PAPER_SIZE`: 64 channels, heads 2/4/8,
reductions 4/2/1, patches 1/3/3, strides 1/2/2, MLP ratio 4, dropout 0.1) and smaller ones for the toy tier.
``guide_channels`` is the number of extra channels of the matching convs: 2 for HDMNet, more for PI-CLIP.

**What the official code really does, and fsslib with it.**

* *Initial weights.* ``MixVisionTransformer.init_weights`` (truncated-normal linears, LayerNorm 1/0, convs
  normal with std sqrt(2 / fan_out)) is never called: mmcv calls ``BaseModule.init_weights`` only when asked,
  and HDMNet's ``train.py`` does not ask. So the weights are PyTorch's defaults, except the matching convs:
  mmcv's ``ConvModule`` initialises its conv He-normal (fan_out, ReLU) and its norm to 1/0 when built.
  ``init="official"`` does exactly that; ``init="init_weights"`` applies the uncalled method instead.
* *Frozen BatchNorm statistics.* The official ``train.py`` runs ``model.apply(fix_bn)`` (``fix_bn: True`` in
  every config), so every BatchNorm of the transformer stays in eval mode during training. Its running
  statistics never leave (0, 1): each BatchNorm is a learned per-channel affine map. ``fixed_batchnorm=True``
  (default) does the same; ``False`` trains them as batch statistics.
* *SyncBN* is plain ``BatchNorm2d`` here (one process; under fix_bn they compute the same thing).
* Query and support pass the down-sampling stages as one batch (the official code calls them one after the
  other: the same numbers, one pass); they must have the same spatial size.

mmcv/mmseg pieces, as written here: ``PatchEmbed`` with an int padding = conv with bias, flatten, LayerNorm;
``MultiheadAttention``'s ``proj_drop`` = dropout on the attention output; ``DropPath(0)`` = identity; mmseg
``resize`` = ``F.interpolate``. ``tests/test_hdmnet.py`` transcribes the official forward in plain torch and
matches this module to 1e-10 in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from fsslib.blocks.masks import foreground_weights
from fsslib.errors import EpisodeShapeError, unknown

LAYER_NORM_EPS = 1e-6  # the official norm_cfg=dict(type="LN", eps=1e-6)
MATCH_TEMPERATURE = 0.1  # the official scaled_dotproduct(tmp=0.1)
TEACHER_BACKGROUND = -1e9  # the ground-truth teacher's score outside the object
INITS = ("official", "init_weights")


@dataclass(frozen=True)
class TransformerSize:
    """The transformer's sizes, one entry per level in ``heads``, ``sr_ratios``, ``patch_sizes``, ``strides``."""

    embed_dims: int = 64
    heads: tuple[int, ...] = (2, 4, 8)
    sr_ratios: tuple[int, ...] = (4, 2, 1)
    patch_sizes: tuple[int, ...] = (1, 3, 3)
    strides: tuple[int, ...] = (1, 2, 2)
    match_heads: int = 2
    mlp_ratio: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        levels = {len(self.heads), len(self.sr_ratios), len(self.patch_sizes), len(self.strides)}
        if len(levels) != 1:
            raise EpisodeShapeError(f"The transformer's per-level sizes differ in length: heads {self.heads}, "
                                    f"sr_ratios {self.sr_ratios}, patch_sizes {self.patch_sizes}, strides {self.strides}.",
                                    "give each one entry per level (the paper: 3 levels).")
        bad = [h for h in (*self.heads, self.match_heads) if self.embed_dims % h]
        if bad:
            raise EpisodeShapeError(f"embed_dims {self.embed_dims} is not divisible by {bad[0]} heads.",
                                    "choose head counts that divide embed_dims.")

    @property
    def levels(self) -> int:
        return len(self.heads)


PAPER_SIZE = TransformerSize()  # the official MixVisionTransformer defaults


def tokens_to_maps(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h*w, C) tokens -> (N, C, h, w) maps (mmseg ``nlc_to_nchw``)."""
    return tokens.transpose(1, 2).unflatten(2, size)


def maps_to_tokens(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) maps -> (N, h*w, C) tokens (mmseg ``nchw_to_nlc``)."""
    return maps.flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """SegFormer's Mix-FFN: 1x1 conv, depthwise 3x3 conv (its positional cue), GELU, dropout, 1x1 conv, dropout.
    Returns the update (the caller adds the residual)."""

    def __init__(self, dims: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.expand = nn.Conv2d(dims, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.reduce = nn.Conv2d(hidden, dims, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        maps = self.depthwise(self.expand(tokens_to_maps(tokens, size)))  # (N, hidden, h, w)
        maps = self.dropout(self.reduce(self.dropout(F.gelu(maps))))  # (N, C, h, w)
        return maps_to_tokens(maps)


class MaskedAttention(nn.Module):
    """HDMNet's multi-head attention (``MaskMultiHeadAttention``; its linears have no bias).

    Self-attention (``cross=False``): softmax over the keys of q.k / (sqrt(d) + 1e-9). Cross-attention
    (``cross=True``, the correlation mechanism): q and k L2-normalised, scores / :data:`MATCH_TEMPERATURE`,
    softmax over the QUERY positions (dim -2), attention to support positions outside ``key_mask`` set to 0
    after the softmax; it also returns the correlation map: each query position's mean score over the
    positions inside ``key_mask``, averaged over the heads.

    ``fused`` (off by default; :func:`fsslib.speed.fused_attention` sets it) runs the self-attention through
    ``F.scaled_dot_product_attention`` with scale 1 / (sqrt(d) + 1e-9): the same arithmetic, without the (M, L)
    score matrix in memory. The cross-attention stays written out: its softmax runs over the queries, its mask
    zeroes weights after the softmax and its correlation map reads the scores, none of which that kernel offers.
    """

    fused: bool = False  # self-attention through F.scaled_dot_product_attention (fsslib.speed.fused_attention)

    def __init__(self, dims: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_query = nn.Linear(dims, dims, bias=False)
        self.to_key = nn.Linear(dims, dims, bias=False)
        self.to_value = nn.Linear(dims, dims, bias=False)
        self.to_output = nn.Linear(dims, dims, bias=False)

    def split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L, C) -> (N, heads, L, C / heads)."""
        return tokens.unflatten(2, (self.heads, -1)).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None = None,
                cross: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """queries (N, M, C), keys (N, L, C), key_mask (N, L) in {0, 1} (cross-attention only) ->
        (output (N, M, C), correlation (N, M) or None)."""
        q = self.split_heads(self.to_query(queries))  # (N, H, M, d)
        k = self.split_heads(self.to_key(keys))  # (N, H, L, d)
        v = self.split_heads(self.to_value(keys))  # (N, H, L, d)
        correlation = None
        if cross:
            scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2) / MATCH_TEMPERATURE  # (N, H, M, L)
            inside = key_mask[:, None, None, :]  # (N, 1, 1, L)
            attention = scores.softmax(dim=-2).masked_fill(inside == 0, 0)  # over the query positions
            correlation = ((scores * inside).sum(-1) / (inside.sum(-1) + 1e-9)).mean(1)  # (N, M)
        elif self.fused:  # the same softmax(q.k / (sqrt(d) + 1e-9)) v in one kernel (flash / memory-efficient on CUDA)
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0 / (math.sqrt(q.shape[-1]) + 1e-9))  # (N, H, M, d)
            return self.to_output(out.transpose(1, 2).flatten(2)), None
        else:
            scores = q @ k.transpose(-1, -2) / (math.sqrt(q.shape[-1]) + 1e-9)  # (N, H, M, L)
            attention = scores.softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).flatten(2)  # (N, M, C)
        return self.to_output(out), correlation


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attention(LN(x)) then x + MixFFN(LN(x)).

    Self-attention with spatial reduction (keys and values through a ``sr_ratio`` strided conv + LayerNorm when
    ``sr_ratio > 1``), or cross-attention to ``source`` (the same LayerNorm on both sides, as the official).
    """

    def __init__(self, dims: int, heads: int, sr_ratio: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dims, eps=LAYER_NORM_EPS)
        self.attention = MaskedAttention(dims, heads)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.reduce = nn.Conv2d(dims, dims, sr_ratio, stride=sr_ratio)
            self.reduce_norm = nn.LayerNorm(dims, eps=LAYER_NORM_EPS)
        self.attention_dropout = nn.Dropout(dropout)  # mmcv MultiheadAttention's proj_drop
        self.norm2 = nn.LayerNorm(dims, eps=LAYER_NORM_EPS)
        self.ffn = MixFFN(dims, mlp_ratio * dims, dropout)

    def forward(self, tokens: torch.Tensor, size: tuple[int, int], source: torch.Tensor | None = None,
                source_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens (N, h*w, C); source (N, L, C) and source_mask (N, L): cross-attention ->
        (tokens (N, h*w, C), correlation (N, h*w) or None)."""
        queries = self.norm1(tokens)
        keys = queries if source is None else self.norm1(source)
        if self.sr_ratio > 1:
            keys = self.reduce_norm(maps_to_tokens(self.reduce(tokens_to_maps(keys, size))))  # (N, h*w/sr^2, C)
        out, correlation = self.attention(queries, keys, source_mask, cross=source is not None)
        tokens = tokens + self.attention_dropout(out)
        return tokens + self.ffn(self.norm2(tokens), size), correlation


class DownStage(nn.Module):
    """One level of hierarchical dense features: patch embedding (conv + LayerNorm), two self-attention layers,
    LayerNorm."""

    def __init__(self, dims: int, patch_size: int, stride: int, heads: int, sr_ratio: int, mlp_ratio: int,
                 dropout: float) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(dims, dims, patch_size, stride=stride, padding=stride // 2)
        self.patch_norm = nn.LayerNorm(dims, eps=LAYER_NORM_EPS)
        self.layers = nn.ModuleList(EncoderLayer(dims, heads, sr_ratio, mlp_ratio, dropout) for _ in range(2))
        self.norm = nn.LayerNorm(dims, eps=LAYER_NORM_EPS)

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(N, C, H, W) -> (tokens (N, h*w, C), (h, w))."""
        maps = self.patch_embed(maps)  # (N, C, h, w)
        size = (maps.shape[-2], maps.shape[-1])
        tokens = self.patch_norm(maps_to_tokens(maps))
        for layer in self.layers:
            tokens = layer(tokens, size)[0]
        return self.norm(tokens), size


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """mmcv ``ConvModule(k=3, padding=1, norm)``: conv without bias, BatchNorm, ReLU; built as mmcv builds it
    (conv He-normal, fan_out, ReLU gain; norm 1 / 0)."""
    block = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                          nn.ReLU(inplace=True))
    nn.init.kaiming_normal_(block[0].weight, mode="fan_out", nonlinearity="relu")
    return block


class MatchStage(nn.Module):
    """Matching at one level: query tokens cross-attend the supports' foreground tokens; the output and the
    guide channels pass a 3x3 conv + BatchNorm + ReLU."""

    def __init__(self, dims: int, heads: int, guide_channels: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.matcher = EncoderLayer(dims, heads, 1, mlp_ratio, dropout)
        self.fuse = conv_bn_relu(dims + guide_channels, dims)

    def forward(self, query: torch.Tensor, size: tuple[int, int], support: torch.Tensor, support_mask: torch.Tensor,
                guide: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, h*w, C), support (B, K*l, C), support_mask (B, K*l), guide (B, G, h, w) ->
        (maps (B, C, h, w), correlation (B, h, w))."""
        tokens, correlation = self.matcher(query, size, source=support, source_mask=support_mask)
        maps = self.fuse(torch.cat([tokens_to_maps(tokens, size), guide], dim=1))  # (B, C, h, w)
        return maps, correlation.unflatten(1, size)


def parse_block(dims: int, classes: int | None = None) -> nn.Sequential:
    """The official parse layer (1x1 to 4C, BN, 3x3, BN, 1x1 to C, BN, ReLU) or, given ``classes``, the
    classifier (the same without the last BN and ReLU, to ``classes``). No ReLU between the convs, as the
    official."""
    wide = 4 * dims
    layers = [nn.Conv2d(dims, wide, 1), nn.BatchNorm2d(wide), nn.Conv2d(wide, wide, 3, padding=1), nn.BatchNorm2d(wide)]
    if classes is not None:
        return nn.Sequential(*layers, nn.Conv2d(wide, classes, 1))
    return nn.Sequential(*layers, nn.Conv2d(wide, dims, 1), nn.BatchNorm2d(dims), nn.ReLU())


class HierarchicalTransformer(nn.Module):
    """HDMNet's transformer (the official ``MixVisionTransformer``): hierarchical dense features of query and
    supports, masked matching at each level coarse to fine, parsing, and a 2-class classifier.

    ``forward(query, support, support_masks, guide)``: query (B, C, h, w) and support (B*K, C, h, w) features
    with C = ``size.embed_dims``, the supports' masks (B*K, H, W) in {0, 1, 255} at any size (resized nearest to
    each level), guide (B, ``guide_channels``, h, w) (resized bilinear, aligned corners, to each level) ->
    (logits (B, 2, h', w') at the finest level's size, correlations [(B, h_i, w_i)] coarse to fine).
    """

    def __init__(self, size: TransformerSize = PAPER_SIZE, guide_channels: int = 2, init: str = "official",
                 fixed_batchnorm: bool = True) -> None:
        super().__init__()
        if init not in INITS:
            raise unknown("transformer init", init, INITS)
        dims = size.embed_dims
        self.size = size
        self.fixed_batchnorm = fixed_batchnorm
        self.down_stages = nn.ModuleList(
            DownStage(dims, patch, stride, heads, sr, size.mlp_ratio, size.dropout)
            for patch, stride, heads, sr in zip(size.patch_sizes, size.strides, size.heads, size.sr_ratios))
        self.match_stages = nn.ModuleList(MatchStage(dims, size.match_heads, guide_channels, size.mlp_ratio, size.dropout)
                                          for _ in range(size.levels))
        self.parse_layers = nn.ModuleList(parse_block(dims) for _ in range(size.levels))
        self.classifier = parse_block(dims, classes=2)
        if init == "init_weights":
            self.apply(init_weights)

    def train(self, mode: bool = True) -> "HierarchicalTransformer":
        """Train mode, BatchNorm kept in eval mode when ``fixed_batchnorm`` (the official ``fix_bn``)."""
        super().train(mode)
        if self.fixed_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self

    def forward(self, query: torch.Tensor, support: torch.Tensor, support_masks: torch.Tensor,
                guide: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch_size = query.shape[0]
        shots = support.shape[0] // batch_size
        if support.shape[0] != batch_size * shots or support.shape[1:] != query.shape[1:]:
            raise EpisodeShapeError(f"Support features {tuple(support.shape)} do not fit query features "
                                    f"{tuple(query.shape)}: expected (B*K, C, h, w) with the query's C, h, w.",
                                    "pass the K supports of each query stacked shot-minor, at the query's size.")
        maps = torch.cat([query, support])  # (B + B*K, C, h, w): one pass through the shared stages
        levels = []
        for index, stage in enumerate(self.down_stages):
            tokens, size = stage(maps)  # (B + B*K, h*w, C)
            masks = foreground_weights(support_masks, size, mode="nearest").to(tokens.dtype)  # (B*K, 1, h, w)
            levels.append((tokens[:batch_size], size,
                           tokens[batch_size:].reshape(batch_size, -1, tokens.shape[-1]),  # (B, K*h*w, C)
                           masks.reshape(batch_size, -1),  # (B, K*h*w)
                           F.interpolate(guide, size=size, mode="bilinear", align_corners=True)))  # (B, G, h, w)
            if index < len(self.down_stages) - 1:
                maps = tokens_to_maps(tokens, size)
        parsed, correlations = None, []
        for index in reversed(range(len(levels))):
            out, correlation = self.match_stages[index](*levels[index])  # (B, C, h, w), (B, h, w)
            correlations.append(correlation)
            if parsed is None:
                parsed = self.parse_layers[index](out)
            else:
                parsed = F.interpolate(parsed, size=out.shape[-2:], mode="bilinear", align_corners=False)
                parsed = parsed + self.parse_layers[index](out + parsed)
        return self.classifier(parsed), correlations


def init_weights(module: nn.Module) -> None:
    """The official ``MixVisionTransformer.init_weights`` (never called by HDMNet's training): linears truncated
    normal (std 0.02, bias 0), LayerNorm 1 / 0, convs normal with std sqrt(2 / fan_out) (bias 0)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2, b=2)  # mmcv trunc_normal_init's bounds are absolute
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def correlation_distillation_loss(correlations: list[torch.Tensor], query_masks: torch.Tensor) -> torch.Tensor:
    """HDMNet's correlation distillation: sum over levels of KL(teacher || student) of softmaxes over positions.

    correlations: [(B, h_i, w_i)] coarse to fine (:class:`HierarchicalTransformer`'s); query_masks (B, H, W) in
    {0, 1, 255}. The first teacher is the ground truth, 1 on the object and -1e9 elsewhere (255 too); each
    later teacher is the previous (coarser) level's correlation, detached. A teacher is resized bilinearly
    (corners not aligned) to its student. The sum is divided by the number of levels (the official ``/ 3``, its
    3 levels). KL = sum_p t (log(t + 1e-12) - log(s + 1e-12)), mean over the batch.
    """
    teacher = (query_masks == 1).to(correlations[0].dtype).masked_fill(query_masks != 1, TEACHER_BACKGROUND)  # (B, H, W)
    total = correlations[0].new_zeros(())
    for student in correlations:
        if teacher.shape[-2:] != student.shape[-2:]:
            teacher = F.interpolate(teacher.unsqueeze(1), size=student.shape[-2:], mode="bilinear").squeeze(1)
        t = teacher.flatten(1).softmax(dim=1)  # (B, h*w)
        s = student.flatten(1).softmax(dim=1)
        total = total + (t * (torch.log(t + 1e-12) - torch.log(s + 1e-12))).sum(1).mean()
        teacher = student.detach()
    return total / len(correlations)
