"""fsslib's HDMNet against Pbihao/HDMNet's own model: training-step and evaluation time as a ratio.

    python benchmarks/official_hdmnet_speed.py --official /path/to/HDMNet --precisions fp32 bf16    # CUDA, 473 x 473
    python benchmarks/official_hdmnet_speed.py --official /path/to/HDMNet --device cpu --image-size 97 --steps 2 \\
        --warmup 0 --batch-size 2 --threads 1                                                       # smoke

``--official`` is a local checkout of https://github.com/Pbihao/HDMNet (it needs ``einops``); nothing of it is
copied into fsslib. Its ``model/HDMNet.py`` is imported unmodified and built as its ``train.py`` builds it:
``OneModel(args, cls_type='Base')`` with the fields of ``config/pascal/pascal_split0_resnet50_manet.yaml``
(``zoom_factor``, which that file lacks and HDMNet never reads, is the COCO config's 8), ``get_optim`` (AdamW, lr
1e-4 for the transformer and 10 times it for the rest, weight decay 0.01), ``freeze_modules``, and every BatchNorm in
eval mode while training (its ``fix_bn``). The loss is ``train.py``'s: main + 1.0 x distillation + 1.0 x the base
learner's (no gradient: frozen).

Where mmcv and mmseg are missing (they are not fsslib's dependencies), stand-in modules compute what the pieces
that ``model/Transformer.py`` uses compute (:func:`install_mmcv_stand_ins`). The official model reads its PSPNet
base learner from ``args.pre_weight`` while it is built: a temporary file holding fsslib's random base learner
(``--method hdmnet --preset paper --options base_learner=random``) in the official names, so both models compute
from one backbone and base learner; fsslib's trained modules (reductions, merges, transformer, ensemble weights) are
copied into the official ones, so both start from the same weights. Before timing, the two evaluation outputs of
the batch are compared (fp32): their largest difference is printed. At K > 1 shots the official trainable count
includes ``kshot_rw`` (2K + 2 + 3K parameters), which requires gradients though no optimiser group holds it.

The batch is ``paper_train_step.fabricated_batch`` (1-way episodes, a centred square as every mask) with fold 0's
first base classes as its classes: training episodes hold base classes, and the official training path leaves the
episode's class out of the base map by its index (``cat_idx``), as fsslib does by its id. Timing as in
``official_speed.py``: alternated steps, the per-pair ratio's median and IQR, peak memory measured apart.
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from fsslib.blocks import base_class_index
from fsslib.config import make_config
from fsslib.methods import build_method
from fsslib.train import make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
from official_speed import (arguments, compare, official_backbone_state, official_normalise,  # noqa: E402
                            report, setting, speed_up)
from paper_train_step import fabricated_batch  # noqa: E402

CONFIG = Path("config/pascal/pascal_split0_resnet50_manet.yaml")
# fsslib's base learner head -> the official PSPNet's (model/PSPNet.py: cls = conv, BN, ReLU, Dropout2d, conv)
PSPNET_HEAD = {"ppm.stages.": "ppm.features.", "embed.": "cls.", "classify.2.": "cls.4."}
# the official HDMNet's trained modules -> fsslib's (each copied in registration order)
TRAINED = {"down_query": "down_query", "down_supp": "down_support", "query_merge": "query_merge",
           "supp_merge": "support_merge", "transformer.mix_transformer": "transformer",
           "gram_merge": "ensemble.gram_merge", "cls_merge": "ensemble.cls_merge"}


class StandInModule(nn.Module):
    """mmcv's ``BaseModule``: an ``nn.Module`` that keeps ``init_cfg`` (HDMNet never calls its ``init_weights``)."""

    def __init__(self, init_cfg: dict | None = None) -> None:
        super().__init__()
        self.init_cfg = init_cfg


class StandInMultiheadAttention(StandInModule):
    """mmcv's ``MultiheadAttention`` as HDMNet's subclass uses it: ``attn`` (registered first; the subclass replaces
    it by its masked attention), ``proj_drop`` (Dropout) and ``dropout_layer``, in mmcv's order."""

    def __init__(self, embed_dims: int, num_heads: int, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 dropout_layer: dict | None = None, init_cfg: dict | None = None, batch_first: bool = False,
                 **kwargs: object) -> None:
        super().__init__(init_cfg)
        self.attn = nn.Identity()
        self.proj_drop = nn.Dropout(proj_drop)
        self.dropout_layer = build_dropout(dropout_layer) if dropout_layer else nn.Identity()


class StandInPatchEmbed(StandInModule):
    """mmseg's ``PatchEmbed`` with an int padding: Conv2d (bias) -> (N, L, C) tokens -> the norm; returns the
    tokens and the map's (h, w)."""

    def __init__(self, in_channels: int, embed_dims: int, kernel_size: int, stride: int, padding: int,
                 norm_cfg: dict) -> None:
        super().__init__()
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size, stride, padding, bias=True)
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1]

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        maps = self.projection(maps)  # (N, C, h, w)
        return self.norm(maps.flatten(2).transpose(1, 2)), (maps.shape[2], maps.shape[3])


