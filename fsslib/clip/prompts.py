"""Prompt templates of the papers: plain strings, importable by the text layer and the toy tokenizer alike.

* CLIP's 80 ImageNet templates plus MaskCLIP's five scene templates: the 85 that MaskCLIP
  and LFSS ensemble class embeddings over (``TEMPLATE_SETS``: the sets their ``templates`` option names).
* MaskCLIP's background vocabulary per benchmark (MaskCLIP and LFSS).
* PI-CLIP's VTP prompts: the target prompt t_f and the non-target prompt t_b.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

IMAGENET_TEMPLATES: tuple[str, ...] = tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)
MASKCLIP_SCENE_TEMPLATES: tuple[str, ...] = (
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)
MASKCLIP_TEMPLATES: tuple[str, ...] = IMAGENET_TEMPLATES + MASKCLIP_SCENE_TEMPLATES  # 85, LFSS / MaskCLIP
# the template sets a method's ``templates`` option names: MaskCLIP's 85, CLIP's 80 ImageNet ones (CLIP-DINOiser's),
# or one (an ablation; a fast CPU rehearsal)
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {"maskclip": MASKCLIP_TEMPLATES, "imagenet": IMAGENET_TEMPLATES,
                                             "single": ("a photo of a {}.",)}
# MaskCLIP's background vocabulary for PASCAL (none for COCO); the toy world's background is an empty scene
MASKCLIP_BACKGROUND_NAMES: dict[str, tuple[str, ...]] = {
    "toy": ("empty scene",), "pascal": ("building", "ground", "grass", "tree", "sky"), "coco": ()}


def background_vocabulary(benchmark: str, chosen: Sequence[str] | None = None, method: str = "MaskCLIP",
                          warn: bool = True) -> list[str]:
    """The background names a text-driven method (MaskCLIP, LFSS's pseudo masks) adds to the class names: ``chosen``
    (a method's ``background_names`` option), else the benchmark's (:data:`MASKCLIP_BACKGROUND_NAMES`). A benchmark
    without an entry (a dataset folder) gets none, with a warning naming ``method`` when ``warn`` (the method reads
    the vocabulary's argmax): every pixel, background included, then goes to a class name (on lesson 09's folder
    this costs MaskCLIP most of its mIoU)."""
    if chosen is not None:
        return list(chosen)
    if warn and benchmark not in MASKCLIP_BACKGROUND_NAMES:
        warnings.warn(f"Benchmark {benchmark!r} names no background, so {method}'s vocabulary is the class names alone "
                      "and every pixel, background included, goes to a class. Name it: --options "
                      "background_names=NAME,... (e.g. 'empty scene' for toy scenes; building,ground,grass,tree,sky "
                      "for photographs with --preset paper, MaskCLIP's PASCAL vocabulary).", stacklevel=3)
    return list(MASKCLIP_BACKGROUND_NAMES.get(benchmark, ()))


PICLIP_TARGET_TEMPLATE = "a photo of {}."  # PI-CLIP VTP, target prompt t_f
PICLIP_NON_TARGET_TEMPLATE = "a photo without {}."  # PI-CLIP VTP, non-target prompt t_b
