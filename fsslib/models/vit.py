"""Vision transformers outside CLIP: DINO's ViT (paper tier) and the toy DINO (toy tier), and what they read out.

Architecture and loading only; :mod:`fsslib.pretrain.toy_dino` trains the toy weights.

The module names follow facebookresearch/dino ``vision_transformer.py`` (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
``norm``), so DINO's released backbone files (``dino_vitbase16_pretrain.pth``,
``dino_deitsmall8_300ep_pretrain.pth``) load with ``strict=True``. The toy DINO replaces the patch
projection by the toy CLIP's stride-8 conv stem (:class:`ConvStem`), as the toy CLIP does.

What CLIP-DINOiser and FOUND read from a DINO (:func:`last_block_taps`): the last block's
queries, keys and values of ``norm1(x)`` (heads concatenated, class token dropped) and the
class token's attention to the patches, per head.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsslib.errors import CheckpointError, unknown
from fsslib.models.files import read_weights
from fsslib.paths import CHECKPOINT_DIR, shown_path, weights_root

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOY_MEAN, TOY_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # as the toy CLIP
TOY_DINO_CHECKPOINT = CHECKPOINT_DIR / "toy_dino.pt"
TOY_DINO_RETRAIN = "python -m fsslib.pretrain toy-dino --threads 1 --out"


@dataclass(frozen=True)
class VitConfig:
    """A ViT's shape; ``stem`` is ``"patch"`` (a patch_size x patch_size conv, DINO) or ``"conv"`` (toy)."""

    image_size: int
    patch_size: int
    width: int
    depth: int
    heads: int
    stem: str = "patch"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


PAPER_DINO = {  # facebookresearch/dino hubconf: (file, config)
    "dino_vitb16": ("dino_vitbase16_pretrain.pth", VitConfig(224, 16, 768, 12, 12)),  # CLIP-DINOiser's teacher
    "dino_vits8": ("dino_deitsmall8_300ep_pretrain.pth", VitConfig(224, 8, 384, 12, 6)),  # FOUND's backbone
}
DINO_URL = "https://dl.fbaipublicfiles.com/dino/{name}/{name}.pth"
TOY_DINO = VitConfig(64, 8, 64, 4, 4, stem="conv", mean=TOY_MEAN, std=TOY_STD)


class ConvStem(nn.Sequential):
    """Stride-8 conv stem: an optional stride-1 3x3 conv (``lead_channels`` > 0), three
    stride-2 3x3 conv + BN + GELU layers, then a 1x1 conv to ``width``."""

    def __init__(self, width: int, channels: tuple[int, ...] = (16, 32, 64), lead_channels: int = 16) -> None:
        layers: list[nn.Module] = [nn.Conv2d(3, lead_channels, 3, padding=1)] if lead_channels else []
        in_channels = lead_channels or 3
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.GELU()]
            in_channels = out_channels
        layers.append(nn.Conv2d(in_channels, width, 1))
        super().__init__(*layers)


