"""CLIP-DINOiser (Wysoczańska et al., ECCV 2024) as a zero-shot text method: ``build(cfg)``, ``PRESETS``, ``VARIANTS``.

Its support-image version (Verriello 2024) is the method ``clip-dinoiser-support``
(:mod:`fsslib.methods.clip_dinoiser.support`). The parts and their equations are in
:mod:`fsslib.methods.clip_dinoiser.model`, the segmenter in :mod:`fsslib.methods.clip_dinoiser.segmenter`;
the heads are trained by ``python -m fsslib.pretrain toy-clip-dinoiser`` (toy tier) or loaded from the
official release (``heads=PATH`` to ``checkpoints/last.pt`` of wysoczanska/clip_dinoiser).

Options (``cfg.options``): ``clip`` / ``clip_pretrained`` / ``clip_checkpoint`` (toy: ``toy-vit``;
paper: ``ViT-B-16`` with ``laion2b_s34b_b88k``, the official code's), ``heads`` (None = the shipped toy
heads; a path), ``prompts`` (``"text"`` here), ``gamma`` (0.2), ``delta`` (0.99), ``pooling`` and
``background_head`` (both on; off = the ablations), ``background_names`` (None: "empty scene" on the
toy world, "background" on PASCAL and COCO, the class-0 name of CLIP-DINOiser's VOC setting),
``adapter`` (False: training-free; True: the trained residual 1x1 adapter of ``segmenter``), ``window`` /
``stride`` (None: the query in one window; paper: 448 / 224 sliding windows, :mod:`fsslib.blocks.sliding`),
``templates`` (``"imagenet"``: CLIP's 80, the official code's; ``"single"``: one, 80x faster to encode on a CPU).
"""
from __future__ import annotations

from fsslib.clip import TEMPLATE_SETS, load_clip
from fsslib.data.benchmarks import get_benchmark
from fsslib.errors import CheckpointError, unknown
from fsslib.methods.base import MethodConfig, require_flags
from fsslib.methods.clip_dinoiser.model import DELTA, GAMMA, load_heads
from fsslib.methods.clip_dinoiser.segmenter import PROMPTS, ClipDinoiserSegmenter

SUPPORT_ANNOTATION = "class names"  # zero-shot: no support image is read
BACKGROUND_NAMES = {"toy": ("empty scene",), "pascal": ("background",), "coco": ("background",)}
DEFAULT_OPTIONS = {"clip": "toy-vit", "clip_pretrained": None, "clip_checkpoint": None, "heads": None,
                   "prompts": "text", "gamma": GAMMA, "delta": DELTA, "pooling": True, "background_head": True,
                   "background_names": None, "adapter": False, "window": None, "stride": None, "templates": "imagenet"}
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

__all__ = ["DEFAULT_OPTIONS", "PRESETS", "PROMPTS", "SUPPORT_ANNOTATION", "VARIANTS", "ClipDinoiserSegmenter",
           "build", "build_segmenter"]


def build(cfg: MethodConfig) -> ClipDinoiserSegmenter:
    return build_segmenter(cfg, DEFAULT_OPTIONS)


def build_segmenter(cfg: MethodConfig, defaults: dict) -> ClipDinoiserSegmenter:
    """The segmenter of ``cfg`` with the method's ``defaults`` under ``cfg.options``."""
    options = {**defaults, **cfg.options}
    require_flags(options, ("pooling", "background_head", "adapter"), cfg.method)
    if options["templates"] not in TEMPLATE_SETS:
        raise unknown(f"{cfg.method} template set", options["templates"], list(TEMPLATE_SETS))
    benchmark = get_benchmark(cfg.benchmark, cfg.coco_folds)
    background = options["background_names"]
    background = BACKGROUND_NAMES.get(benchmark.name, ("background",)) if background is None else background
    bundle = load_clip(options["clip"], options["clip_pretrained"], options["clip_checkpoint"])
    heads, feature_block, trained_on = load_heads(options["heads"])
    width = bundle.visual.transformer.width if bundle.kind == "vit" else None
    if heads.correlation.proj.in_channels != width or trained_on not in (None, options["clip"]):
        raise CheckpointError(
            f"The CLIP-DINOiser heads ({options['heads'] or 'the shipped toy heads'}: {heads.correlation.proj.in_channels} "
            f"input channels, trained on {trained_on or 'an unrecorded CLIP'}) do not fit {options['clip']} "
            f"({width} channels).",
            "pass heads trained on this CLIP: --options heads=PATH (the official checkpoints/last.pt for ViT-B-16).")
    return ClipDinoiserSegmenter(
        bundle, heads, feature_block, prompts=options["prompts"],
        class_names=[benchmark.prompt_name(c) for c in range(1, benchmark.n_classes + 1)],
        background_names=[background] if isinstance(background, str) else list(background),
        templates=TEMPLATE_SETS[options["templates"]], gamma=None if options["gamma"] is None else float(options["gamma"]), delta=float(options["delta"]),
        pooling=options["pooling"], background_head=options["background_head"], adapter=options["adapter"],
        window=None if options["window"] is None else int(options["window"]),
        stride=None if options["stride"] is None else int(options["stride"]))
