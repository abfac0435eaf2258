"""CLIP-DINOiser (Wysoczańska et al., ECCV 2024) as a zero-shot text method: ``build(cfg)``, ``PRESETS``, ``VARIANTS``.

Its support-image version (Verriello 2024) is the method ``clip-dinoiser-support``
(:mod:`fsslib.methods.clip_dinoiser.support`). The parts (guided pooling, the two heads, the background rule)
are in :mod:`fsslib.methods.clip_dinoiser.model`, the segmenter in :mod:`fsslib.methods.clip_dinoiser.segmenter`;
the heads are trained by ``python -m fsslib.pretrain toy-clip-dinoiser`` (toy tier) or loaded from the
official release (``heads=PATH`` to ``checkpoints/last.pt`` of wysoczanska/clip_dinoiser).

Options: :class:`ClipDinoiserOptions` (toy: ``toy-vit``; paper: ``ViT-B-16`` with ``laion2b_s34b_b88k``, the
official code's).
"""
from __future__ import annotations

from fsslib.clip import TEMPLATE_SETS, load_clip
from fsslib.data.benchmarks import benchmark_of, class_list
from fsslib.errors import CheckpointError
from dataclasses import dataclass
from typing import Any

from fsslib.methods.base import MethodConfig
from fsslib.methods.options import ClipOptions, option
from fsslib.methods.clip_dinoiser.model import DELTA, GAMMA, load_heads
from fsslib.methods.clip_dinoiser.segmenter import PROMPTS, ClipDinoiserSegmenter

SUPPORT_ANNOTATION = "class names"  # zero-shot: no support image is read
BACKBONE = False  # no ResNet backbone: backbone_weights does not apply
PROMPT_INPUTS = {"text": ("names",), "support": ("images",), "masked_support": ("images", "masks"),
                 "text_support": ("images", "names")}  # what each prompts setting reads of the supports
BACKGROUND_NAMES = {"toy": ("empty scene",), "pascal": ("background",), "coco": ("background",)}


@dataclass(frozen=True)
class ClipDinoiserOptions(ClipOptions):
    method = "clip-dinoiser"
    heads: str | None = option(None, "the trained heads: None (the shipped toy heads) or a path (the official "
                               "checkpoints/last.pt for ViT-B-16)")
    prompts: str = option("text", "what the class embeddings come from: text (class names), support (whole support "
                          "images), masked_support (support images blanked outside the mask), text_support (both)",
                          PROMPTS)
    gamma: float | None = option(GAMMA, "correlations below gamma do not pool (None or 0: no threshold, as the official "
                                 "`if self.gamma:`)", at_least=-1, at_most=1)
    delta: float = option(DELTA, "a pixel whose top class probability is below delta is uncertain", above=0,
                          at_most=1)
    pooling: bool = option(True, "the guided pooling (off: the ablation)")
    background_head: bool = option(True, "the background head (off: the ablation)")
    background_names: tuple[str, ...] | None = option(None, "None: 'empty scene' on the toy world, 'background' on "
                                                      "PASCAL and COCO")
    adapter: bool = option(False, "False: training-free; True: the trained residual 1x1 adapter")
    window: int | None = option(None, "sliding-window size (None: the query in one window; paper: 448)",
                               at_least=1)
    stride: int | None = option(None, "sliding-window stride (paper: 224)", at_least=1)
    templates: str = option("imagenet", "prompt templates: imagenet (CLIP's 80, the official code's) or single",
                            tuple(TEMPLATE_SETS))


OPTIONS = ClipDinoiserOptions
PRESETS = {
    "toy": dict(options={"clip": "toy-vit", "clip_pretrained": None}),
    # the official evaluation: open_clip ViT-B/16 (LAION-2B), the query's short side to 448, sliding windows of 448,
    # stride 224 (the toy tier reads its 64 x 64 queries in one window)
    "paper": dict(image_size=448, resize="short_side",
                  options={"clip": "ViT-B-16", "clip_pretrained": "laion2b_s34b_b88k", "window": 448, "stride": 224}),
}
VARIANTS = {
    "no_pooling": {"pooling": False},  # MaskCLIP features with the background rule only
    "no_background_head": {"background_head": False},  # guided pooling only
}

__all__ = ["ClipDinoiserOptions", "OPTIONS", "PRESETS", "PROMPTS", "SUPPORT_ANNOTATION", "VARIANTS", "ClipDinoiserSegmenter",
           "build", "build_segmenter", "support_inputs_of"]


def support_inputs_of(options: dict[str, Any]) -> tuple[str, ...]:
    """What the supports bring to the method under ``options`` (:func:`fsslib.methods.support_inputs`): its prompts'."""
    return PROMPT_INPUTS[options["prompts"]]


def build(cfg: MethodConfig) -> ClipDinoiserSegmenter:
    return build_segmenter(cfg, ClipDinoiserOptions)


def build_segmenter(cfg: MethodConfig, kind: type[ClipDinoiserOptions]) -> ClipDinoiserSegmenter:
    """The segmenter of ``cfg`` with the options ``kind`` (the text or the support-image method's)."""
    options = kind.parse(cfg.options)
    benchmark = benchmark_of(cfg)
    background = options.background_names
    background = BACKGROUND_NAMES.get(benchmark.name, ("background",)) if background is None else background
    bundle = load_clip(options.clip, options.clip_pretrained, options.clip_checkpoint)
    heads, feature_block, trained_on = load_heads(options.heads)
    width = bundle.visual.transformer.width if bundle.kind == "vit" else None
    if heads.correlation.proj.in_channels != width or trained_on not in (None, options.clip):
        raise CheckpointError(
            f"The CLIP-DINOiser heads ({options.heads or 'the shipped toy heads'}: {heads.correlation.proj.in_channels} "
            f"input channels, trained on {trained_on or 'an unrecorded CLIP'}) do not fit {options.clip} "
            f"({width} channels).",
            "pass heads trained on this CLIP: --options heads=PATH (the official checkpoints/last.pt for ViT-B-16).")
    return ClipDinoiserSegmenter(
        bundle, heads, feature_block, prompts=options.prompts,
        class_names=class_list(benchmark, cfg.extra_classes),
        background_names=list(background), templates=TEMPLATE_SETS[options.templates], gamma=options.gamma,
        delta=options.delta, pooling=options.pooling, background_head=options.background_head, adapter=options.adapter,
        window=options.window, stride=options.stride)