class StandInConvModule(nn.Module):
    """mmcv's ``ConvModule`` with a norm: conv (no bias, as mmcv's ``bias='auto'`` gives) -> norm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 norm_cfg: dict | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=norm_cfg is None)
        self.bn = build_norm_layer(norm_cfg, out_channels)[1]
        self.activate = nn.ReLU(inplace=True)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(maps)))


def build_norm_layer(cfg: dict, channels: int) -> tuple[str, nn.Module]:
    """mmcv's: LayerNorm for ``LN``, BatchNorm2d for ``BN``, torch's SyncBatchNorm for ``SyncBN`` (eps as given)."""
    norms = {"LN": ("ln", nn.LayerNorm), "BN": ("bn", nn.BatchNorm2d), "SyncBN": ("bn", nn.SyncBatchNorm)}
    name, norm = norms[cfg["type"]]
    return name, norm(channels, eps=cfg.get("eps", 1e-5))


def build_dropout(cfg: dict) -> nn.Module:
    """mmcv's DropPath; HDMNet builds it with drop_prob 0 only, which is the identity."""
    if cfg["type"] != "DropPath" or cfg["drop_prob"] != 0:
        raise SystemExit(f"the mmcv stand-ins compute DropPath(0) only, not {cfg}")
    return nn.Identity()


def resize(maps: torch.Tensor, size: tuple[int, int] | None = None, scale_factor: float | None = None,
           mode: str = "nearest", align_corners: bool | None = None, warning: bool = True) -> torch.Tensor:
    """mmseg's ``resize``: ``F.interpolate`` (its warning about odd sizes left out)."""
    return F.interpolate(maps, size, scale_factor, mode, align_corners)


def nlc_to_nchw(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """mmseg's: (N, h*w, C) tokens -> (N, C, h, w) maps."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *size)


def nchw_to_nlc(maps: torch.Tensor) -> torch.Tensor:
    """mmseg's: (N, C, h, w) maps -> (N, h*w, C) tokens."""
    return maps.flatten(2).transpose(1, 2).contiguous()


def install_mmcv_stand_ins() -> None:
    """Where mmcv is missing, the modules ``model/Transformer.py`` imports from mmcv and mmseg, as above (the init
    functions are only read by ``init_weights``, which HDMNet never calls: None)."""
    if importlib.util.find_spec("mmcv") is not None:
        return
    contents = {
        "mmcv.cnn": dict(Conv2d=nn.Conv2d, build_activation_layer=lambda cfg: getattr(nn, cfg["type"])(),
                         build_norm_layer=build_norm_layer, ConvModule=StandInConvModule),
        "mmcv.cnn.bricks.drop": dict(build_dropout=build_dropout),
        "mmcv.cnn.bricks.transformer": dict(MultiheadAttention=StandInMultiheadAttention),
        "mmcv.cnn.utils.weight_init": dict(constant_init=None, normal_init=None, trunc_normal_init=None),
        "mmcv.runner": dict(BaseModule=StandInModule, ModuleList=nn.ModuleList, Sequential=nn.Sequential),
        "mmseg.models.utils": dict(PatchEmbed=StandInPatchEmbed, nchw_to_nlc=nchw_to_nlc, nlc_to_nchw=nlc_to_nchw),
        "mmseg.ops": dict(resize=resize),
    }
    for name, attributes in contents.items():
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:depth]), types.ModuleType(".".join(parts[:depth])))
        sys.modules[name].__dict__.update(attributes)


def runnable_without_cuda() -> None:
    """On a machine without CUDA, ``torch.arange(..., device='cuda')`` (the official training path's class ids)
    makes CPU tensors."""
    if torch.cuda.is_available():
        return
    arange = torch.arange
    torch.arange = lambda *args, device=None, **kwargs: arange(*args, device="cpu" if device == "cuda" else device,
                                                               **kwargs)


def official_pspnet_state(base_learner: nn.Module) -> dict[str, torch.Tensor]:
    """fsslib's base learner in the official PSPNet's names: ``layer0`` .. ``layer4``, the same modules again as
    ``encoder.0`` .. ``encoder.4``, ``ppm.features``, ``cls`` (the embedding's conv and BN, then the classifier)."""
    state = official_backbone_state(base_learner.backbone)
    state |= {f"encoder.{key[len('layer')]}{key[len('layer0'):]}": value for key, value in state.items()}
    for key, value in base_learner.state_dict().items():
        for ours, theirs in PSPNET_HEAD.items():
            if key.startswith(ours):
                state[theirs + key[len(ours):]] = value
    return state


