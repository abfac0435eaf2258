"""MaskCLIP zero-shot segmentation as a 1-way method: the class name is the only support.

Paper: Zhou, Loy and Dai, "Extract Free Dense Labels from CLIP", ECCV 2022 (its text is not in this repository,
so the map below names the parts rather than equation numbers). Official code: chongzhou96/MaskCLIP,
``mmseg/models/decode_heads/maskclip_head.py`` (``MaskClipHead``).

Map of its parts to fsslib (all in :mod:`fsslib.clip.dense`, shared with LFSS, PI-CLIP and CLIP-DINOiser):

* dense features from CLIP's value path (the head's ``v_proj`` and ``c_proj`` at every position):
  :func:`~fsslib.clip.dense.maskclip_features`;
* class scores, the cosine of each position's feature with each class's prompt-ensembled text embedding:
  :func:`~fsslib.clip.dense.cosine_logits`, :func:`~fsslib.clip.class_embeddings`;
* prompt denoising (``pd_thresh``): :func:`~fsslib.clip.dense.denoise_prompts`;
* key smoothing (``ks_thresh``): :func:`~fsslib.clip.dense.smooth_with_keys` (``normalize_over="positions"`` is
  the released code's normalisation, tested in tests/test_clip_layer.py);
* all together: :func:`~fsslib.clip.segment_with_text`.

As a few-shot method: the query's dense features are compared with the text embeddings of *every* class of the
benchmark plus a background vocabulary (MaskCLIP's open-vocabulary setting; no support image is used). A pixel
is foreground when the episode's class wins the argmax over that vocabulary; the logits returned are
``[best other score, target score]``. Options: :class:`MaskClipOptions`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fsslib.clip import TEMPLATE_SETS, background_vocabulary, class_embeddings, load_clip, segment_with_text
from fsslib.data.benchmarks import benchmark_of, class_list
from fsslib.data.episodes import OneWayInputs
from fsslib.errors import unknown
from fsslib.methods.base import FewShotSegmenter, MethodConfig
from fsslib.methods.options import ClipOptions, option

SUPPORT_ANNOTATION = "class names"  # no support image: zero-shot
SUPPORT_INPUTS = ("names",)
BACKBONE = False  # no ResNet backbone: backbone_weights does not apply


@dataclass(frozen=True)
class MaskClipOptions(ClipOptions):
    method = "maskclip"
    templates: str = option("maskclip", "prompt templates: maskclip (the 85-template ensemble) or single "
                            "('a photo of a {}.')", tuple(TEMPLATE_SETS))
    key_smoothing: float | None = option(None, "MaskCLIP's key-smoothing threshold (MaskCLIP+: 1.0; None: off)",
                                         at_least=0, at_most=1)
    prompt_denoising: float | None = option(None, "MaskCLIP's prompt-denoising threshold (MaskCLIP+: 0.5; None: off)",
                                             at_least=0, at_most=1)
    background_names: tuple[str, ...] | None = option(None, "None: the benchmark's background vocabulary", inference=True)


OPTIONS = MaskClipOptions
PRESETS = {
    "toy": dict(options={"clip": "toy-vit", "clip_pretrained": None}),
    "paper": dict(options={"clip": "ViT-B-16", "clip_pretrained": "openai"}),
}


class MaskClipSegmenter(FewShotSegmenter):
    """Text-driven MaskCLIP; training-free."""

    trainable = False

    def __init__(self, clip_name: str, clip_pretrained: str | None, class_names: list[str], background_names: list[str],
                 templates: str = "maskclip", key_smoothing: float | None = None, prompt_denoising: float | None = None,
                 clip_checkpoint: str | None = None) -> None:
        super().__init__()
        if templates not in TEMPLATE_SETS:
            raise unknown("MaskCLIP template set", templates, list(TEMPLATE_SETS))
        self.bundle = load_clip(clip_name, clip_pretrained, clip_checkpoint)
        self.hold_frozen("clip", self.bundle.model)
        self.class_names = list(class_names)
        self.vocabulary = self.class_names + list(background_names)
        self.templates = TEMPLATE_SETS[templates]
        self.key_smoothing, self.prompt_denoising = key_smoothing, prompt_denoising

    def text_embeddings(self) -> torch.Tensor:
        """(V, D) ensembled embeddings of the vocabulary: all classes, then the background names."""
        return class_embeddings(self.bundle, self.vocabulary, self.templates)

    def segment(self, batch: OneWayInputs) -> torch.Tensor:
        scores = segment_with_text(self.bundle, batch.query_images, self.text_embeddings(),
                                   prompt_denoising=self.prompt_denoising, key_smoothing=self.key_smoothing,
                                   temperature=self.bundle.logit_temperature)  # (B, V, h, w)
        # upsample every class score before comparing them, as MaskCLIP does before its argmax (mmseg's resize:
        # corners not aligned, i.e. each score sits at the centre of its patch)
        scores = F.interpolate(scores, size=batch.query_images.shape[-2:], mode="bilinear", align_corners=False)
        target = batch.class_ids.to(scores.device) - 1  # (B,) index into the vocabulary
        index = target[:, None, None, None].expand(-1, 1, *scores.shape[-2:])  # (B, 1, H, W)
        target_score = scores.gather(1, index)  # (B, 1, H, W)
        others = scores.scatter(1, index, float("-inf")).amax(1, keepdim=True)  # (B, 1, H, W)
        return torch.cat([others, target_score], dim=1)  # (B, 2, H, W)


def build(cfg: MethodConfig) -> MaskClipSegmenter:
    benchmark = benchmark_of(cfg)
    options = MaskClipOptions.parse(cfg.options)
    return MaskClipSegmenter(
        clip_name=options.clip, clip_pretrained=options.clip_pretrained,
        class_names=class_list(benchmark, cfg.extra_classes),
        background_names=background_vocabulary(benchmark.name, options.background_names),
        templates=options.templates, key_smoothing=options.key_smoothing,
        prompt_denoising=options.prompt_denoising, clip_checkpoint=options.clip_checkpoint,
    )
