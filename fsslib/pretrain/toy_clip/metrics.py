"""Acceptance metrics of a toy CLIP on held-out scenes (``EVAL_SEED``, disjoint from training).

* zero-shot 20-way accuracy on 1000 single-object scenes (one template, and the 85);
* MaskCLIP foreground IoU, precision and recall on 500 multi-object scenes: argmax over the
  20 class embeddings and the empty-scene prompt (also with the 85 templates, and with
  MaskCLIP's prompt denoising and key smoothing);
* the negation gap: cos("a photo of c", "a photo without c");
* PI-CLIP's VTP: GradCAM of the softmax over ("a photo of c.", "a photo without c.") at
  tau = 0.01, min-max scaled, thresholded at 0.5.

Every dense and text computation is the CLIP layer's own (``fsslib.clip``): the metrics
measure what the methods will see.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fsslib.blocks.correlation import min_max_normalise
from fsslib.clip.dense import encode_image, segment_with_text
from fsslib.clip.gradcam import gradcam, softmax_score
from fsslib.clip.loading import ClipBundle
from fsslib.clip.prompts import MASKCLIP_TEMPLATES, PICLIP_NON_TARGET_TEMPLATE, PICLIP_TARGET_TEMPLATE
from fsslib.clip.text import class_embeddings, prompt_embeddings
from fsslib.clip.toy import EMPTY_PROMPT, ZERO_SHOT_TEMPLATE
from fsslib.data.toyworld import CLASS_NAMES, render_scene
from fsslib.errors import unknown
from fsslib.pretrain.scenes import Scenes, render_scenes, to_unit_tensor

EVAL_SEED = 20_240_601  # evaluation scenes: default_rng([EVAL_SEED, set, index]), set 0 = single, 1 = multi
EVAL_SETS = {"single": 0, "multi": 1}
VTP_TEMPERATURE = 0.01  # tau of PI-CLIP's VTP softmax
# The metric's min-max epsilon. At tau = 0.01 the softmax saturates and most maps span less than
# 1e-8, so they stay empty: the epsilon is part of the metric's definition (the shipped .json use 1e-8).
VTP_MIN_MAX_EPS = 1e-8


def render_eval_set(kind: str, count: int, size: int = 64) -> Scenes:
    """Held-out scenes: 'single' (one object of class ``index % 20 + 1``) or 'multi' (1-3 random objects)."""
    if kind not in EVAL_SETS:
        raise unknown("toy CLIP evaluation set", kind, sorted(EVAL_SETS))
    single = kind == "single"
    return render_scenes(count, EVAL_SEED, EVAL_SETS[kind], size,
                         draw=(lambda rng, index: render_scene(rng, size, class_ids=[index % 20 + 1])) if single else None)


@torch.no_grad()
def zero_shot_accuracy(bundle: ClipBundle, scenes: Scenes, templates: tuple[str, ...] = (ZERO_SHOT_TEMPLATE,),
                       batch: int = 250) -> float:
    """20-way accuracy of the cosine classifier with ``templates`` on single-object scenes."""
    classes = class_embeddings(bundle, list(CLASS_NAMES), templates)  # (C, D)
    labels = torch.tensor([present[0] for present in scenes.present_classes()])  # (N,) in 1..20
    correct = 0
    for start in range(0, len(labels), batch):
        image = F.normalize(encode_image(bundle, to_unit_tensor(scenes.images[start:start + batch])), dim=-1)
        correct += int(((image @ classes.T).argmax(1) + 1 == labels[start:start + batch]).sum())
    return correct / len(labels)


def _region_iou(score_maps: torch.Tensor, scenes: Scenes, select: str) -> tuple[float, float, float, float]:
    """Accumulated IoU, precision and recall of the predicted regions, and the all-foreground IoU.

    ``score_maps`` (B, K, S, S): 'argmax' -> class c region = argmax == c - 1;
    'threshold' -> K = 20 per-class maps in [0, 1], region = map > 0.5.
    """
    inter = predicted = truths = 0
    present = scenes.present_classes()
    for b, classes in enumerate(present):
        mask = torch.from_numpy(scenes.masks[b].astype(np.int64))
        winner = score_maps[b].argmax(0) if select == "argmax" else None
        for c in classes:
            truth = mask == c
            pred = winner == c - 1 if select == "argmax" else score_maps[b, c - 1] > 0.5
            inter += int((pred & truth).sum())
            predicted += int(pred.sum())
            truths += int(truth.sum())
    reference = truths / (sum(len(classes) for classes in present) * scenes.masks[0].size)
    union = predicted + truths - inter
    return inter / max(union, 1), inter / max(predicted, 1), inter / max(truths, 1), reference


@torch.no_grad()
def maskclip_iou(bundle: ClipBundle, scenes: Scenes, templates: tuple[str, ...] = (ZERO_SHOT_TEMPLATE,),
                 refine: bool = False, batch: int = 100) -> tuple[float, float, float, float]:
    """MaskCLIP foreground IoU (argmax over 20 classes + empty-scene prompt), its precision and
    recall, and the all-foreground IoU.

    ``refine``: MaskCLIP's prompt denoising (0.5) and key smoothing (1.0), at the model's own temperature.
    """
    prompts = torch.cat([class_embeddings(bundle, list(CLASS_NAMES), templates),
                         prompt_embeddings(bundle, [EMPTY_PROMPT])])  # (C + 1, D)
    size = scenes.masks.shape[-1]
    maps = []
    for start in range(0, len(scenes.images), batch):
        scores = segment_with_text(bundle, to_unit_tensor(scenes.images[start:start + batch]), prompts,
                                   prompt_denoising=0.5 if refine else None, key_smoothing=1.0 if refine else None,
                                   temperature=bundle.logit_temperature)  # (B, C + 1, h, w)
        maps.append(F.interpolate(scores, size=(size, size), mode="bilinear", align_corners=False))
    return _region_iou(torch.cat(maps), scenes, "argmax")


def vtp_gradcam_iou(bundle: ClipBundle, scenes: Scenes, tau: float = VTP_TEMPERATURE,
                    batch: int = 50) -> tuple[float, float, float, float]:
    """PI-CLIP VTP GradCAM IoU, precision, recall and the all-foreground reference.

    Per class c, GradCAM (``fsslib.clip.gradcam``) of the softmax over ('a photo of {c}.',
    'a photo without {c}.') / tau of the image token's cosines, on the last block's patch
    tokens (ViT) or layer4 (ResNet: the attention-pooled embedding); upsampled, min-max
    scaled (eps ``VTP_MIN_MAX_EPS``), > 0.5.
    """
    of = prompt_embeddings(bundle, [PICLIP_TARGET_TEMPLATE.format(n) for n in CLASS_NAMES])  # (C, D)
    without = prompt_embeddings(bundle, [PICLIP_NON_TARGET_TEMPLATE.format(n) for n in CLASS_NAMES])  # (C, D)
    size = scenes.masks.shape[-1]
    cams = []
    for start in range(0, len(scenes.images), batch):
        pixels = to_unit_tensor(scenes.images[start:start + batch])
        cam = torch.stack([gradcam(bundle, pixels, softmax_score(bundle, torch.stack([of[c], without[c]]), 0, tau))
                           for c in range(len(CLASS_NAMES))], 1)  # (B, C, h, w)
        cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)
        cams.append(min_max_normalise(cam, eps=VTP_MIN_MAX_EPS))
    return _region_iou(torch.cat(cams), scenes, "threshold")


@torch.no_grad()
def negation_cosine(bundle: ClipBundle) -> float:
    """Mean over classes of cos(emb('a photo of {c}.'), emb('a photo without {c}.'))."""
    of = prompt_embeddings(bundle, [PICLIP_TARGET_TEMPLATE.format(n) for n in CLASS_NAMES])
    without = prompt_embeddings(bundle, [PICLIP_NON_TARGET_TEMPLATE.format(n) for n in CLASS_NAMES])
    return float((of * without).sum(-1).mean())


def acceptance_metrics(bundle: ClipBundle, n_single: int = 1000, n_multi: int = 500) -> dict:
    """The toy CLIP acceptance metrics on held-out scenes (EVAL_SEED, disjoint from training)."""
    single, multi = render_eval_set("single", n_single), render_eval_set("multi", n_multi)
    iou, precision, recall, all_foreground = maskclip_iou(bundle, multi)
    return {
        "zero_shot_acc": zero_shot_accuracy(bundle, single),
        "zero_shot_acc_85_templates": zero_shot_accuracy(bundle, single, MASKCLIP_TEMPLATES),
        "maskclip_fg_iou": iou,
        "maskclip_fg_precision": precision,
        "maskclip_fg_recall": recall,
        "maskclip_fg_iou_85_templates": maskclip_iou(bundle, multi, MASKCLIP_TEMPLATES)[0],
        "maskclip_fg_iou_denoise_keysmooth": maskclip_iou(bundle, multi, refine=True)[0],
        "all_foreground_iou": all_foreground,
        "cos_of_without": negation_cosine(bundle),
        "vtp_gradcam_iou": vtp_gradcam_iou(bundle, multi)[0],
        "eval_images": {"zero_shot_single_object": n_single, "dense_multi_object": n_multi, "seed": EVAL_SEED},
    }