def resize_positional_embedding(
    positional_embedding: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> Tensor:
    """Resize a (1 + h0*w0, C) positional embedding to a (1 + h*w, C) one.

    The class-token row is kept; the grid rows are resized bicubically (antialiased, as
    open_clip does when it loads weights at a new size) to exactly the new grid (DINO's own
    interpolation passes a scale factor nudged by 0.1, which lands on the same grid size with
    slightly different weights). Identity when the grids match.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return positional_embedding
    class_row, grid_rows = positional_embedding[:1], positional_embedding[1:]  # (1, C), (h0*w0, C)
    channels = grid_rows.shape[-1]
    grid = grid_rows.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)  # (1, C, h0, w0)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", antialias=True, align_corners=False)
    grid_rows = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], channels)  # (h*w, C)
    return torch.cat([class_row, grid_rows.to(positional_embedding.dtype)], dim=0)


class PatchEmbed(nn.Module):
    """Image (B, 3, H, W) -> patch tokens (B, C, H/p, W/p): a stride-p conv (DINO) or the toy conv stem."""

    def __init__(self, config: VitConfig) -> None:
        super().__init__()
        if config.stem == "patch":
            self.proj: nn.Module = nn.Conv2d(3, config.width, config.patch_size, stride=config.patch_size)
        elif config.stem == "conv":
            if config.patch_size != 8:
                raise CheckpointError(f"The toy conv stem has stride 8, not patch_size {config.patch_size}.",
                                      "use patch_size 8 with stem='conv'.")
            self.proj = ConvStem(config.width)
        else:
            raise unknown("ViT stem", config.stem, ["patch", "conv"])

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images)


class Attention(nn.Module):
    """Multi-head self-attention with one ``qkv`` projection (DINO's)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values (B, heads, T, C/heads) of tokens x (B, T, C)."""
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1))  # (B, T, 3, heads, C/heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.split(x)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, C/heads)
        return self.proj(out.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); MLP ratio 4, GELU."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(width, 4 * width))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """DINO's ViT: ``forward(images in [0, 1]) -> (B, C)`` normalised class token; any size divisible by the patch."""

    def __init__(self, config: VitConfig) -> None:
        super().__init__()
        self.config = config
        self.grid_size = (config.image_size // config.patch_size,) * 2
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], config.width))
        self.blocks = nn.ModuleList(Block(config.width, config.heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.blocks.modules():  # DINO's _init_weights (LayerNorms keep torch's 1 / 0)
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Tokens (B, 1+N, C) entering the first block (class token first, resized positions), and the grid."""
        patches = self.patch_embed((images - self.mean) / self.std)  # (B, C, h, w)
        grid = (patches.shape[-2], patches.shape[-1])
        tokens = patches.flatten(2).transpose(1, 2)  # (B, N, C)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)  # (B, 1+N, C)
        return tokens + resize_positional_embedding(self.pos_embed[0], self.grid_size, grid), grid

    def forward(self, images: Tensor) -> Tensor:
        x, _ = self.embed(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]  # (B, C)


@dataclass
class LastBlockTaps:
    """What :func:`last_block_taps` reads from the last block (patch tokens row-major, class token dropped)."""

    queries: Tensor  # (B, N, C), heads concatenated
    keys: Tensor  # (B, N, C)
    values: Tensor  # (B, N, C)
    cls_attention: Tensor  # (B, heads, N): softmax attention of the class token to each patch
    grid: tuple[int, int]

    def as_map(self, tokens: Tensor) -> Tensor:
        """(B, N, C) tokens -> (B, C, h, w)."""
        return tokens.transpose(1, 2).reshape(len(tokens), -1, *self.grid)


def last_block_taps(model: VisionTransformer, images: Tensor) -> LastBlockTaps:
    """The last block's q, k, v of ``norm1(x)`` and its class-token attention, for images (B, 3, H, W) in [0, 1]."""
    x, grid = model.embed(images)  # (B, 1+N, C)
    for block in model.blocks[:-1]:
        x = block(x)
    last = model.blocks[-1]
    q, k, v = last.attn.split(last.norm1(x))  # (B, heads, 1+N, C/heads)
    scale = q.shape[-1] ** -0.5
    cls_attention = torch.softmax((q[:, :, :1] * scale) @ k.transpose(-2, -1), dim=-1)[:, :, 0, 1:]  # (B, heads, N)

    def patches(t: Tensor) -> Tensor:
        return t[:, :, 1:].transpose(1, 2).flatten(2)  # (B, N, C)

    return LastBlockTaps(patches(q), patches(k), patches(v), cls_attention, grid)


def load_dino(name: str = "toy-dino", checkpoint: str | Path | None = None) -> VisionTransformer:
    """A DINO ViT in eval mode.

    ``"toy-dino"``: the shipped toy weights, or ``checkpoint``. Paper models (``"dino_vitb16"``,
    ``"dino_vits8"``): DINO's released backbone file from ``checkpoint`` or ``$FSSLIB_WEIGHTS``.
    ``checkpoint="random"`` gives an untrained model of the same shape (shape checks only).
    """
    if name == "toy-dino":
        config, path = TOY_DINO, Path(checkpoint or TOY_DINO_CHECKPOINT)
        fix = f"re-create it with `{TOY_DINO_RETRAIN} {path}`, or pass checkpoint='random' for an untrained toy DINO."
    elif name in PAPER_DINO:
        file, config = PAPER_DINO[name]
        path = Path(checkpoint or weights_root() / file)
        fix = (f"download {DINO_URL.format(name=file.removesuffix('.pth'))} once on a connected machine into "
               f"{shown_path(weights_root())} (or pass its path).")
    else:
        raise unknown("DINO model", name, ["toy-dino", *PAPER_DINO])
    model = VisionTransformer(config)
    if checkpoint == "random":
        return model.eval()
    payload = read_weights(path, f"{name} weights", fix)
    state = payload.get("backbone", payload) if isinstance(payload, dict) else {}
    state = {key.removeprefix("module.").removeprefix("backbone."): value.float() if value.is_floating_point() else value
             for key, value in state.items() if isinstance(value, Tensor) and not key.startswith(("head.", "module.head."))}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit the {name} architecture: {str(error)[:300]}", fix)
    return model.eval()