def official_hdmnet(checkout: Path, shots: int, base_learner: nn.Module) -> tuple[nn.Module, SimpleNamespace]:
    """The official HDMNet of ``checkout`` on ``base_learner`` and the ``args`` it was built with, its frozen
    modules frozen as ``train.py`` does."""
    if not (checkout / "model" / "HDMNet.py").is_file():
        raise SystemExit(f"{checkout} is not a checkout of Pbihao/HDMNet (no model/HDMNet.py); clone it with "
                         "git clone https://github.com/Pbihao/HDMNet and pass its folder to --official.")
    if importlib.util.find_spec("einops") is None:
        raise SystemExit("the official HDMNet imports einops: pip install einops.")
    sys.path.insert(0, str(checkout.resolve()))
    install_mmcv_stand_ins()
    runnable_without_cuda()
    config = yaml.safe_load((checkout / CONFIG).read_text())
    args = SimpleNamespace(**{key: value for section in config.values() for key, value in section.items()})
    args.shot, args.zoom_factor, args.pre_weight = shots, 8, "pspnet.pth"
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder), contextlib.redirect_stdout(None):
        Path("initmodel").mkdir()  # model/resnet.py's ImageNet weights, read (strict=False) before pre_weight replaces them
        torch.save({}, "initmodel/resnet50_v2.pth")
        torch.save({"state_dict": official_pspnet_state(base_learner)}, args.pre_weight)
        from model.HDMNet import OneModel  # noqa: PLC0415 -- the checkout is only known at run time
        model = OneModel(args, cls_type="Base")
    model.freeze_modules(model)
    return model, args


def share_trained_modules(official: nn.Module, ours: nn.Module, shots: int) -> None:
    """fsslib's trained modules' weights into the official ones, in registration order (shapes checked)."""
    pairs = TRAINED | ({"kshot_rw": "shot_weighting.transform"} if shots > 1 else {})
    for theirs, mine in pairs.items():
        target, source = official.get_submodule(theirs), ours.get_submodule(mine)
        names, values = list(target.state_dict()), list(source.state_dict().values())
        if len(names) != len(values):
            raise SystemExit(f"official {theirs} and fsslib {mine} do not correspond: {len(names)} and {len(values)} "
                             "tensors")
        target.load_state_dict(dict(zip(names, values)))


def main() -> None:
    args = arguments(__doc__, "Pbihao/HDMNet", "official_hdmnet_speed")
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = make_config(method="hdmnet", preset="paper", shots=args.shots, batch_size=args.batch_size,
                      backbone_weights="random", image_size=args.image_size, options={"base_learner": "random"})
    ours = build_method(cfg)
    official, official_args = official_hdmnet(args.official, args.shots, ours.base_learner)
    share_trained_modules(official, ours, args.shots)
    ours, official = speed_up(ours.to(device), args), official.to(device)
    ours_optimizer = make_optimizer(cfg, ours)
    official_optimizer = official.get_optim(official, official_args, LR=official_args.base_lr)
    batch = fabricated_batch(args.batch_size, args.shots, args.image_size, device)
    batch.class_ids = torch.tensor(ours.base_class_ids[: args.batch_size], device=device)[:, None]  # (B, 1)
    base_index = base_class_index(batch.class_ids[:, 0], ours.base_class_ids)  # (B,) 1-based base learner channels
    inputs = dict(x=official_normalise(batch.query_images), s_x=official_normalise(batch.support_images[:, 0]),
                  s_y=batch.support_masks[:, 0])
    base_labels = torch.where(batch.query_masks == 1, base_index[:, None, None], batch.query_masks)  # (B, H, W)
    labels = dict(y_m=batch.query_masks, y_b=base_labels,
                  cat_idx=[base_index.cpu() - 1])  # train.py's subcls: 0-based base class indices, on the CPU

    def official_loss() -> torch.Tensor:
        _, main_loss, aux_loss1, aux_loss2 = official(**inputs, **labels)
        return main_loss + official_args.aux_weight1 * aux_loss1 + official_args.aux_weight2 * aux_loss2

    ours.eval(), official.eval()
    with torch.no_grad():
        difference = (ours(batch.inputs()) - official(**inputs)[0]).abs().max().item()
    lines = [f"HDMNet, fsslib (--preset paper) against Pbihao/HDMNet, {setting(args, device)}", "",
             f"Evaluation outputs of the batch, fp32: largest |fsslib - official| = {difference:.2e}", ""]
    print("\n".join(lines), flush=True)
    lines += compare(ours, official, (ours_optimizer, official_optimizer), (lambda: ours.loss(batch), official_loss),
                     (lambda: ours(batch.inputs()), lambda: official(**inputs)), args, device, fixed_batchnorm=True)
    report("fsslib's HDMNet against the official one", args, "official_hdmnet_speed", lines)


if __name__ == "__main__":
    main()
